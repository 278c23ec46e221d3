import type { InferenceSession, SessionOptions } from "./backend.js";
import { MolorecError } from "./errors.js";
import type { TensorLike, TensorType } from "./tensor.js";

/**
 * The part of onnxruntime's `InferenceSession` molorec uses. The Node and web builds share it, so
 * runtime packages adapt their sessions with {@link adaptOrtSession} without core importing either.
 */
export interface OrtSessionLike {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  run(feeds: Record<string, unknown>): Promise<Record<string, unknown>>;
  run(feeds: Record<string, unknown>, fetches: string[]): Promise<Record<string, unknown>>;
  release(): Promise<void>;
}

/** onnxruntime's `Tensor` constructor, passed in by the runtime package. */
export type OrtTensorConstructor = new (type: TensorType, data: TensorLike["data"], dims: readonly number[]) => unknown;

/** The session options core's {@link SessionOptions} become in every onnxruntime build (`externalData`, by name). */
export interface OrtModelOptions {
  externalData?: Array<{ path: string; data: Uint8Array }>;
}

/** Core's {@link SessionOptions} as onnxruntime's session options; the backend adds its own (providers, threads). */
export function ortModelOptions(options: SessionOptions | undefined): OrtModelOptions {
  if (!options?.externalData?.length) return {};
  return { externalData: options.externalData.map((f) => ({ path: f.path, data: f.data })) };
}

/** Converts core tensors to onnxruntime tensors of the caller's build (no copy of the data). */
export function toOrtFeeds(feeds: Record<string, TensorLike>, Tensor: OrtTensorConstructor): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [name, t] of Object.entries(feeds)) out[name] = new Tensor(t.type, t.data, t.dims);
  return out;
}

/**
 * Checks feeds against the graph's inputs before a run: every input fed, nothing else, and no
 * zero-sized tensor where the session cannot take one. A mismatch is a pack whose graph does not
 * match what core feeds for its manifest: `INFERENCE_FAILED` naming the inputs, rather than the
 * runtime's message about the first one.
 */
export function checkFeeds(inputNames: readonly string[], feeds: Record<string, TensorLike>, acceptsEmptyTensors = true): void {
  const missing = inputNames.filter((name) => !Object.hasOwn(feeds, name));
  const inputs = new Set(inputNames);
  const unknown = Object.keys(feeds).filter((name) => !inputs.has(name));
  if (missing.length > 0 || unknown.length > 0) {
    const parts = [missing.length ? `not fed: ${missing.join(", ")}` : "", unknown.length ? `not graph inputs: ${unknown.join(", ")}` : ""];
    throw new MolorecError(
      "INFERENCE_FAILED",
      `the feeds do not match the model's inputs (${parts.filter(Boolean).join("; ")}); is the pack's graph the one its manifest describes?`,
      {
        details: { missing, unknown },
      },
    );
  }
  if (acceptsEmptyTensors) return;
  for (const [name, t] of Object.entries(feeds)) {
    if (t.data.length === 0) {
      throw new MolorecError(
        "INFERENCE_FAILED",
        `refusing to feed the zero-sized tensor ${name} [${t.dims.join(", ")}] to a session that cannot run it.`,
      );
    }
  }
}

/** How {@link adaptOrtSession} wraps a session. */
export interface AdaptOptions {
  /**
   * Run one at a time: onnxruntime-web rejects a run while another is in flight on the same
   * session ("Session already started"), and a page may well ask twice at once.
   */
  serialize?: boolean;
  /** `false` where the device crashes or hangs on zero-sized tensors (WebGPU): see `InferenceSession.acceptsEmptyTensors`. */
  acceptsEmptyTensors?: boolean;
}

/** An {@link InferenceSession} over an onnxruntime session; its output tensors are already `TensorLike`. */
export function adaptOrtSession(session: OrtSessionLike, Tensor: OrtTensorConstructor, options: AdaptOptions = {}): InferenceSession {
  const acceptsEmptyTensors = options.acceptsEmptyTensors ?? true;
  const runNow = async (feeds: Record<string, TensorLike>, outputNames?: readonly string[]) => {
    checkFeeds(session.inputNames, feeds, acceptsEmptyTensors);
    const ortFeeds = toOrtFeeds(feeds, Tensor);
    const out = outputNames ? await session.run(ortFeeds, [...outputNames]) : await session.run(ortFeeds);
    return out as Record<string, TensorLike>;
  };
  let queue: Promise<unknown> = Promise.resolve();
  return {
    inputNames: session.inputNames,
    outputNames: session.outputNames,
    acceptsEmptyTensors,
    run(feeds, outputNames) {
      if (!options.serialize) return runNow(feeds, outputNames);
      const result = queue.then(() => runNow(feeds, outputNames));
      queue = result.catch(() => {});
      return result;
    },
    async release() {
      await session.release().catch(() => {});
    },
  };
}
