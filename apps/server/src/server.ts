import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { createAdaptorServer } from "@hono/node-server";
import { createRecommender, MolorecError, parseRecommendRequest, type RecommendResponse, type Recommender } from "@molorec/core";
import { type AppRecommender, createApp, packSummary } from "@molorec/http";
import { loadPackFromDir, nodeBackend } from "@molorec/runtime-node";
import type { Hono } from "hono";
import { RequestBatcher } from "./batcher.js";
import { answerClientErrors } from "./client-errors.js";
import { PROMETHEUS_CONTENT_TYPE, serverMetrics, type ServerMetrics } from "./metrics.js";
import { type ResolvedServerOptions, resolveServerOptions, type ServerOptions } from "./options.js";
import { createDrain, InFlightRequests } from "./shutdown.js";

export type { PackConfig, ServerOptions } from "./options.js";
export { handleSignals, type SignalOptions } from "./shutdown.js";

/** The header that picks a pack per request (the `?pack=` query parameter does the same). */
export const PACK_HEADER = "x-molorec-pack";

/** One loaded pack and its batcher. */
export interface ServedPack {
  name: string;
  dir: string;
  recommender: Recommender;
  batcher: RequestBatcher;
  /** Which execution provider runs it and the backend's name, e.g. `cpu`, `onnxruntime-node(cpu)`. */
  provider: string;
}

/** A running server. */
export interface MolorecServer {
  /** `http://host:port` it listens on. */
  readonly url: string;
  readonly port: number;
  readonly packs: readonly ServedPack[];
  readonly metrics: ServerMetrics;
  /** The Hono app (same routes as the Worker, plus `/metrics` and `/v1/packs`). */
  readonly app: Hono<{ Bindings: AppEnv }>;
  /** True once a shutdown started. */
  readonly draining: boolean;
  /** HTTP requests being handled now. */
  readonly inFlight: number;
  /**
   * Graceful shutdown: stop accepting connections, let in-flight requests (queued ones included)
   * finish, then close the models. Resolves when done; calling it again returns the same promise.
   */
  shutdown(reason?: string): Promise<void>;
}

/** Bindings the server passes to the shared app per request: the pack the client asked for. */
export interface AppEnv {
  pack: string | null;
}

const ROUTE_LABELS = new Set(["/v1/recommend", "/v1/health", "/v1/pack", "/v1/packs", "/metrics"]);

function unknownPack(name: string, packs: readonly ServedPack[]): MolorecError {
  return new MolorecError(
    "INVALID_REQUEST",
    `pack "${name}" is not loaded; this server has: ${packs.map((p) => p.name).join(", ")}. Pick one with the ${PACK_HEADER} header or ?pack=.`,
    {
      details: { field: "pack", pack: name, known: packs.map((p) => p.name) },
    },
  );
}

/**
 * The pack a request goes to: the one it names (`x-molorec-pack` header or `?pack=`), else the
 * default pack if it has the request's domain (or the request names none), else the first pack
 * that has the domain.
 */
export function routeRequest(packs: readonly ServedPack[], explicit: string | null, body: unknown): ServedPack {
  if (explicit) {
    const p = packs.find((x) => x.name === explicit);
    if (!p) throw unknownPack(explicit, packs);
    return p;
  }
  const domain = typeof body === "object" && body !== null && !Array.isArray(body) ? (body as { domain?: unknown }).domain : undefined;
  const first = packs[0]!;
  // Own properties only: a domain called "toString" is in no pack.
  const has = (p: ServedPack) => Object.hasOwn(p.recommender.pack.manifest.domains, domain as string);
  if (typeof domain !== "string" || has(first)) return first;
  const owner = packs.find(has);
  if (owner) return owner;
  if (packs.length === 1) return first; // core's own UNKNOWN_DOMAIN message
  const known = Object.fromEntries(packs.map((p) => [p.name, Object.keys(p.recommender.pack.manifest.domains)]));
  throw new MolorecError(
    "UNKNOWN_DOMAIN",
    `domain ${JSON.stringify(domain.slice(0, 80))} is in none of the loaded packs; they have: ${packs.map((p) => `${p.name} (${known[p.name]!.join(", ") || "no domains"})`).join("; ")}.`,
    {
      details: { domain, known },
    },
  );
}

/**
 * What the app serves for one pack selection (a named pack, or `null`: routed by domain): the
 * pack's summary fields, and `recommend` through the batcher of the pack a request routes to. A
 * request is validated once, here, so that bad requests never take a place in the queue; the
 * recommender finds it already parsed under the same limits.
 */
