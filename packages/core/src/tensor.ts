/** Element types molorec feeds to and reads from a model. */
export type TensorType = "float32" | "int64";

/** Typed-array storage for each {@link TensorType}. */
export interface TensorDataMap {
  float32: Float32Array;
  int64: BigInt64Array;
}

/**
 * A plain tensor: what core builds and what backends return. It is structurally compatible
 * with onnxruntime's `Tensor` (type, data, dims), so backends convert it without copying.
 */
export interface TensorLike<T extends TensorType = TensorType> {
  readonly type: T;
  readonly data: TensorDataMap[T];
  readonly dims: readonly number[];
}

/** Creates a {@link TensorLike}, checking that the data length matches the dims. */
export function tensor<T extends TensorType>(type: T, data: TensorDataMap[T], dims: readonly number[]): TensorLike<T> {
  const size = dims.reduce((a, b) => a * b, 1);
  if (data.length !== size) {
    throw new RangeError(`tensor data has ${data.length} elements but dims [${dims.join(", ")}] need ${size}`);
  }
  return { type, data, dims };
}

/** int64 tensor from plain numbers. */
export function int64(values: ArrayLike<number>, dims: readonly number[]): TensorLike<"int64"> {
  const data = new BigInt64Array(values.length);
  for (let i = 0; i < values.length; i++) data[i] = BigInt(values[i]!);
  return tensor("int64", data, dims);
}
