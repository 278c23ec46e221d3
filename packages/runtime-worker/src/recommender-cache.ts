import type { PackSource, Recommender, RecommenderOptions } from "@molorec/core";
import { createRecommender, loadPack } from "@molorec/core";
import { workerBackend, type WorkerBackendOptions } from "./worker-backend.js";

/** What the isolate has done so far; served by `/v1/health` to show the model is loaded once. */
export interface RecommenderCacheStats {
  /** Recommenders (pack load + ONNX session) created in this isolate. */
  recommendersCreated: number;
  /** Loads that failed (the next call retries). */
  loadFailures: number;
  /** Calls answered from the cache. */
  cacheHits: number;
  /** Milliseconds the last successful load took (pack read + tokenizer + session). */
  lastLoadMs: number | null;
}

/** The part of a Worker's `ExecutionContext` the cache uses. */
export interface WaitUntil {
  waitUntil(promise: Promise<unknown>): void;
}

/**
 * Returns the isolate's recommender, creating it on the first call. Pass the request's
 * `ExecutionContext` so a load outlives the request that started it (a client hanging up must
 * not cancel the load other requests are waiting for).
 */
export interface GetRecommender<Env> {
  (env: Env, ctx?: WaitUntil): Promise<Recommender>;
  readonly stats: Readonly<RecommenderCacheStats>;
}

/**
 * Memoises a recommender per isolate: the tokenizer, LoRA weights and ONNX session are created
 * once and reused by every request. Concurrent first requests share one load; a failed load is
 * not cached, so the next request tries again.
 *
 * @example
 * ```ts
 * const getRecommender = cachedRecommender((env: Env) =>
 *   openRecommender({ wasmModule: ortWasm, source: r2Source(env.PACK_BUCKET, "packs/demo/") }));
 * const app = createApp({ getRecommender });
 * export default { fetch: app.fetch };
 * ```
 */
export function cachedRecommender<Env>(
  open: (env: Env) => Promise<Recommender>,
  clock: () => number = () => Date.now(),
): GetRecommender<Env> {
  let pending: Promise<Recommender> | null = null;
  const stats: RecommenderCacheStats = { recommendersCreated: 0, loadFailures: 0, cacheHits: 0, lastLoadMs: null };
  const get = (env: Env, ctx?: WaitUntil): Promise<Recommender> => {
    if (pending) {
      stats.cacheHits++;
      return pending;
    }
    const t0 = clock();
    const p = open(env).then(
      (rec) => {
        stats.recommendersCreated++;
        stats.lastLoadMs = clock() - t0;
        return rec;
      },
      (e: unknown) => {
        stats.loadFailures++;
        if (pending === p) pending = null;
        throw e;
      },
    );
    pending = p;
    ctx?.waitUntil(p.catch(() => {}));
    return p;
  };
  return Object.assign(get, { stats });
}

/** Options of {@link openRecommender}. */
export interface OpenRecommenderOptions extends WorkerBackendOptions, Omit<RecommenderOptions, "backend" | "pack"> {
  source: PackSource;
  /**
   * Batch rows per ONNX run (core's `maxBatchRows`). Default 16 here, not core's 64: the wasm heap
   * never shrinks, so its peak is what counts against the isolate's 128 MB, and single-threaded
   * wasm is no slower on smaller batches (demo-sized pack, 20 candidates × 5 λ: wasm heap
   * 120 → 69 MB, 1.5 → 1.1 s).
   */
  maxBatchRows?: number;
  /**
   * Keep the model's bytes in JS memory after the session has copied them into wasm memory.
   * Default false: they are dropped, so a model costs its size once, not twice, of the isolate's 128 MB.
   */
  keepModelBytes?: boolean;
}

/** Loads a pack and opens it on {@link workerBackend}: one call from bindings to a recommender. */
export async function openRecommender(options: OpenRecommenderOptions): Promise<Recommender> {
  const { source, wasmModule, graphOptimizationLevel, keepModelBytes, ...rest } = options;
  const backend = workerBackend({ wasmModule, ...(graphOptimizationLevel ? { graphOptimizationLevel } : {}) });
  const pack = await loadPack(source);
  const rec = await createRecommender({ maxBatchRows: 16, ...rest, backend, pack });
  if (!keepModelBytes) {
    pack.model = new Uint8Array(0);
    pack.externalData = [];
  }
  return rec;
}
