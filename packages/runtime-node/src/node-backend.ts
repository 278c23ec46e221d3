import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { type InferenceBackend, type InferenceSession, MolorecError } from "@molorec/core";
import { adaptOrtSession, openFirstProvider, ortModelOptions, type ProviderCandidate } from "@molorec/core/internal";
import * as ort from "onnxruntime-node";

/** Which execution provider runs the model. `auto`: CUDA when its libraries are installed, else CPU. */
export type NodeExecutionProvider = "auto" | "cpu" | "cuda";

/** Options of {@link nodeBackend}. */
export interface NodeBackendOptions {
  executionProvider?: NodeExecutionProvider;
  /** CPU threads per run; ONNX Runtime's default (all cores) when omitted. */
  intraOpNumThreads?: number;
  /**
   * Whether idle threads of onnxruntime's pool spin instead of sleeping. Default `false`: on a
   * machine busy with other work, spinning pools collapse (SmolLM2-135M on 2 cores under load: 2
   * spinning threads took 1.90× the time of 1 thread, 2 sleeping threads 1.12×; bench/threads.mjs).
   */
  spinning?: boolean;
  /**
   * Whether onnxruntime repacks weights for its matrix kernels at load: faster runs (−15 % CPU time
   * per request on SmolLM2-135M), a second copy of the weights in memory (peak RSS 1.68× the model
   * instead of 1.44×). `auto` (default): on for models under {@link PREPACK_AUTO_LIMIT} bytes.
   */
  prepack?: boolean | "auto";
  /** Receives one line saying which provider runs and why. Default: `console.error`. */
  log?: (line: string) => void;
}

const CUDA_LIB = "libonnxruntime_providers_cuda.so";

/** Models from this size on open without prepacked weights under `prepack: "auto"` (256 MiB). */
export const PREPACK_AUTO_LIMIT = 256 * 1024 * 1024;

/** onnxruntime session options for the {@link NodeBackendOptions.prepack} and `spinning` choices and a model of `bytes`. */
export function sessionTuning(prepack: boolean | "auto", bytes: number | undefined, spinning = false): ort.InferenceSession.SessionOptions {
  const on = prepack === "auto" ? (bytes ?? 0) < PREPACK_AUTO_LIMIT : prepack;
  const session: Record<string, string> = {};
  if (!on) session.disable_prepacking = "1";
  if (!spinning) session["intra_op.allow_spinning"] = "0";
  return Object.keys(session).length ? { extra: { session } } : {};
}

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
export function nodeBackend(options: NodeBackendOptions = {}): InferenceBackend & { provider(): string } {
  if (options.intraOpNumThreads !== undefined && !(Number.isInteger(options.intraOpNumThreads) && options.intraOpNumThreads >= 1))
    throw new MolorecError("INVALID_REQUEST", `intraOpNumThreads must be an integer ≥ 1, got ${options.intraOpNumThreads}`);
  const ep = options.executionProvider ?? "auto";
  const log = options.log ?? ((line: string) => console.error(line));
  let chosen = "none";
  const base: ort.InferenceSession.SessionOptions = { graphOptimizationLevel: "all" };
  if (options.intraOpNumThreads !== undefined) base.intraOpNumThreads = options.intraOpNumThreads;
  const version = `onnxruntime-node ${ort.env.versions.common}`;
  const prepackOptions = (bytes: number | undefined) => sessionTuning(options.prepack ?? "auto", bytes, options.spinning ?? false);

  return {
    get name() {
      return `onnxruntime-node(${chosen})`;
    },
    provider: () => chosen,
    async createSession(model, sessionOptions) {
      const open = (provider: string) => async () => {
        const opts = {
          ...base,
          ...ortModelOptions(sessionOptions),
          ...prepackOptions(sessionOptions?.modelBytes),
          executionProviders: [provider],
        };
        // A file opened in place is read by onnxruntime itself, external data beside it.
        const session = await (model instanceof Uint8Array
          ? ort.InferenceSession.create(model, opts)
          : ort.InferenceSession.create(model.path, opts));
        return adaptOrtSession(session, ort.Tensor);
      };
      const candidates: Array<ProviderCandidate<InferenceSession>> = [];
      if (ep !== "cpu") {
        const missing = ep === "auto" && !cudaProviderInstalled() ? `no ${CUDA_LIB} in ${ortBinaryDir()}` : null;
        candidates.push({ name: "cuda", unavailable: missing, open: open("cuda") });
      }
      if (ep !== "cuda") candidates.push({ name: "cpu", open: open("cpu") });
      const hint = ep === "cuda" ? "Install the CUDA provider libraries (packages/runtime-node/README.md) or use --ep cpu." : undefined;
      const { session, provider, failures } = await openFirstProvider(version, candidates, { hint });
      chosen = provider;
      const cuda = failures.cuda;
      const why = ep === "cpu" ? "requested" : cuda?.stage === "session" ? `CUDA failed: ${cuda.message}` : (cuda?.message ?? "requested");
      log(`molorec: ${version}: running on ${provider === "cuda" ? "CUDA" : `CPU (${why})`}`);
      return session;
    },
  };
}
