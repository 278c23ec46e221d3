import { MolorecError } from "./errors.js";
import { quoteName } from "./own.js";

/** A float32 tensor read from a safetensors file. */
export interface NamedTensor {
  dims: number[];
  data: Float32Array;
}

/** Element widths of the dtypes read (widened to float32). A `Map`: dtypes come from the file. */
const DTYPE_BYTES = new Map<string, number>([
  ["F32", 4],
  ["F16", 2],
  ["BF16", 2],
]);

/** The format's own cap on the JSON header (safetensors refuses larger headers too). */
const MAX_HEADER_BYTES = 100_000_000;
/** Dimensions of one tensor: LoRA weights have 2; the cap only bounds the work on hostile shapes. */
const MAX_RANK = 8;

function f16ToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * 2 ** -14 * (f / 1024);
  if (e === 31) return f ? NaN : s * Infinity;
  return s * 2 ** (e - 15) * (1 + f / 1024);
}

interface Entry {
  name: string;
  dtype: string;
  width: number;
  shape: number[];
  start: number;
  end: number;
}

/**
 * Parses a safetensors file (8-byte little-endian header length, JSON header, raw data), strictly:
 * every tensor has a known dtype, a shape of non-negative integers and `data_offsets` that match
 * it; the tensors tile the data area exactly (in range, contiguous, no overlap, no gap); every
 * weight is finite. F32 is read as is; F16 and BF16 are widened to float32. Anything else is a
 * `MALFORMED_PACK` error naming the file and the tensor.
 */
export function parseSafetensors(bytes: Uint8Array, file: string): Map<string, NamedTensor> {
  const bad = failer(file);
  if (bytes.byteLength < 8) bad("file is shorter than a safetensors header");
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const declared = view.getBigUint64(0, true);
  if (declared > BigInt(Math.min(MAX_HEADER_BYTES, bytes.byteLength - 8))) bad(`header length ${declared} exceeds the file size or 100 MB`);
  const headerLen = Number(declared);
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(8, 8 + headerLen)));
  } catch (cause) {
    throw new MolorecError("MALFORMED_PACK", `${file}: header is not valid UTF-8 JSON. Re-save the adapter with PEFT's save_pretrained.`, {
      cause,
      details: { file },
    });
  }
  if (typeof header !== "object" || header === null || Array.isArray(header)) bad("header is not a JSON object");
  const base = 8 + headerLen;
  const entries = readEntries(header as Record<string, unknown>, bytes.byteLength - base, bad);
  const out = new Map<string, NamedTensor>();
  for (const e of entries) out.set(e.name, { dims: e.shape, data: readTensor(bytes, base, e, bad) });
  return out;
}

type Fail = (what: string) => never;

function failer(file: string): Fail {
  return (what) => {
    throw new MolorecError("MALFORMED_PACK", `${file}: ${what}. Re-save the adapter with PEFT's save_pretrained (safetensors).`, {
      details: { file },
    });
  };
}

/** The header's tensors, checked: known dtype, a shape matching the offsets, the data area tiled exactly. */
function readEntries(header: Record<string, unknown>, dataBytes: number, bad: Fail): Entry[] {
  const entries: Entry[] = [];
  for (const [name, info] of Object.entries(header)) {
    const label = `tensor ${quoteName(name)}`;
    if (name === "__metadata__") {
      if (typeof info !== "object" || info === null || Array.isArray(info)) bad("__metadata__ is not an object");
      continue;
    }
    if (typeof info !== "object" || info === null || Array.isArray(info)) bad(`${label} is not described by an object`);
    const { dtype, shape, data_offsets: offsets } = info as Record<string, unknown>;
    const width = typeof dtype === "string" ? DTYPE_BYTES.get(dtype) : undefined;
    if (width === undefined)
      bad(`${label} has dtype ${JSON.stringify(dtype)?.slice(0, 40)}; only ${[...DTYPE_BYTES.keys()].join(", ")} are supported`);
    if (!Array.isArray(shape) || shape.length > MAX_RANK || !shape.every((d) => Number.isSafeInteger(d) && d >= 0))
      bad(`${label} has no valid shape (a list of at most ${MAX_RANK} non-negative integers)`);
    if (
      !Array.isArray(offsets) ||
      offsets.length !== 2 ||
      !offsets.every((o) => Number.isSafeInteger(o) && o >= 0) ||
      offsets[0] > offsets[1]
    )
      bad(`${label} has no valid data_offsets (two non-negative integers [start, end], start ≤ end)`);
    const [start, end] = offsets as [number, number];
    if (end > dataBytes) bad(`${label} ends at byte ${end} of a data area of ${dataBytes} bytes`);
    // The product is checked against the bytes the tensor spans, so it cannot overflow unnoticed.
    let count = 1;
    for (const d of shape as number[]) count *= d;
    if (count * width! !== end - start) bad(`${label} has shape [${shape}] (${count} × ${width} bytes) but spans ${end - start} bytes`);
    entries.push({ name, dtype: dtype as string, width: width!, shape: shape as number[], start, end });
  }
  // The tensors tile the data area: sorted by start, each begins where the previous one ended.
  entries.sort((a, b) => a.start - b.start || a.end - b.end);
  let at = 0;
  for (const e of entries) {
    if (e.start < at) bad(`tensor ${quoteName(e.name)} overlaps the tensor before it (bytes ${e.start}–${e.end})`);
    if (e.start > at) bad(`bytes ${at}–${e.start} of the data area belong to no tensor`);
    at = e.end;
  }
  if (at !== dataBytes) bad(`bytes ${at}–${dataBytes} of the data area belong to no tensor`);
  return entries;
}

/** One tensor as float32 (F16 and BF16 widened); a weight that is not finite is refused. */
function readTensor(bytes: Uint8Array, base: number, e: Entry, bad: Fail): Float32Array {
  const count = (e.end - e.start) / e.width;
  const dv = new DataView(bytes.buffer, bytes.byteOffset + base + e.start, e.end - e.start);
  const data = new Float32Array(count);
  if (e.dtype === "F32") for (let i = 0; i < count; i++) data[i] = dv.getFloat32(i * 4, true);
  else if (e.dtype === "F16") for (let i = 0; i < count; i++) data[i] = f16ToF32(dv.getUint16(i * 2, true));
  else {
    const word = new Uint32Array(1);
    const asFloat = new Float32Array(word.buffer);
    for (let i = 0; i < count; i++) {
      word[0] = dv.getUint16(i * 2, true) << 16;
      data[i] = asFloat[0]!;
    }
  }
  for (let i = 0; i < count; i++) {
    if (!Number.isFinite(data[i]!)) bad(`tensor ${quoteName(e.name)} holds ${data[i]} at element ${i}; weights must be finite numbers`);
  }
  return data;
}
