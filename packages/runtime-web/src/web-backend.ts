import { type InferenceBackend, type InferenceSession, isMolorecError, modelBytes, type SessionOptions } from "@molorec/core";
import { adaptOrtSession, openFirstProvider, ortModelOptions, type ProviderCandidate } from "@molorec/core/internal";
import * as ort from "onnxruntime-web";
import { probeWebGpu, type GpuLike, type WebGpuAdapterInfo } from "./webgpu-probe.js";

/** Which device runs the model. `auto`: WebGPU when the browser gives an adapter, else WASM. */
export type WebDevice = "auto" | "webgpu" | "wasm";

/** Why one backend could not be used. */
export interface BackendFailure {
  /** `adapter`: no WebGPU adapter; `session`: ONNX Runtime could not open the model there. */
  stage: "adapter" | "session";
  message: string;
}

/** What {@link WebBackend.info} reports after a session was opened (or failed to open). */
export interface WebBackendInfo {
  /** The device the model runs on; null until a session opened. */
  device: "webgpu" | "wasm" | null;
  requested: WebDevice;
  /** The WebGPU adapter used (or probed), null when WebGPU was not tried or had none. */
  adapter: WebGpuAdapterInfo | null;
  /** Every backend that was tried and failed, by name. Empty when the first choice worked. */
  failures: Partial<Record<"webgpu" | "wasm", BackendFailure>>;
  /** WASM threads ONNX Runtime may use (1 unless the page is cross-origin isolated). */
  wasmThreads: number;
  crossOriginIsolated: boolean;
  ortVersion: string;
}

/** Options of {@link webBackend}. */
export interface WebBackendOptions {
  device?: WebDevice;
  /**
   * Where the app serves ONNX Runtime's `ort-wasm-simd-threaded.jsep.{mjs,wasm}`: a URL prefix
   * ending in `/` (e.g. `"/ort/"`) or one URL per file. Serve them yourself, never from a CDN.
   * Sets the page-global `ort.env.wasm.wasmPaths`.
   */
  wasmPaths: string | { mjs?: string; wasm?: string };
  /** WASM threads; default: ONNX Runtime's choice (needs a cross-origin isolated page, else 1). */
  numThreads?: number;
  powerPreference?: "low-power" | "high-performance";
  /**
   * ONNX Runtime's (page-global) log level. Default `"error"`: its warnings (e.g. shape ops
   * placed on the CPU) are expected for these graphs and would only clutter the shop's console.
   */
  ortLogLevel?: "verbose" | "info" | "warning" | "error" | "fatal";
  /** Receives one line saying which device runs and why. Default: `console.info`. */
  log?: (line: string) => void;
  /** Stand-in for `navigator.gpu` (tests); default: the browser's. */
  gpu?: GpuLike | null;
}

/** An {@link InferenceBackend} that also says which device it chose and what failed. */
export interface WebBackend extends InferenceBackend {
  info(): WebBackendInfo;
  /** `webgpu` or `wasm` once a session opened, `none` before. */
  provider(): string;
}

const SEVERITY = { verbose: 0, info: 1, warning: 2, error: 3, fatal: 4 } as const;

/**
 * The onnxruntime-web backend: WebGPU when `navigator.gpu.requestAdapter()` returns an adapter,
 * WASM otherwise (or when WebGPU fails to open the model, with `auto`). `info()` says which
 * device runs, which adapter (and whether it is a software fallback), and why others failed.
 *
 * @example
 * ```ts
 * import { createRecommender } from "@molorec/core";
 * import { loadPackFromUrl, webBackend } from "@molorec/runtime-web";
 * const { pack } = await loadPackFromUrl("/pack/");
 * const rec = await createRecommender({ backend: webBackend({ wasmPaths: "/ort/" }), pack });
 * ```
 */
export function webBackend(options: WebBackendOptions): WebBackend {
  const requested = options.device ?? "auto";
  const log = options.log ?? ((line: string) => console.info(line));
  const state: WebBackendInfo = {
    device: null,
    requested,
    adapter: null,
    failures: {},
    wasmThreads: 1,
    crossOriginIsolated: typeof globalThis.crossOriginIsolated === "boolean" ? globalThis.crossOriginIsolated : false,
    ortVersion: ort.env.versions.web ?? ort.env.versions.common,
  };
  ort.env.wasm.wasmPaths = options.wasmPaths;
  const logLevel = options.ortLogLevel ?? "error";
  ort.env.logLevel = logLevel;
  if (options.numThreads !== undefined) ort.env.wasm.numThreads = options.numThreads;

  /** Opens the model on a device. WebGPU cannot take zero-sized tensors, so core avoids them there. */
  const open = (device: "webgpu" | "wasm", model: Uint8Array, opts: SessionOptions | undefined) => async () => {
    const session = await ort.InferenceSession.create(model, {
      ...ortModelOptions(opts),
      executionProviders: [device],
      graphOptimizationLevel: "all",
      logSeverityLevel: SEVERITY[logLevel],
    });
    return adaptOrtSession(session, ort.Tensor, { serialize: true, acceptsEmptyTensors: device !== "webgpu" });
  };

  return {
    get name() {
      return `onnxruntime-web(${state.device ?? "none"})`;
    },
    provider: () => state.device ?? "none",
    info: () => structuredClone(state),
    async createSession(file, opts) {
      const model = await modelBytes(file);
      const candidates: Array<ProviderCandidate<InferenceSession>> = [];
      if (requested !== "wasm") {
        const gpu = options.gpu !== undefined ? options.gpu : (globalThis.navigator as { gpu?: GpuLike } | undefined)?.gpu;
        const probe = await probeWebGpu(gpu, options.powerPreference);
        if (probe.ok) {
          state.adapter = probe.info;
          // Hand ORT the adapter we probed, so the one we report is the one that runs.
          if (!ort.env.webgpu.device) (ort.env.webgpu as { adapter: unknown }).adapter = probe.adapter;
        }
        candidates.push({ name: "webgpu", unavailable: probe.ok ? null : probe.reason, open: open("webgpu", model, opts) });
      }
      if (requested !== "webgpu") candidates.push({ name: "wasm", open: open("wasm", model, opts) });
      try {
        const { session, provider, failures } = await openFirstProvider(`onnxruntime-web ${state.ortVersion}`, candidates, {
          unavailableStage: "adapter",
          details: { requested, adapter: state.adapter },
        });
        state.failures = failures as WebBackendInfo["failures"];
        state.device = provider as "webgpu" | "wasm";
        state.wasmThreads = ort.env.wasm.numThreads || 1;
        log(`molorec: onnxruntime-web ${state.ortVersion}: running on ${describe(state)}`);
        return session;
      } catch (e) {
        state.failures = ((isMolorecError(e) ? e.details?.failures : undefined) ?? {}) as WebBackendInfo["failures"];
        throw e;
      }
    },
  };
}

/** The device that runs, and why (the log line). */
function describe(state: WebBackendInfo): string {
  if (state.device === "webgpu") {
    const a = state.adapter!;
    const name = [a.vendor, a.architecture, a.description].filter(Boolean).join(" ") || "unknown adapter";
    return `WebGPU (${name}${a.isFallbackAdapter ? ", software fallback adapter: slow" : ""})`;
  }
  const gpu = state.failures.webgpu;
  const why = !gpu ? "requested" : `WebGPU ${gpu.stage === "adapter" ? "unavailable" : "failed"}: ${gpu.message}`;
  return `WASM, ${state.wasmThreads} thread(s) (${why})`;
}
