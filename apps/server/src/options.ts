import type { InferenceBackend, RequestLimits } from "@molorec/core";
import { DEFAULT_MAX_BODY_BYTES } from "@molorec/http";
import type { NodeExecutionProvider } from "@molorec/runtime-node";

/** A pack to serve: its directory and, optionally, the name requests use for it (default: the manifest's name). */
export interface PackConfig {
  dir: string;
  name?: string;
}

/** Options of `startServer`. Every field but `packs` has a default ({@link SERVER_DEFAULTS}). */
export interface ServerOptions {
  /** Packs to load; the first one is the default pack. */
  packs: PackConfig[];
  /** Interface to listen on. Default `127.0.0.1`. */
  host?: string;
  /** Port; 0 picks a free one (see `MolorecServer.url`). Default 8080. */
  port?: number;
  /** onnxruntime-node execution provider. Default `auto` (CUDA when installed, else CPU). */
  executionProvider?: NodeExecutionProvider;
  /** CPU threads per model run (ONNX Runtime's default: all cores). */
  threads?: number;
  /** Repacked weights (faster, a second copy in memory): `auto` (default) on below 256 MiB of weights. See `nodeBackend`. */
  prepack?: boolean | "auto";
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
  /**
   * A request not answered this long after it was queued gets 503; also Node's limit for receiving
   * a request (a client that sends it slower gets 408). Default 30 000 ms.
   */
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

/** The default of every server option that has one: the one place they are spelled (the CLI's help reads them too). */
export const SERVER_DEFAULTS = {
  host: "127.0.0.1",
  port: 8080,
  executionProvider: "auto",
  prepack: "auto",
  maxBatch: 8,
  maxWaitMs: 5,
  maxQueue: 64,
  maxBatchRows: 64,
  requestTimeoutMs: 30_000,
  shutdownTimeoutMs: 30_000,
  shutdownGraceMs: 500,
  maxBodyBytes: DEFAULT_MAX_BODY_BYTES,
  maxConnections: 1024,
  /** Node's limit for receiving a request's headers: the request timeout, at most this. */
  headersTimeoutMs: 10_000,
  keepAliveTimeoutMs: 5_000,
} as const satisfies Partial<Record<keyof ServerOptions | "headersTimeoutMs" | "keepAliveTimeoutMs", unknown>>;

/** {@link ServerOptions} with every default applied. */
export type ResolvedServerOptions = Required<Omit<ServerOptions, "threads" | "backend" | "limits">> &
  Pick<ServerOptions, "threads" | "backend" | "limits"> & { headersTimeoutMs: number; keepAliveTimeoutMs: number };

/** Applies {@link SERVER_DEFAULTS} once; everything after reads the resolved options. */
export function resolveServerOptions(options: ServerOptions): ResolvedServerOptions {
  const defined = Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)) as ServerOptions;
  const resolved = {
    ...SERVER_DEFAULTS,
    log: (line: string) => console.error(line),
    ...defined,
  };
  return { ...resolved, headersTimeoutMs: Math.min(resolved.requestTimeoutMs, SERVER_DEFAULTS.headersTimeoutMs) };
}
