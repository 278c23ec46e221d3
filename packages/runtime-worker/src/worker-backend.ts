import { type InferenceBackend, type InferenceSession, MolorecError, modelBytes } from "@molorec/core";
import { adaptOrtSession, openFirstProvider, ortModelOptions } from "@molorec/core/internal";
import * as ort from "onnxruntime-web/wasm";

/** Options of {@link workerBackend}. */
export interface WorkerBackendOptions {
  /**
   * onnxruntime-web's `ort-wasm-simd-threaded.wasm`, compiled by the platform. In a Worker,
   * import it through a wrangler `CompiledWasm` rule
   * (`import ortWasm from "onnxruntime-web/dist/ort-wasm-simd-threaded.wasm"`) and pass it here:
   * Workers forbid compiling WebAssembly from bytes at run time. Elsewhere (tests, Node) pass
   * `await WebAssembly.compile(bytes)`.
   */
  wasmModule: WebAssembly.Module;
  /** Graph optimisation level. Default `"all"`. */
  graphOptimizationLevel?: "disabled" | "basic" | "extended" | "all";
}

/** A backend that also counts the sessions it opened (one per model load). */
export interface WorkerBackend extends InferenceBackend {
  /** Sessions created by this backend so far. */
  readonly sessionsCreated: number;
  /** Always `wasm`. */
  provider(): string;
}

// onnxruntime-web hands `env.wasm.wasmBinary` to Emscripten, which wraps it in a Uint8Array and
// calls `WebAssembly.instantiate(bytes, imports)`. We give it a marker buffer and answer that one
// call with the precompiled module; the shim removes itself as soon as it has served it.
const SENTINEL = new Uint8Array([0x00, 0x61, 0x73, 0x6d, 0x6d, 0x6f, 0x6c, 0x6f]).buffer;
let boundModule: WebAssembly.Module | null = null;
let isolateSessions = 0;
let ortMemory: WebAssembly.Memory | null = null;

/** ONNX sessions opened by every {@link workerBackend} of this isolate (one per model load). */
export function sessionsCreatedInIsolate(): number {
  return isolateSessions;
}

/**
 * Size of onnxruntime-web's wasm heap in bytes (null before the first session). It only grows,
 * so it is the high-water mark of the largest part of the isolate's memory: model weights, KV
 * cache, activations.
 */
export function wasmHeapBytes(): number | null {
  return ortMemory ? ortMemory.buffer.byteLength : null;
}

function findMemory(imports: WebAssembly.Imports | undefined): WebAssembly.Memory | null {
  for (const ns of Object.values(imports ?? {})) {
    for (const v of Object.values(ns as Record<string, unknown>)) if (v instanceof WebAssembly.Memory) return v;
  }
  return null;
}

/**
 * Every call into onnxruntime-web, in order. The isolate has one wasm instance shared by all its
 * sessions, and its calls yield between steps: a session opening while another runs (two
 * recommenders opened at once, each checking its model with a probe run) corrupted the run's
 * inputs ("Unexpected input data type"), and two runs of one session at once are refused
 * ("Session already started"). The instance computes one thing at a time anyway.
 */
let ortCalls: Promise<unknown> = Promise.resolve();

function serial<T>(call: () => Promise<T>): Promise<T> {
  const result = ortCalls.then(call);
  ortCalls = result.catch(() => {});
  return result;
}

type Instantiate = (source: unknown, imports?: WebAssembly.Imports) => Promise<unknown>;

function bindWasmModule(wasmModule: WebAssembly.Module): void {
  if (boundModule === wasmModule) return;
  if (boundModule) {
    throw new MolorecError(
      "BACKEND_UNAVAILABLE",
      "onnxruntime-web is already bound to another wasm module in this isolate; pass the same module to every workerBackend().",
    );
  }
  boundModule = wasmModule;
  ort.env.wasm.numThreads = 1;
  ort.env.wasm.proxy = false;
  ort.env.wasm.wasmBinary = SENTINEL;
  const wasm = WebAssembly as unknown as { instantiate: Instantiate };
  const original = wasm.instantiate;
  wasm.instantiate = function shim(source, imports) {
    const sentinel = source === SENTINEL || (source instanceof Uint8Array && source.buffer === SENTINEL);
    if (!sentinel) return original.call(WebAssembly, source, imports);
    if (wasm.instantiate === shim) wasm.instantiate = original;
    ortMemory = findMemory(imports);
    return (original.call(WebAssembly, wasmModule, imports) as Promise<WebAssembly.Instance>).then((instance) => ({
      instance,
      module: wasmModule,
    }));
  };
}

/**
 * The onnxruntime-web backend for Cloudflare Workers: WASM only, one thread, no proxy worker,
 * instantiated from the precompiled module the app passes in.
 *
 * @example
 * ```ts
 * import ortWasm from "onnxruntime-web/dist/ort-wasm-simd-threaded.wasm"; // CompiledWasm rule
 * const rec = await createRecommender({ backend: workerBackend({ wasmModule: ortWasm }), pack });
 * ```
 */
export function workerBackend(options: WorkerBackendOptions): WorkerBackend {
  let sessionsCreated = 0;
  return {
    name: `onnxruntime-web@${ort.env.versions.web ?? "?"}(wasm)`,
    provider: () => "wasm",
    get sessionsCreated() {
      return sessionsCreated;
    },
    async createSession(file, sessionOptions) {
      if (!(options.wasmModule instanceof WebAssembly.Module)) {
        throw new MolorecError(
          "BACKEND_UNAVAILABLE",
          "workerBackend needs wasmModule: the WebAssembly.Module of onnxruntime-web's ort-wasm-simd-threaded.wasm (import it through a wrangler CompiledWasm rule).",
        );
      }
      bindWasmModule(options.wasmModule);
      const model = await modelBytes(file);
      const open = async () => {
        const opts: ort.InferenceSession.SessionOptions = {
          ...ortModelOptions(sessionOptions),
          executionProviders: ["wasm"],
          graphOptimizationLevel: options.graphOptimizationLevel ?? "all",
        };
        // Every call into onnxruntime-web goes through the isolate-wide queue: opening a session
        // while another runs corrupted that run's inputs in workerd.
        const session = adaptOrtSession(await serial(() => ort.InferenceSession.create(model, opts)), ort.Tensor);
        return {
          inputNames: session.inputNames,
          outputNames: session.outputNames,
          acceptsEmptyTensors: session.acceptsEmptyTensors,
          run: (feeds, outputNames) => serial(() => session.run(feeds, outputNames)),
          release: () => serial(() => session.release()),
        } satisfies InferenceSession;
      };
      const { session } = await openFirstProvider("onnxruntime-web (wasm)", [{ name: "wasm", open }]);
      sessionsCreated++;
      isolateSessions++;
      return session;
    },
  };
}
