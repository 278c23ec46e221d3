import { MolorecError } from "./errors.js";

/** ModelProto fields a loadable model has: `ir_version`, `graph`, `opset_import`. */
const REQUIRED_FIELDS = new Map([
  [1, "ir_version"],
  [7, "graph"],
  [8, "opset_import"],
]);

/**
 * Checks that `bytes` hold a whole ONNX model: the top-level protobuf fields of its ModelProto
 * parse to exactly the end of the file, and `ir_version`, `graph` and `opset_import` are among
 * them. It reads field headers only (no graph), so it costs microseconds; what it catches is a
 * truncated or corrupted download, which backends report as an unavailable backend (a reason to
 * retry) rather than as a broken pack. Throws `MALFORMED_PACK`.
 */
export function checkOnnxModel(bytes: Uint8Array, file: string): void {
  const bad = (what: string): never => {
    throw new MolorecError(
      "MALFORMED_PACK",
      `${file} is not a complete ONNX model: ${what}. The file is truncated or corrupted; copy or download the pack again, or re-export it.`,
      { details: { file, bytes: bytes.byteLength } },
    );
  };
  let at = 0;
  const varint = (): number => {
    let value = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      if (at >= bytes.byteLength) bad(`a field header at byte ${at} runs past the end of the file`);
      const b = bytes[at++]!;
      value += (b & 0x7f) * scale;
      if ((b & 0x80) === 0) return value;
      scale *= 128;
    }
    return bad(`a varint at byte ${at - 10} is longer than 10 bytes`);
  };
  const seen = new Set<number>();
  if (bytes.byteLength === 0) bad("the file is empty");
  while (at < bytes.byteLength) {
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
      if (len > bytes.byteLength - at)
        bad(`field ${field} at byte ${start} declares ${len} bytes, ${len - (bytes.byteLength - at)} more than the file has`);
      at += len;
    } else bad(`byte ${start} holds wire type ${wire}, which a ModelProto never uses`);
    if (at > bytes.byteLength) bad(`field ${field} at byte ${start} runs past the end of the file`);
  }
  for (const [field, name] of REQUIRED_FIELDS) if (!seen.has(field)) bad(`it has no ${name} (field ${field})`);
}
