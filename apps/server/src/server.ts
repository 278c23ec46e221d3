import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { createAdaptorServer } from "@hono/node-server";
import {
  createRecommender,
  MolorecError,
  parseRecommendRequest,
  type InferenceBackend,
  type Recommender,
  type RecommendResponse,
  type RequestLimits,
} from "@molorec/core";
import { createApp, DEFAULT_MAX_BODY_BYTES, packSummary } from "@molorec/http";
import { loadPackFromDir, nodeBackend, type NodeExecutionProvider } from "@molorec/runtime-node";
import type { Hono } from "hono";
import { RequestBatcher } from "./batcher.js";
import { PROMETHEUS_CONTENT_TYPE, serverMetrics, type ServerMetrics } from "./metrics.js";

/** The header that picks a pack per request (the `?pack=` query parameter does the same). */
export const PACK_HEADER = "x-molorec-pack";

/** A pack to serve: its directory and, optionally, the name requests use for it (default: the manifest's name). */
export interface PackConfig {
  dir: string;
  name?: string;
}

/** Options of {@link startServer}. Every field but `packs` has a default. */
export interface ServerOptions {
  /** Packs to load; the first one is the default pack. */
  packs: PackConfig[];
  /** Interface to listen on. Default `127.0.0.1`. */
  host?: string;
  /** Port; 0 picks a free one (see {@link MolorecServer.url}). Default 8080. */
  port?: number;
  /** onnxruntime-node execution provider. Default `auto` (CUDA when installed, else CPU). */
  executionProvider?: NodeExecutionProvider;
  /** CPU threads per model run (ONNX Runtime's default: all cores). */
  threads?: number;
  /** Replaces the onnxruntime-node backend (tests, other runtimes). */
  backend?: (packName: string) => InferenceBackend;
  /** Most requests per batched model pass. 1 = no batching. Default 8. */
  maxBatch?: number;
  /** How long the first request of a batch waits for more when the model is idle. Default 5 ms. */
  maxWaitMs?: number;
  /** Most requests waiting per pack; past it, 503 + Retry-After. Default 64. */
  maxQueue?: number;
  /** Rows of one candidate model run (core's `maxBatchRows`). Default 64. */
  maxBatchRows?: number;
  /** A request not answered this long after it was queued gets 503; also Node's limit for receiving a request. Default 30 000 ms. */
  requestTimeoutMs?: number;
  /** How long a shutdown waits for in-flight requests before cutting connections. Default 30 000 ms. */
  shutdownTimeoutMs?: number;
  /**
   * How long a shutdown keeps accepting connections (answered, with `connection: close`; health
   * already says 503 "draining") before it stops listening. Closing the listener resets the
   * connections still waiting in the kernel's accept queue, which clients see as lost requests.
   * Default 500 ms; 0 stops listening at once.
   */
  shutdownGraceMs?: number;
  /** Largest request body. Default 1 MiB. */
  maxBodyBytes?: number;
  /** Request limits stricter than the packs' (candidates, history items, title characters). */
  limits?: Partial<RequestLimits>;
  /** Most open TCP connections; more are refused by the kernel backlog / dropped. Default 1024. */
  maxConnections?: number;
  /** Log lines (startup, provider, shutdown). Default `console.error`. */
  log?: (line: string) => void;
}

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
  if (typeof domain !== "string" || domain in first.recommender.pack.manifest.domains) return first;
  const owner = packs.find((p) => domain in p.recommender.pack.manifest.domains);
  if (owner) return owner;
  if (packs.length === 1) return first; // core's own UNKNOWN_DOMAIN message
  const known = Object.fromEntries(packs.map((p) => [p.name, Object.keys(p.recommender.pack.manifest.domains)]));
  throw new MolorecError(
    "UNKNOWN_DOMAIN",
    `domain "${domain}" is in none of the loaded packs; they have: ${packs.map((p) => `${p.name} (${known[p.name]!.join(", ") || "no domains"})`).join("; ")}.`,
    {
      details: { domain, known },
    },
  );
}

