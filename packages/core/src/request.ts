import { MolorecError } from "./errors.js";
import { hasOwn, quoteName } from "./own.js";
import { PACK_BOUNDS } from "./pack-bounds.js";
import { isPolicyName, type MixturePolicy, POLICY_NAMES } from "./policies.js";

export type { MixturePolicy } from "./policies.js";

/** The body of `POST /v1/recommend`, and the input of `Recommender.recommend`. */
export interface RecommendRequest {
  /** Item titles the user interacted with, oldest first. */
  history: string[];
  /** Item titles to rank. */
  candidates: string[];
  /** A domain of the pack; defaults to the pack's default domain. */
  domain?: string;
  /** Defaults to `"calibrated"`. */
  mixture?: MixturePolicy;
  /** Return only the best k candidates (all are scored). Defaults to all. */
  topK?: number;
}

/** Limits a request is checked against. */
export interface RequestLimits {
  maxCandidates: number;
  maxHistoryItems: number;
  /** Longest title accepted, in characters. */
  maxTitleChars: number;
}

export const DEFAULT_REQUEST_LIMITS: RequestLimits = { maxCandidates: 100, maxHistoryItems: 50, maxTitleChars: 1000 };

const FIELDS = new Set(["history", "candidates", "domain", "mixture", "topK"]);

function invalid(field: string, what: string, code: "INVALID_REQUEST" | "INVALID_MIXTURE" = "INVALID_REQUEST"): never {
  throw new MolorecError(code, `${field} ${what}`, { details: { field } });
}

function titles(v: unknown, field: string, maxChars: number): string[] {
  if (!Array.isArray(v)) invalid(field, "must be an array of item titles (strings)");
  return v.map((t, i) => {
    if (typeof t !== "string") invalid(`${field}[${i}]`, `must be a string, got ${t === null ? "null" : typeof t}`);
    const s = t.trim();
    if (!s) invalid(`${field}[${i}]`, "is an empty title");
    if (s.length > maxChars) invalid(`${field}[${i}]`, `is ${s.length} characters long; the limit is ${maxChars}`);
    return s;
  });
}

/**
 * A λ written as a plain decimal (`0.7`, `1`, `.25`): what `--mixture 0.7` and `"mixture": "0.7"`
 * mean. `Number()` would also read `0x1`, `1e0`, `0b1` and padded strings as numbers.
 */
const DECIMAL = /^(?:\d+(?:\.\d*)?|\.\d+)$/;

/** Parses a mixture policy given as a name, a `{ lambda }` object, or a decimal string. */
export function parseMixture(v: unknown, field = "mixture"): MixturePolicy {
  if (typeof v === "string") {
    if (isPolicyName(v)) return v;
    if (DECIMAL.test(v)) return parseMixture({ lambda: Number(v) }, field);
    invalid(
      field,
      `${quoteName(v)} is not a mixture; use one of ${POLICY_NAMES.join(", ")}, a decimal λ such as "0.7", or { "lambda": 0..1 }`,
      "INVALID_MIXTURE",
    );
  }
  if (typeof v === "object" && v !== null && !Array.isArray(v) && Object.keys(v).length === 1 && hasOwn(v, "lambda")) {
    const lambda = (v as { lambda: unknown }).lambda;
    if (typeof lambda !== "number" || !Number.isFinite(lambda) || lambda < 0 || lambda > 1) {
      invalid(`${field}.lambda`, "must be a number in [0, 1] (the weight of the domain adapter)", "INVALID_MIXTURE");
    }
    return { lambda };
  }
  invalid(field, `must be one of ${POLICY_NAMES.join(", ")} or { "lambda": 0..1 }`, "INVALID_MIXTURE");
}

/** A validated request: every field checked, titles trimmed, the mixture defaulted. Frozen. */
export type ParsedRecommendRequest = Readonly<
  Required<Omit<RecommendRequest, "domain" | "topK">> & Pick<RecommendRequest, "domain" | "topK">
>;

/**
 * Requests {@link parseRecommendRequest} returned, with the limits they were checked against. They
 * are frozen, so passing one back (a server validates a request before queueing it; the
 * recommender meets it again) is a lookup, not a second parse.
 */
const PARSED = new WeakMap<object, RequestLimits>();

/**
 * Validates an untrusted request body (already JSON-parsed). Every field is checked; unknown
 * fields are rejected so typos do not silently fall back to defaults. A request this function
 * returned, passed again with the same `limits` object, is returned as it is.
 */
export function parseRecommendRequest(body: unknown, limits: RequestLimits = DEFAULT_REQUEST_LIMITS): ParsedRecommendRequest {
  if (typeof body !== "object" || body === null || Array.isArray(body))
    invalid("request", "must be a JSON object with history and candidates");
  if (PARSED.get(body) === limits) return body as ParsedRecommendRequest;
  const o = body as Record<string, unknown>;
  for (const k of Object.keys(o))
    if (!FIELDS.has(k)) invalid(k.length > 80 ? quoteName(k) : k, `is not a request field; fields are ${[...FIELDS].join(", ")}`);
  if (o.history === undefined) invalid("history", "is required");
  if (o.candidates === undefined) invalid("candidates", "is required");
  const history = titles(o.history, "history", limits.maxTitleChars);
  if (history.length === 0)
    throw new MolorecError("EMPTY_HISTORY", "history is empty; send at least one item title the user interacted with.", {
      details: { field: "history" },
    });
  if (history.length > limits.maxHistoryItems) {
    throw new MolorecError(
      "HISTORY_TOO_LONG",
      `history has ${history.length} items; the limit is ${limits.maxHistoryItems} (send the most recent ones).`,
      {
        details: { field: "history", limit: limits.maxHistoryItems },
      },
    );
  }
  if (!Array.isArray(o.candidates)) invalid("candidates", "must be an array of item titles (strings)");
  if (o.candidates.length === 0)
    throw new MolorecError("NO_CANDIDATES", "candidates is empty; send the item titles to rank.", { details: { field: "candidates" } });
  if (o.candidates.length > limits.maxCandidates) {
    throw new MolorecError(
      "TOO_MANY_CANDIDATES",
      `${o.candidates.length} candidates; the limit is ${limits.maxCandidates}. Pre-filter, or split into several requests.`,
      {
        details: { field: "candidates", limit: limits.maxCandidates },
      },
    );
  }
  const candidates = titles(o.candidates, "candidates", limits.maxTitleChars);
  let domain: string | undefined;
  if (o.domain !== undefined) {
    if (typeof o.domain !== "string" || !o.domain) invalid("domain", "must be a non-empty string");
    if (o.domain.length > PACK_BOUNDS.nameLength)
      invalid("domain", `is ${o.domain.length} characters long; domain names have at most ${PACK_BOUNDS.nameLength}`);
    domain = o.domain;
  }
  const mixture = o.mixture === undefined ? "calibrated" : parseMixture(o.mixture);
  let topK: number | undefined;
  if (o.topK !== undefined) {
    if (typeof o.topK !== "number" || !Number.isInteger(o.topK) || o.topK < 1) invalid("topK", "must be a positive integer");
    topK = o.topK;
  }
  Object.freeze(history);
  Object.freeze(candidates);
  if (typeof mixture === "object") Object.freeze(mixture);
  const parsed: ParsedRecommendRequest = Object.freeze({
    history,
    candidates,
    mixture,
    ...(domain === undefined ? {} : { domain }),
    ...(topK === undefined ? {} : { topK }),
  });
  PARSED.set(parsed, limits);
  return parsed;
}
