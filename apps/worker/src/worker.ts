import { createApp } from "@molorec/http";
import {
  cachedRecommender,
  openRecommender,
  packSourceFromSpec,
  sessionsCreatedInIsolate,
  wasmHeapBytes,
  type FetcherLike,
  type R2BucketLike,
} from "@molorec/runtime-worker";
// Compiled by wrangler (CompiledWasm rule in wrangler.jsonc): Workers cannot compile wasm bytes at
// run time. (The dist/ path, because wrangler's module rules do not read package exports.)
import ortWasm from "onnxruntime-web/dist/ort-wasm-simd-threaded.wasm";

/** The Worker's bindings and vars (wrangler.jsonc). */
export interface Env {
  /** Where the pack comes from: `assets:<prefix>`, `r2:<prefix>` or `bundled`. */
  MOLOREC_PACK?: string;
  /** Largest request body in bytes (default 1 MiB). */
  MAX_BODY_BYTES?: string;
  PACK_BUCKET?: R2BucketLike;
  PACK_ASSETS?: FetcherLike;
}

/** The Worker's fetch handler; `bundled` holds the pack's files when they are compiled in. */
export function createWorker(bundled?: Record<string, ArrayBuffer | Uint8Array>): {
  fetch(request: Request, env: Env, ctx: unknown): Response | Promise<Response>;
} {
  // Module scope lives as long as the isolate: the pack, tokenizer and ONNX session are loaded by
  // the first request and reused by every later one.
  const getRecommender = cachedRecommender((env: Env) =>
    openRecommender({
      wasmModule: ortWasm,
      source: packSourceFromSpec(env.MOLOREC_PACK, { bucket: env.PACK_BUCKET, assets: env.PACK_ASSETS, ...(bundled ? { bundled } : {}) }),
    }),
  );
  let requests = 0;
  let app: ReturnType<typeof createApp<Env>> | null = null;
  return {
    fetch(request, env, ctx) {
      requests++;
      app ??= createApp<Env>({
        getRecommender,
        maxBodyBytes: env.MAX_BODY_BYTES ? Number(env.MAX_BODY_BYTES) : undefined,
        health: () => {
          const heap = wasmHeapBytes();
          return {
            isolate: {
              ...getRecommender.stats,
              sessionsCreated: sessionsCreatedInIsolate(),
              requests,
              wasmHeapMiB: heap === null ? null : heap / 2 ** 20,
            },
          };
        },
      });
      return app.fetch(request, env, ctx as never);
    },
  };
}
