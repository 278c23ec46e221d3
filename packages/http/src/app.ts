import { httpStatusForCode, isMolorecError, type PackManifest, POLICY_NAMES, type Recommender, type RequestLimits } from "@molorec/core";
import { Hono, type Context } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { leftBodyUnread, parseJsonBody, readBodyWithLimit } from "./body.js";

/**
 * Error codes of the HTTP layer itself, beside core's `MolorecErrorCode`s. `REQUEST_TIMEOUT` and
 * `HEADERS_TOO_LARGE` are answered by servers that read the request themselves (apps/server).
 */
export type HttpErrorCode =
  | "NOT_FOUND"
  | "METHOD_NOT_ALLOWED"
  | "UNSUPPORTED_MEDIA_TYPE"
  | "REQUEST_TIMEOUT"
  | "HEADERS_TOO_LARGE"
  | "INTERNAL_ERROR";

/**
 * What the app needs of a recommender: a core `Recommender` is one, and so is a server's facade
 * that routes and queues requests before they reach one.
 */
export type AppRecommender = Pick<Recommender, "recommend" | "pack" | "backendName" | "limits">;

/** Every error answer: `{"error": {"code", "message", "details"?}}`. */
export interface ErrorBody {
  error: { code: string; message: string; details?: Record<string, unknown> };
}

/** Options of {@link createApp}. `Env` is the platform's bindings (Workers) or unused (Node). */
export interface AppOptions<Env extends object | undefined = undefined> {
  /**
   * Returns the recommender, created once and reused (e.g. runtime-worker's
   * `cachedRecommender`). Called per request; it must be cheap after the first call. `ctx` is
   * the platform's execution context where there is one (Workers), so a load can outlive the
   * request that started it.
   */
  getRecommender: (env: Env, ctx?: { waitUntil(promise: Promise<unknown>): void }) => Promise<AppRecommender>;
  /** Largest accepted request body in bytes. Default 1 MiB. */
  maxBodyBytes?: number;
  /** Extra fields for `GET /v1/health`, e.g. how many sessions this process or isolate created. */
  health?: (env: Env) => Record<string, unknown>;
  /** Receives unexpected (non-coded) errors, which clients only see as `INTERNAL_ERROR`. Default `console.error`. */
  onError?: (error: unknown) => void;
}

/** Default body limit: room for the largest valid request (100 candidates, 50 history titles). */
export const DEFAULT_MAX_BODY_BYTES = 1024 * 1024;

/** The `GET /v1/pack` answer: what a client needs to build requests for this pack. */
export interface PackSummary {
  name: string;
  formatVersion: number;
  dtype: string;
  model: PackManifest["model"];
  adapters: Record<string, { rank: number; alpha: number; targetModules: string[] }>;
  generalAdapter: string | null;
  domains: Record<string, { adapter: string; defaultLambda: number; calibratedLambda: number | null; description?: string }>;
  defaultDomain: string | null;
  limits: RequestLimits & { maxBodyBytes: number };
  mixtures: string[];
}

/** Summarises a pack for `GET /v1/pack` (no weights, no prompt internals). */
export function packSummary(manifest: PackManifest, limits: RequestLimits, maxBodyBytes: number): PackSummary {
  return {
    name: manifest.name,
    formatVersion: manifest.formatVersion,
    dtype: manifest.dtype,
    model: manifest.model,
    adapters: Object.fromEntries(
      Object.entries(manifest.adapters).map(([k, a]) => [k, { rank: a.rank, alpha: a.alpha, targetModules: a.targetModules }]),
    ),
    generalAdapter: manifest.generalAdapter,
    domains: Object.fromEntries(
      Object.entries(manifest.domains).map(([k, d]) => [
        k,
        {
          adapter: d.adapter,
          defaultLambda: d.defaultLambda,
          calibratedLambda: d.calibratedLambda ?? null,
          ...(d.description ? { description: d.description } : {}),
        },
      ]),
    ),
    defaultDomain: manifest.defaultDomain,
    limits: { ...limits, maxBodyBytes },
    mixtures: [...POLICY_NAMES, "{ lambda: 0..1 }"],
  };
}

function errorResponse(
  c: Context,
  status: number,
  code: string,
  message: string,
  details?: Record<string, unknown>,
  headers?: Record<string, string>,
): Response {
  const body: ErrorBody = { error: { code, message, ...(details ? { details } : {}) } };
  return c.json(body, status as ContentfulStatusCode, headers);
}

function executionContext(c: Context): { waitUntil(promise: Promise<unknown>): void } | undefined {
  try {
    return c.executionCtx; // throws where the platform gives none (Node, app.request without one)
  } catch {
    return undefined;
  }
}

