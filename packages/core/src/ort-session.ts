import type { InferenceSession } from "./backend.js";
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

/** Converts core tensors to onnxruntime tensors of the caller's build (no copy of the data). */
export function toOrtFeeds(feeds: Record<string, TensorLike>, Tensor: OrtTensorConstructor): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [name, t] of Object.entries(feeds)) out[name] = new Tensor(t.type, t.data, t.dims);
  return out;
}

/** An {@link InferenceSession} over an onnxruntime session; its output tensors are already `TensorLike`. */
export function adaptOrtSession(session: OrtSessionLike, Tensor: OrtTensorConstructor): InferenceSession {
  return {
    inputNames: session.inputNames,
    outputNames: session.outputNames,
    async run(feeds, outputNames) {
      const ortFeeds = toOrtFeeds(feeds, Tensor);
      const out = outputNames ? await session.run(ortFeeds, [...outputNames]) : await session.run(ortFeeds);
      return out as Record<string, TensorLike>;
    },
    async release() {
      await session.release().catch(() => {});
    },
  };
}
