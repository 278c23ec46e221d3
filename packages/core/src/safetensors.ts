import { MolorecError } from "./errors.js";

/** A float32 tensor read from a safetensors file. */
export interface NamedTensor {
  dims: number[];
  data: Float32Array;
}

const DTYPE_BYTES: Record<string, number> = { F32: 4, F16: 2, BF16: 2 };

function f16ToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * 2 ** -14 * (f / 1024);
  if (e === 31) return f ? NaN : s * Infinity;
  return s * 2 ** (e - 15) * (1 + f / 1024);
}

/**
 * Parses a safetensors file (8-byte little-endian header length, JSON header, raw data).
 * F32 is read as is; F16 and BF16 are widened to float32.
 */
export function parseSafetensors(bytes: Uint8Array, file: string): Map<string, NamedTensor> {
  const bad = (what: string): never => {
    throw new MolorecError("MALFORMED_PACK", `${file}: ${what}. Re-save the adapter with PEFT's save_pretrained (safetensors).`);
  };
  if (bytes.byteLength < 8) bad("file is shorter than a safetensors header");
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLen = Number(view.getBigUint64(0, true));
  if (headerLen > bytes.byteLength - 8) bad("header length exceeds the file size");
  let header: Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  try {
    header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLen)));
  } catch (cause) {
    throw new MolorecError("MALFORMED_PACK", `${file}: header is not valid JSON`, { cause });
  }
  const base = 8 + headerLen;
  const out = new Map<string, NamedTensor>();
  for (const [name, info] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    const width = DTYPE_BYTES[info.dtype];
    if (!width) bad(`tensor ${name} has dtype ${info.dtype}; only F32, F16 and BF16 are supported`);
    const [start, end] = info.data_offsets;
    const count = info.shape.reduce((a, b) => a * b, 1);
    if (end - start !== count * width! || base + end > bytes.byteLength) bad(`tensor ${name} has inconsistent offsets`);
    const raw = bytes.subarray(base + start, base + end);
    const data = new Float32Array(count);
    const dv = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
    if (info.dtype === "F32") for (let i = 0; i < count; i++) data[i] = dv.getFloat32(i * 4, true);
    else if (info.dtype === "F16") for (let i = 0; i < count; i++) data[i] = f16ToF32(dv.getUint16(i * 2, true));
    else for (let i = 0; i < count; i++) data[i] = new Float32Array(new Uint32Array([dv.getUint16(i * 2, true) << 16]).buffer)[0]!;
    out.set(name, { dims: info.shape, data });
  }
  return out;
}