function servedRecommender(packs: readonly ServedPack[], explicit: string | null): AppRecommender {
  const base = explicit ? routeRequest(packs, explicit, null) : packs[0]!;
  return {
    pack: base.recommender.pack,
    limits: base.recommender.limits,
    get backendName() {
      return base.recommender.backendName;
    },
    async recommend(body: unknown): Promise<RecommendResponse> {
      const target = routeRequest(packs, explicit, body);
      const req = parseRecommendRequest(body, target.recommender.limits);
      const domains = target.recommender.pack.manifest.domains;
      if (req.domain !== undefined && !Object.hasOwn(domains, req.domain)) {
        throw new MolorecError(
          "UNKNOWN_DOMAIN",
          `domain ${JSON.stringify(req.domain.slice(0, 80))} is not in pack ${target.name}; it has: ${Object.keys(domains).join(", ") || "no domains"}.`,
          {
            details: { domain: req.domain, known: Object.keys(domains), pack: target.name },
          },
        );
      }
      return target.batcher.submit(req);
    },
  };
}

async function loadPacks(options: ResolvedServerOptions, metrics: ServerMetrics): Promise<ServedPack[]> {
  const { log } = options;
  const served: ServedPack[] = [];
  try {
    for (const cfg of options.packs) {
      const pack = await loadPackFromDir(cfg.dir);
      const name = cfg.name ?? pack.manifest.name;
      if (served.some((p) => p.name === name)) {
        throw new MolorecError("INVALID_REQUEST", `two packs are named "${name}"; name them apart with --pack NAME=DIR`);
      }
      const backend =
        options.backend?.(name) ??
        nodeBackend({
          executionProvider: options.executionProvider,
          ...(options.threads === undefined ? {} : { intraOpNumThreads: options.threads }),
          prepack: options.prepack,
          log: (line) => log(`${line.replace(/^molorec: /, `molorec-server: pack ${name}: `)}`),
        });
      const recommender: Recommender = await createRecommender({
        backend,
        pack,
        ...(options.limits ? { limits: options.limits } : {}),
        maxBatchRows: options.maxBatchRows,
      });
      const provider = "provider" in backend && typeof backend.provider === "function" ? String(backend.provider()) : backend.name;
      const labels = { pack: name };
      const batcher = new RequestBatcher({
        maxBatch: options.maxBatch,
        maxWaitMs: options.maxWaitMs,
        maxQueue: options.maxQueue,
        timeoutMs: options.requestTimeoutMs,
        run: (bodies) => recommender.recommendBatch(bodies),
        onBatch: (size, seconds) => {
          metrics.batchSize.observe(labels, size);
          metrics.batchDuration.observe(labels, seconds);
        },
        onQueueWait: (seconds) => metrics.queueWait.observe(labels, seconds),
        onReject: (reason) => metrics.rejected.inc({ pack: name, reason }),
      });
      served.push({ name, dir: pack.location, recommender, batcher, provider });
      const m = pack.manifest;
      log(
        `molorec-server: pack ${name} from ${pack.location}: ${m.model.architecture} ${m.model.numLayers} layers, vocab ${m.model.vocabSize}; domains ${Object.keys(m.domains).join(", ") || "(none)"} (default ${m.defaultDomain ?? "none"}); ${recommender.backendName}`,
      );
    }
  } catch (e) {
    await Promise.all(served.map((p) => p.recommender.close()));
    throw e;
  }
  if (served.length === 0) throw new MolorecError("INVALID_REQUEST", "no pack to serve: pass --pack DIR");
  return served;
}

function jsonResponse(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json", ...headers } });
}

/** `res` with `connection: close` (keep-alive clients reconnect, to another replica, after it). */
function closingConnection(res: Response): Response {
  try {
    res.headers.set("connection", "close");
    return res;
  } catch {
    // Immutable headers (a fetched response): copy them.
    const headers = new Headers(res.headers);
    headers.set("connection", "close");
    return new Response(res.body, { status: res.status, statusText: res.statusText, headers });
  }
}

/**
 * Loads the packs, opens one model session per pack and serves the MoLoRec HTTP API
 * (`@molorec/http`, the Worker's routes) on Node's HTTP stack, with cross-request batching,
 * back-pressure, `GET /metrics` and graceful shutdown. Packs are validated against their graphs
 * (core's `createRecommender`) before the server listens: a broken pack is a start-up error,
 * never a healthy server that fails every request.
 *
 * @example
 * ```ts
 * const server = await startServer({ packs: [{ dir: "packs/demo" }], port: 8080 });
 * process.on("SIGTERM", () => server.shutdown("SIGTERM").then(() => process.exit(0)));
 * ```
 */