/**
 * `application/json` or a `+json` type, parameters aside. A web page can POST `text/plain`, form
 * types or no type at all to another origin without asking it first (no CORS preflight); a JSON
 * type needs the preflight, which this API does not grant, so pages elsewhere cannot make a
 * visitor's browser spend this service's CPU.
 */
export function isJsonMediaType(contentType: string | null): boolean {
  if (contentType === null) return false;
  const essence = contentType.split(";", 1)[0]!.trim().toLowerCase();
  return essence === "application/json" || /^application\/[a-z0-9.!#$&^_-]+\+json$/.test(essence);
}

const ROUTES: Record<string, string> = { "/v1/recommend": "POST", "/v1/health": "GET, HEAD", "/v1/pack": "GET, HEAD" };

/**
 * The MoLoRec HTTP API, one definition for every platform (Workers, Node):
 * - `POST /v1/recommend`: body = core's `RecommendRequest`, answer = core's `RecommendResponse`.
 * - `GET /v1/health`: readiness (loads the model if needed), backend, pack, counters.
 * - `GET /v1/pack`: {@link PackSummary}.
 * Errors are JSON {@link ErrorBody} with the status of core's `httpStatusForCode`.
 *
 * @example
 * ```ts
 * const app = createApp({ getRecommender: cachedRecommender(open) });
 * export default { fetch: app.fetch };               // Cloudflare Workers
 * const res = await app.request("/v1/health");        // tests
 * ```
 */
export function createApp<Env extends object | undefined = undefined>(options: AppOptions<Env>): Hono<{ Bindings: Env }> {
  const maxBodyBytes = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  const onError = options.onError ?? ((e: unknown) => console.error("molorec: unexpected error", e));
  const app = new Hono<{ Bindings: Env }>();

  app.post("/v1/recommend", async (c) => {
    const bytes = await readBodyWithLimit(c.req.raw, maxBodyBytes);
    // Checked after the (bounded) read, so the connection stays usable, and before any parsing.
    const type = c.req.header("content-type") ?? null;
    if (!isJsonMediaType(type)) {
      return errorResponse(
        c,
        415,
        "UNSUPPORTED_MEDIA_TYPE",
        `POST /v1/recommend takes a JSON body: send Content-Type: application/json${type === null ? " (the request had none)" : ` (not ${JSON.stringify(type.slice(0, 100))})`}.`,
        { accept: "application/json" },
      );
    }
    const body = parseJsonBody(bytes);
    const rec = await options.getRecommender(c.env, executionContext(c));
    const t0 = Date.now();
    const res = await rec.recommend(body);
    return c.json(res, 200, { "server-timing": `recommend;dur=${Date.now() - t0}` });
  });

  app.get("/v1/health", async (c) => {
    const rec = await options.getRecommender(c.env, executionContext(c));
    return c.json({ status: "ok", pack: rec.pack.manifest.name, backend: rec.backendName, ...options.health?.(c.env) });
  });

  app.get("/v1/pack", async (c) => {
    const rec = await options.getRecommender(c.env, executionContext(c));
    return c.json(packSummary(rec.pack.manifest, rec.limits, maxBodyBytes));
  });

  for (const [path, allow] of Object.entries(ROUTES)) {
    app.all(path, (c) =>
      errorResponse(
        c,
        405,
        "METHOD_NOT_ALLOWED",
        `${c.req.method} is not allowed on ${path}; use ${allow.split(",")[0]}.`,
        { allow },
        { allow },
      ),
    );
  }

  app.notFound((c) =>
    errorResponse(
      c,
      404,
      "NOT_FOUND",
      `no route ${c.req.method} ${new URL(c.req.url).pathname}; routes are ${Object.entries(ROUTES)
        .map(([p, m]) => `${m.split(",")[0]} ${p}`)
        .join(", ")}.`,
    ),
  );

  app.onError((err, c) => {
    if (isMolorecError(err)) {
      // A coded error that says when to come back (e.g. a server's full queue) gets Retry-After.
      const retry = err.details?.retryAfterSeconds;
      const headers: Record<string, string> = {};
      if (typeof retry === "number" && Number.isFinite(retry) && retry >= 0) headers["retry-after"] = String(Math.ceil(retry));
      // Part of the body is still on the wire: this connection cannot carry another request.
      if (leftBodyUnread(err)) headers.connection = "close";
      return errorResponse(c, httpStatusForCode(err.code), err.code, err.message, err.details, headers);
    }
    onError(err);
    return errorResponse(c, 500, "INTERNAL_ERROR", "internal error; the server log has the details.");
  });

  return app;
}
