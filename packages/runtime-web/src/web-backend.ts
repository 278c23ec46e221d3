import type { InferenceBackend, InferenceSession, SessionOptions, TensorLike } from "@molorec/core";
import { MolorecError, toOrtFeeds } from "@molorec/core";
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
}

function toOrt(feeds: Record<string, TensorLike>): ort.InferenceSession.FeedsType {
  return toOrtFeeds(feeds, ort.Tensor) as ort.InferenceSession.FeedsType;
}

function wrap(session: ort.InferenceSession, device: "webgpu" | "wasm"): InferenceSession {
  // WebGPU crashes or hangs on tensors with a 0-length axis; core avoids them for this session
  // (masked 1-token past), and anything else that slips through fails loudly here instead.
  const webgpu = device === "webgpu";
  // onnxruntime-web rejects a run while another is in flight on the same session ("Session
  // already started"); a page may well ask twice at once, so runs queue here.
  let queue: Promise<unknown> = Promise.resolve();
  return {
    inputNames: session.inputNames,
    outputNames: session.outputNames,
    acceptsEmptyTensors: !webgpu,
    run(feeds, outputNames) {
      if (webgpu) {
        for (const [name, t] of Object.entries(feeds)) {
          if (t.data.length === 0) {
            return Promise.reject(
              new MolorecError(
                "INFERENCE_FAILED",
                `refusing to feed the zero-sized tensor ${name} [${t.dims.join(", ")}] to WebGPU, which cannot run it.`,
              ),
            );
          }
        }
      }
      const result = queue.then(async () => {
        const out = outputNames ? await session.run(toOrt(feeds), outputNames as string[]) : await session.run(toOrt(feeds));
        return out as unknown as Record<string, TensorLike>;
      });
      queue = result.catch(() => {});
      return result;
    },
    async release() {
      await session.release().catch(() => {});
    },
  };
}

const SEVERITY = { verbose: 0, info: 1, warning: 2, error: 3, fatal: 4 } as const;

function sessionOptions(
  device: "webgpu" | "wasm",
  options: SessionOptions | undefined,
  logLevel: keyof typeof SEVERITY,
): ort.InferenceSession.SessionOptions {
  const o: ort.InferenceSession.SessionOptions = {
    executionProviders: [device],
    graphOptimizationLevel: "all",
    logSeverityLevel: SEVERITY[logLevel],
  };
  if (options?.externalData?.length) o.externalData = options.externalData.map((f) => ({ path: f.path, data: f.data }));
  return o;
}

function message(e: unknown): string {
  return (e as Error)?.message ?? String(e);
}

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

  async function open(device: "webgpu" | "wasm", model: Uint8Array, opts: SessionOptions | undefined): Promise<InferenceSession> {
    const s = await ort.InferenceSession.create(model, sessionOptions(device, opts, logLevel));
    state.device = device;
    state.wasmThreads = ort.env.wasm.numThreads || 1;
    return wrap(s, device);
  }

  function unavailable(cause: unknown): MolorecError {
    const lines = Object.entries(state.failures).map(([k, f]) => `${k} (${f!.stage}): ${f!.message}`);
    return new MolorecError("BACKEND_UNAVAILABLE", `onnxruntime-web could not run the model here. ${lines.join("; ")}`, {
      cause,
      details: { requested, failures: state.failures, adapter: state.adapter },
    });
  }

  return {
    get name() {
      return `onnxruntime-web(${state.device ?? "none"})`;
    },
    info: () => structuredClone(state),
    async createSession(model, opts) {
      state.failures = {};
      if (requested !== "wasm") {
        const gpu = options.gpu !== undefined ? options.gpu : (globalThis.navigator as { gpu?: GpuLike } | undefined)?.gpu;
        const probe = await probeWebGpu(gpu, options.powerPreference);
        if (probe.ok) {
          state.adapter = probe.info;
          // Hand ORT the adapter we probed, so the one we report is the one that runs.
          if (!ort.env.webgpu.device) (ort.env.webgpu as { adapter: unknown }).adapter = probe.adapter;
          try {
            const s = await open("webgpu", model, opts);
            const a = probe.info;
            log(
              `molorec: onnxruntime-web ${state.ortVersion}: running on WebGPU (${[a.vendor, a.architecture, a.description].filter(Boolean).join(" ") || "unknown adapter"}${a.isFallbackAdapter ? ", software fallback adapter: slow" : ""})`,
            );
            return s;
          } catch (e) {
            state.failures.webgpu = { stage: "session", message: message(e) };
            if (requested === "webgpu") throw unavailable(e);
          }
        } else {
          state.failures.webgpu = { stage: "adapter", message: probe.reason };
          if (requested === "webgpu") throw unavailable(null);
        }
      }
      try {
        const s = await open("wasm", model, opts);
        const why =
          requested === "wasm"
            ? "requested"
            : `WebGPU ${state.failures.webgpu!.stage === "adapter" ? "unavailable" : "failed"}: ${state.failures.webgpu!.message}`;
        log(`molorec: onnxruntime-web ${state.ortVersion}: running on WASM, ${state.wasmThreads} thread(s) (${why})`);
        return s;
      } catch (e) {
        state.failures.wasm = { stage: "session", message: message(e) };
        throw unavailable(e);
      }
    },
  };
}