export async function startServer(options: ServerOptions): Promise<MolorecServer> {
  const o = resolveServerOptions(options);
  const { log, host } = o;
  let packs: ServedPack[] = [];
  const metrics = serverMetrics({
    queueDepth: () => packs.map((p) => [{ pack: p.name }, p.batcher.depth]),
    batchInFlight: () => packs.map((p) => [{ pack: p.name }, p.batcher.inFlight]),
  });
  packs = await loadPacks(o, metrics);
  for (const p of packs) metrics.packInfo.set({ pack: p.name, backend: p.recommender.backendName }, 1);

  const inFlight = new InFlightRequests();
  const served = new Map<string | null, AppRecommender>([
    [null, servedRecommender(packs, null)],
    ...packs.map((p) => [p.name, servedRecommender(packs, p.name)] as const),
  ]);
  // Assigned once the server exists; handlers only read it while requests are being served.
  let drain: ReturnType<typeof createDrain> | null = null;

  const app = createApp<AppEnv>({
    getRecommender: async (env) => {
      const name = env?.pack ?? null;
      const r = served.get(name);
      if (!r) throw unknownPack(name!, packs);
      return r;
    },
    maxBodyBytes: o.maxBodyBytes,
    health: () => ({
      draining: drain?.draining ?? false,
      packs: packs.map((p) => ({
        name: p.name,
        backend: p.recommender.backendName,
        domains: Object.keys(p.recommender.pack.manifest.domains),
        defaultDomain: p.recommender.pack.manifest.defaultDomain,
        queueDepth: p.batcher.depth,
        batchInFlight: p.batcher.inFlight,
      })),
      batching: { maxBatch: o.maxBatch, maxWaitMs: o.maxWaitMs, maxQueue: o.maxQueue },
    }),
    onError: (e) => log(`molorec-server: unexpected error: ${(e as Error)?.stack ?? e}`),
  });
  app.get("/metrics", () => new Response(metrics.registry.render(), { headers: { "content-type": PROMETHEUS_CONTENT_TYPE } }));
  app.get("/v1/packs", (c) =>
    c.json({
      default: packs[0]!.name,
      header: PACK_HEADER,
      packs: packs.map((p) => ({
        ...packSummary(p.recommender.pack.manifest, p.recommender.limits, o.maxBodyBytes),
        name: p.name,
        backend: p.recommender.backendName,
      })),
    }),
  );

  async function handle(request: Request): Promise<Response> {
    const url = new URL(request.url);
    const route = ROUTE_LABELS.has(url.pathname) ? url.pathname : "other";
    const t0 = performance.now();
    const draining = () => drain?.draining ?? false;
    inFlight.enter();
    metrics.inFlight.inc();
    let res: Response;
    try {
      if (draining() && route === "/v1/health") {
        res = jsonResponse(
          503,
          { status: "draining", error: { code: "BACKEND_UNAVAILABLE", message: "the server is shutting down" } },
          { "retry-after": "1" },
        );
      } else {
        const explicit = request.headers.get(PACK_HEADER) || url.searchParams.get("pack") || null;
        res = await app.fetch(request, { pack: explicit });
      }
    } catch (e) {
      log(`molorec-server: unexpected error: ${(e as Error)?.stack ?? e}`);
      res = jsonResponse(500, { error: { code: "INTERNAL_ERROR", message: "internal error; the server log has the details." } });
    } finally {
      metrics.inFlight.dec();
    }
    try {
      if (draining()) res = closingConnection(res);
      metrics.requests.inc({ route, method: request.method, status: String(res.status) });
      metrics.latency.observe({ route }, (performance.now() - t0) / 1000);
      return res;
    } finally {
      inFlight.leave();
    }
  }

  const server = createAdaptorServer({
    fetch: (request: Request) => handle(request),
    hostname: host,
    serverOptions: {
      requestTimeout: o.requestTimeoutMs,
      headersTimeout: o.headersTimeoutMs,
      keepAliveTimeout: o.keepAliveTimeoutMs,
      // Node enforces the two timeouts on this period (30 s by default, which would let a slow
      // client hold a connection up to twice the request timeout).
      connectionsCheckingInterval: Math.min(30_000, Math.max(50, Math.floor(o.headersTimeoutMs / 4))),
    },
  }) as Server;
  server.maxConnections = o.maxConnections;
  answerClientErrors(server, o.requestTimeoutMs);
  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(o.port, host, () => {
        server.off("error", reject);
        resolve();
      });
    });
  } catch (e) {
    await Promise.all(packs.map((p) => p.recommender.close()));
    const err = e as NodeJS.ErrnoException;
    throw new MolorecError("BACKEND_UNAVAILABLE", `cannot listen on ${host}:${o.port}: ${err.code ?? ""} ${err.message}`, {
      cause: e,
    });
  }
  const port = (server.address() as AddressInfo).port;
  const url = `http://${host.includes(":") ? `[${host}]` : host}:${port}`;
  log(
    `molorec-server: listening on ${url} (packs: ${packs.map((p) => p.name).join(", ")}; max-batch ${o.maxBatch}, max-wait ${o.maxWaitMs} ms, max-queue ${o.maxQueue}, request timeout ${o.requestTimeoutMs} ms)`,
  );
  const d = createDrain({ server, packs, inFlight, graceMs: o.shutdownGraceMs, timeoutMs: o.shutdownTimeoutMs, log });
  drain = d;

  return {
    url,
    port,
    packs,
    metrics,
    app,
    get draining() {
      return d.draining;
    },
    get inFlight() {
      return inFlight.value;
    },
    shutdown: (reason?: string) => d.shutdown(reason),
  };
}
