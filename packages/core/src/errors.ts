/**
 * Every failure molorec reports carries one of these codes. Servers map them to HTTP
 * statuses with {@link httpStatusForCode}; callers branch on `code`, never on the message.
 */
export type MolorecErrorCode =
  | "INVALID_REQUEST"
  | "EMPTY_HISTORY"
  | "NO_CANDIDATES"
  | "TOO_MANY_CANDIDATES"
  | "HISTORY_TOO_LONG"
  | "UNKNOWN_DOMAIN"
  | "INVALID_MIXTURE"
  | "BODY_TOO_LARGE"
  | "MALFORMED_PACK"
  | "UNSUPPORTED_PACK_VERSION"
  | "PACK_FILE_MISSING"
  | "BACKEND_UNAVAILABLE"
  | "INFERENCE_FAILED";

/** Options accepted by {@link MolorecError}. */
export interface MolorecErrorOptions {
  /** The underlying error, kept for logs. */
  cause?: unknown;
  /** Extra structured detail (field name, limits, per-backend failures...). */
  details?: Record<string, unknown>;
}

/**
 * The one error class of molorec. `message` says what was wrong and what to do about it.
 *
 * @example
 * ```ts
 * try { await rec.recommend(req); }
 * catch (e) { if (isMolorecError(e) && e.code === "UNKNOWN_DOMAIN") ... }
 * ```
 */
export class MolorecError extends Error {
  readonly code: MolorecErrorCode;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: MolorecErrorCode, message: string, options: MolorecErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "MolorecError";
    this.code = code;
    this.details = options.details;
  }

  /** A JSON-safe view for HTTP error bodies and CLI output. */
  toJSON(): { error: { code: MolorecErrorCode; message: string; details?: Record<string, unknown> } } {
    return { error: { code: this.code, message: this.message, ...(this.details ? { details: this.details } : {}) } };
  }
}

/** Type guard that also works across bundle copies of this package (checks the shape). */
export function isMolorecError(value: unknown): value is MolorecError {
  return (
    value instanceof MolorecError ||
    (typeof value === "object" &&
      value !== null &&
      (value as { name?: unknown }).name === "MolorecError" &&
      typeof (value as { code?: unknown }).code === "string")
  );
}

const CLIENT_ERRORS: ReadonlySet<MolorecErrorCode> = new Set([
  "INVALID_REQUEST",
  "EMPTY_HISTORY",
  "NO_CANDIDATES",
  "TOO_MANY_CANDIDATES",
  "HISTORY_TOO_LONG",
  "UNKNOWN_DOMAIN",
  "INVALID_MIXTURE",
]);

/** The HTTP status a server should answer with for an error code. */
export function httpStatusForCode(code: MolorecErrorCode): number {
  if (code === "BODY_TOO_LARGE") return 413;
  if (code === "UNKNOWN_DOMAIN") return 404;
  if (CLIENT_ERRORS.has(code)) return 400;
  if (code === "BACKEND_UNAVAILABLE") return 503;
  return 500;
}
