import { MolorecError } from "./errors.js";

/**
 * A file read in place (Node reads a large model from disk instead of into memory): its size and a
 * synchronous read of a range. {@link checkOnnxModel} reads a few bytes per top-level field.
 */
export interface RandomAccessFile {
  readonly byteLength: number;
  readSync(offset: number, length: number): Uint8Array;
}

/** ModelProto fields a loadable model has: `ir_version`, `graph`, `opset_import`. */
const REQUIRED_FIELDS = new Map([
  [1, "ir_version"],
  [7, "graph"],
  [8, "opset_import"],
]);

/** Byte `i` of a model in memory or read in place (through a small read-ahead window). */
function byteReader(model: Uint8Array | RandomAccessFile): (i: number) => number {
  if (model instanceof Uint8Array) return (i) => model[i]!;
  let start = 0;
  let window: Uint8Array = new Uint8Array(0);
  return (i) => {
    if (i < start || i >= start + window.byteLength) {
      start = i;
      window = model.readSync(i, Math.min(64, model.byteLength - i));
    }
    return window[i - start]!;
  };
}

/**
 * Checks that `model` (its bytes, or a file read in place) holds a whole ONNX model: the top-level protobuf fields of its ModelProto
 * parse to exactly the end of the file, and `ir_version`, `graph` and `opset_import` are among
 * them. It reads field headers only (no graph), so it costs microseconds; what it catches is a
 * truncated or corrupted download, which backends report as an unavailable backend (a reason to
 * retry) rather than as a broken pack. Throws `MALFORMED_PACK`.
 */
export function checkOnnxModel(model: Uint8Array | RandomAccessFile, file: string): void {
  const size = model.byteLength;
  const byteAt = byteReader(model);
  const bad = (what: string): never => {
    throw new MolorecError(
      "MALFORMED_PACK",
      `${file} is not a complete ONNX model: ${what}. The file is truncated or corrupted; copy or download the pack again, or re-export it.`,
      { details: { file, bytes: size } },
    );
  };
  let at = 0;
  const varint = (): number => {
    let value = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      if (at >= size) bad(`a field header at byte ${at} runs past the end of the file`);
      const b = byteAt(at++);
      value += (b & 0x7f) * scale;
      if ((b & 0x80) === 0) return value;
      scale *= 128;
    }
    return bad(`a varint at byte ${at - 10} is longer than 10 bytes`);
  };
  const seen = new Set<number>();
  if (size === 0) bad("the file is empty");
  while (at < size) {
    const start = at;
    const tag = varint();
    const field = Math.floor(tag / 8);
    const wire = tag % 8;
    if (field === 0) bad(`byte ${start} holds field number 0`);
    seen.add(field);
    if (wire === 0) varint();
    else if (wire === 1) at += 8;
    else if (wire === 5) at += 4;
    else if (wire === 2) {
      const len = varint();
      if (len > size - at) bad(`field ${field} at byte ${start} declares ${len} bytes, ${len - (size - at)} more than the file has`);
      at += len;
    } else bad(`byte ${start} holds wire type ${wire}, which a ModelProto never uses`);
    if (at > size) bad(`field ${field} at byte ${start} runs past the end of the file`);
  }
  for (const [field, name] of REQUIRED_FIELDS) if (!seen.has(field)) bad(`it has no ${name} (field ${field})`);
}