/** Answers `recommend` through the pack's batcher, after a cheap validation that keeps bad requests off the queue. */
function batchedFacade(packs: readonly ServedPack[], explicit: string | null): Recommender {
  const base = explicit ? routeRequest(packs, explicit, null) : packs[0]!;
  return {
    ...base.recommender,
    async recommend(body: unknown): Promise<RecommendResponse> {
      const target = routeRequest(packs, explicit, body);
      const req = parseRecommendRequest(body, target.recommender.limits);
      const domains = target.recommender.pack.manifest.domains;
      if (req.domain !== undefined && !(req.domain in domains)) {
        throw new MolorecError(
          "UNKNOWN_DOMAIN",
          `domain "${req.domain}" is not in pack ${target.name}; it has: ${Object.keys(domains).join(", ") || "no domains"}.`,
          {
            details: { domain: req.domain, known: Object.keys(domains), pack: target.name },
          },
        );
      }
      return target.batcher.submit(body);
    },
  };
}

async function loadPacks(options: ServerOptions, metrics: ServerMetrics | null, log: (line: string) => void): Promise<ServedPack[]> {
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
          executionProvider: options.executionProvider ?? "auto",
          ...(options.threads === undefined ? {} : { intraOpNumThreads: options.threads }),
          log: (line) => log(`${line.replace(/^molorec: /, `molorec-server: pack ${name}: `)}`),
        });
      const recommender = await createRecommender({
        backend,
        pack,
        ...(options.limits ? { limits: options.limits } : {}),
        maxBatchRows: options.maxBatchRows ?? 64,
      });
      const provider = "provider" in backend && typeof backend.provider === "function" ? String(backend.provider()) : backend.name;
      const labels = { pack: name };
      const batcher = new RequestBatcher({
        maxBatch: options.maxBatch ?? 8,
        maxWaitMs: options.maxWaitMs ?? 5,
        maxQueue: options.maxQueue ?? 64,
        timeoutMs: options.requestTimeoutMs ?? 30_000,
        run: (bodies) => recommender.recommendBatch(bodies),
        onBatch: (size, seconds) => {
          metrics?.batchSize.observe(labels, size);
          metrics?.batchDuration.observe(labels, seconds);
        },
        onQueueWait: (seconds) => metrics?.queueWait.observe(labels, seconds),
        onReject: (reason) => metrics?.rejected.inc({ pack: name, reason }),
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

/**
 * Loads the packs, opens one model session per pack and serves the MoLoRec HTTP API
 * (`@molorec/http`, the Worker's routes) on Node's HTTP stack, with cross-request batching,
 * back-pressure, `GET /metrics` and graceful shutdown.
 *
 * @example
 * ```ts
 * const server = await startServer({ packs: [{ dir: "packs/demo" }], port: 8080 });
 * process.on("SIGTERM", () => server.shutdown("SIGTERM").then(() => process.exit(0)));
 * ```
 */
export async function startServer(options: ServerOptions): Promise<MolorecServer> {
  const log = options.log ?? ((line: string) => console.error(line));
  const host = options.host ?? "127.0.0.1";
  const maxBodyBytes = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  const requestTimeoutMs = options.requestTimeoutMs ?? 30_000;
  const shutdownTimeoutMs = options.shutdownTimeoutMs ?? 30_000;
  const shutdownGraceMs = options.shutdownGraceMs ?? 500;
  let packs: ServedPack[] = [];
  const metrics = serverMetrics({
    queueDepth: () => packs.map((p) => [{ pack: p.name }, p.batcher.depth]),
    batchInFlight: () => packs.map((p) => [{ pack: p.name }, p.batcher.inFlight]),
  });
  packs = await loadPacks(options, metrics, log);
  for (const p of packs) metrics.packInfo.set({ pack: p.name, backend: p.recommender.backendName }, 1);

  let draining = false;
  let inFlight = 0;
  let idleWaiters: Array<() => void> = [];
  const facades = new Map<string | null, Recommender>([
    [null, batchedFacade(packs, null)],
    ...packs.map((p) => [p.name, batchedFacade(packs, p.name)] as const),
  ]);

  const app = createApp<AppEnv>({
    getRecommender: async (env) => {
      const name = env?.pack ?? null;
      const f = facades.get(name);
      if (!f) throw unknownPack(name!, packs);
      return f;
    },
    maxBodyBytes,
    health: () => ({
      draining,
      packs: packs.map((p) => ({
        name: p.name,
        backend: p.recommender.backendName,
        domains: Object.keys(p.recommender.pack.manifest.domains),
        defaultDomain: p.recommender.pack.manifest.defaultDomain,
        queueDepth: p.batcher.depth,
        batchInFlight: p.batcher.inFlight,
      })),
      batching: { maxBatch: options.maxBatch ?? 8, maxWaitMs: options.maxWaitMs ?? 5, maxQueue: options.maxQueue ?? 64 },
    }),
    onError: (e) => log(`molorec-server: unexpected error: ${(e as Error)?.stack ?? e}`),
  });
  app.get("/metrics", () => new Response(metrics.registry.render(), { headers: { "content-type": PROMETHEUS_CONTENT_TYPE } }));
  app.get("/v1/packs", (c) =>
    c.json({
      default: packs[0]!.name,
      header: PACK_HEADER,
      packs: packs.map((p) => ({
        ...packSummary(p.recommender.pack.manifest, p.recommender.limits, maxBodyBytes),
        name: p.name,
        backend: p.recommender.backendName,
      })),
    }),
  );

  async function handle(request: Request): Promise<Response> {
    const url = new URL(request.url);
    const route = ROUTE_LABELS.has(url.pathname) ? url.pathname : "other";
    const t0 = performance.now();
    inFlight++;
    metrics.inFlight.inc();
    let res: Response;
    try {
      if (draining && route === "/v1/health") {
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
      inFlight--;
      metrics.inFlight.dec();
    }
    if (draining) {
      // Tell keep-alive clients to reconnect (to another replica): this connection ends after this answer.
      try {
        res.headers.set("connection", "close");
      } catch {
        const headers = new Headers(res.headers);
        headers.set("connection", "close");
        res = new Response(res.body, { status: res.status, statusText: res.statusText, headers });
      }
    }
    metrics.requests.inc({ route, method: request.method, status: String(res.status) });
    metrics.latency.observe({ route }, (performance.now() - t0) / 1000);
    if (inFlight === 0 && idleWaiters.length) {
      const w = idleWaiters;
      idleWaiters = [];
      for (const f of w) f();
    }
    return res;
  }

  const server = createAdaptorServer({ fetch: (request: Request) => handle(request), hostname: host }) as Server;
  server.requestTimeout = requestTimeoutMs;
  server.headersTimeout = Math.min(requestTimeoutMs, 10_000);
  server.keepAliveTimeout = 5_000;
  server.maxConnections = options.maxConnections ?? 1024;
  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(options.port ?? 8080, host, () => {
        server.off("error", reject);
        resolve();
      });
    });
  } catch (e) {
    await Promise.all(packs.map((p) => p.recommender.close()));
    const err = e as NodeJS.ErrnoException;
    throw new MolorecError("BACKEND_UNAVAILABLE", `cannot listen on ${host}:${options.port ?? 8080}: ${err.code ?? ""} ${err.message}`, {
      cause: e,
    });
  }
  const port = (server.address() as AddressInfo).port;
  const url = `http://${host.includes(":") ? `[${host}]` : host}:${port}`;
  log(
    `molorec-server: listening on ${url} (packs: ${packs.map((p) => p.name).join(", ")}; max-batch ${options.maxBatch ?? 8}, max-wait ${options.maxWaitMs ?? 5} ms, max-queue ${options.maxQueue ?? 64}, request timeout ${requestTimeoutMs} ms)`,
  );

  let closing: Promise<void> | null = null;
  /** A shutdown closes idle connections only after this long with nothing in flight. */
  const QUIET_MS = 100;
  const waitIdle = () => (inFlight === 0 ? Promise.resolve() : new Promise<void>((resolve) => idleWaiters.push(resolve)));

  function shutdown(reason = "shutdown"): Promise<void> {
    if (closing) return closing;
    draining = true;
    closing = (async () => {
      const queued = packs.reduce((n, p) => n + p.batcher.depth + p.batcher.inFlight, 0);
      log(
        `molorec-server: ${reason}: draining (${shutdownGraceMs > 0 ? `accepting for ${shutdownGraceMs} ms more, then ` : ""}not accepting connections); finishing ${inFlight} in-flight request(s) (${queued} queued or scoring), at most ${shutdownTimeoutMs} ms`,
      );
      if (shutdownGraceMs > 0) {
        await new Promise((r) => setTimeout(r, shutdownGraceMs));
        // One more event-loop turn: a loop blocked past the timer accepts what is queued first.
        await new Promise((r) => setImmediate(r));
      }
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      // Accepted connections may hold a request the event loop has not read yet (it was busy
      // scoring): wait until nothing is in flight for a quiet moment before closing idle ones.
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), shutdownTimeoutMs)));
      let finished = false;
      for (;;) {
        finished = await Promise.race([waitIdle().then(() => true as const), timeout]);
        if (!finished) break;
        await new Promise((r) => setTimeout(r, QUIET_MS));
        if (inFlight === 0) break;
      }
      clearTimeout(timer);
      const cut = inFlight;
      // Idle keep-alive connections close now; anything still open after a moment is cut.
      server.closeIdleConnections();
      let grace: ReturnType<typeof setTimeout> | undefined;
      const allClosed = await Promise.race([
        closed.then(() => true),
        new Promise<boolean>((resolve) => (grace = setTimeout(() => resolve(false), finished ? 1000 : 0))),
      ]);
      clearTimeout(grace);
      if (!allClosed) server.closeAllConnections();
      await closed;
      await Promise.all(packs.map((p) => p.batcher.close()));
      await Promise.all(packs.map((p) => p.recommender.close()));
      log(`molorec-server: stopped (${finished ? "every in-flight request was answered" : `shutdown timeout: ${cut} request(s) cut`})`);
    })();
    return closing;
  }

  return {
    url,
    port,
    packs,
    metrics,
    app,
    get draining() {
      return draining;
    },
    get inFlight() {
      return inFlight;
    },
    shutdown,
  };
}

