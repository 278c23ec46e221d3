import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import type { InferenceBackend } from "@molorec/core";
import { adaptOrtSession, MolorecError } from "@molorec/core";
import * as ort from "onnxruntime-node";

/** Which execution provider runs the model. `auto`: CUDA when its libraries are installed, else CPU. */
export type NodeExecutionProvider = "auto" | "cpu" | "cuda";

/** Options of {@link nodeBackend}. */
export interface NodeBackendOptions {
  executionProvider?: NodeExecutionProvider;
  /** CPU threads per run; ONNX Runtime's default (all cores) when omitted. */
  intraOpNumThreads?: number;
  /** Receives one line saying which provider runs and why. Default: `console.error`. */
  log?: (line: string) => void;
}

const CUDA_LIB = "libonnxruntime_providers_cuda.so";

/** Folder of onnxruntime-node's native binding, where CUDA provider libraries must be placed. */
export function ortBinaryDir(): string {
  const main = createRequire(import.meta.url).resolve("onnxruntime-node");
  return join(dirname(main), "..", "bin", "napi-v6", process.platform, process.arch);
}

/** Whether onnxruntime-node can load its CUDA execution provider on this machine. */
export function cudaProviderInstalled(): boolean {
  return process.platform === "linux" && existsSync(join(ortBinaryDir(), CUDA_LIB));
}

/**
 * The onnxruntime-node backend. CPU everywhere; CUDA on GPU servers whose onnxruntime-node
 * has the CUDA provider libraries (see this package's README). With `auto`, a failure to start
 * CUDA falls back to CPU and the log line says so.
 *
 * @example
 * ```ts
 * const rec = await createRecommender({ backend: nodeBackend({ executionProvider: "auto" }), pack });
 * ```
 */
export function nodeBackend(options: NodeBackendOptions = {}): InferenceBackend & { readonly provider: () => string } {
  const ep = options.executionProvider ?? "auto";
  const log = options.log ?? ((line: string) => console.error(line));
  let chosen = "none";
  const base: ort.InferenceSession.SessionOptions = { graphOptimizationLevel: "all" };
  if (options.intraOpNumThreads !== undefined) base.intraOpNumThreads = options.intraOpNumThreads;

  return {
    get name() {
      return `onnxruntime-node(${chosen})`;
    },
    provider: () => chosen,
    async createSession(model) {
      const failures: Record<string, string> = {};
      const wantCuda = ep === "cuda" || (ep === "auto" && cudaProviderInstalled());
      if (wantCuda) {
        try {
          const s = await ort.InferenceSession.create(model, { ...base, executionProviders: ["cuda"] });
          chosen = "cuda";
          log(`molorec: onnxruntime-node ${ort.env.versions.common}: running on CUDA`);
          return adaptOrtSession(s, ort.Tensor);
        } catch (e) {
          failures.cuda = (e as Error).message;
          if (ep === "cuda") {
            throw new MolorecError(
              "BACKEND_UNAVAILABLE",
              `CUDA execution provider could not start: ${failures.cuda}. Install the CUDA provider libraries (packages/runtime-node/README.md) or use --ep cpu.`,
              {
                cause: e,
                details: { failures },
              },
            );
          }
        }
      }
      try {
        const s = await ort.InferenceSession.create(model, { ...base, executionProviders: ["cpu"] });
        chosen = "cpu";
        const why = ep === "cpu" ? "requested" : failures.cuda ? `CUDA failed: ${failures.cuda}` : `no ${CUDA_LIB} in ${ortBinaryDir()}`;
        log(`molorec: onnxruntime-node ${ort.env.versions.common}: running on CPU (${why})`);
        return adaptOrtSession(s, ort.Tensor);
      } catch (e) {
        failures.cpu = (e as Error).message;
        throw new MolorecError(
          "BACKEND_UNAVAILABLE",
          `onnxruntime-node could not open the model: ${Object.entries(failures)
            .map(([k, v]) => `${k}: ${v}`)
            .join("; ")}`,
          {
            cause: e,
            details: { failures },
          },
        );
      }
    },
  };
}
