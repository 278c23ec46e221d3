import type { PackFile } from "./pack.js";
import type { TensorLike } from "./tensor.js";

/**
 * Options core passes when it opens a model. Backends ignore what they cannot use.
 */
export interface SessionOptions {
  /**
   * External-data files of the ONNX model, by the file name the graph refers to. Present when
   * the pack stores weights beside `model.onnx`.
   */
  externalData?: ReadonlyArray<{ path: string; data: Uint8Array }>;
  /** Bytes of the model's weights (the graph file and its external data): backends size memory policies by it. */
  modelBytes?: number;
}

/**
 * An open model. `run` receives fully prepared feeds (core did all validation) and returns
 * the requested outputs, or all outputs when `outputNames` is omitted.
 */
export interface InferenceSession {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  /**
   * `false` when the session must never be fed a tensor with a 0-length axis (WebGPU crashes or
   * hangs on them). Core then runs a prompt on a 1-token dummy past that `attention_mask`
   * masks out, instead of an empty past. Omitted means `true`.
   */
  readonly acceptsEmptyTensors?: boolean;
  run(feeds: Record<string, TensorLike>, outputNames?: readonly string[]): Promise<Record<string, TensorLike>>;
  /** Frees native memory. Safe to call twice. */
  release(): Promise<void>;
}

/**
 * The contract between core and a runtime package: turn model bytes into a session.
 * A runtime package implements this in a few dozen lines over its ONNX Runtime build.
 *
 * @example
 * ```ts
 * const rec = await createRecommender({ backend: nodeBackend(), pack: await loadPack(dirSource("pack/")) });
 * ```
 */
export interface InferenceBackend {
  /** A short name for logs and errors, e.g. `onnxruntime-node(cpu)`. */
  readonly name: string;
  /**
   * The execution provider the last session opened on (`cpu`, `cuda`, `webgpu`, `wasm`…), `none`
   * before one did: what servers report in health checks and metrics.
   */
  provider?(): string;
  /**
   * Opens the model: its bytes, or a file opened in place ({@link PackFile}, from sources such as
   * Node's directories) that the runtime reads itself, external data beside it. A backend that only
   * takes bytes reads them with `modelBytes`.
   */
  createSession(model: Uint8Array | PackFile, options?: SessionOptions): Promise<InferenceSession>;
}