/** What {@link handleSignals} listens on and how it exits (the process by default; tests pass fakes). */
export interface SignalOptions {
  signals?: {
    on(event: "SIGTERM" | "SIGINT", listener: () => void): unknown;
    off(event: "SIGTERM" | "SIGINT", listener: () => void): unknown;
  };
  exit?: (code: number) => void;
  log?: (line: string) => void;
}

/**
 * SIGTERM / SIGINT: graceful shutdown, then exit 0. A second signal exits at once with 1.
 * Returns a function that removes the handlers.
 */
export function handleSignals(server: Pick<MolorecServer, "shutdown">, options: SignalOptions = {}): () => void {
  const signals = options.signals ?? process;
  const exit = options.exit ?? ((code: number) => process.exit(code));
  const log = options.log ?? ((line: string) => console.error(line));
  let received = 0;
  const on = (signal: "SIGTERM" | "SIGINT") => () => {
    received++;
    if (received > 1) {
      log(`molorec-server: ${signal} again: exiting now`);
      exit(1);
      return;
    }
    server.shutdown(signal).then(
      () => exit(0),
      (e: unknown) => {
        log(`molorec-server: shutdown failed: ${(e as Error)?.stack ?? e}`);
        exit(1);
      },
    );
  };
  const term = on("SIGTERM");
  const int = on("SIGINT");
  signals.on("SIGTERM", term);
  signals.on("SIGINT", int);
  return () => {
    signals.off("SIGTERM", term);
    signals.off("SIGINT", int);
  };
}
