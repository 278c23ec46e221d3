import { describe, expect, it } from "vitest";
import { parseSafetensors } from "./safetensors.js";

function file(header: object, data: Uint8Array): Uint8Array {
  const h = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + h.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(h.length), true);
  out.set(h, 8);
  out.set(data, 8 + h.length);
  return out;
}

const two = new Uint8Array(new Float32Array([1, 2]).buffer);

function withHeader(h: Uint8Array): Uint8Array {
  const out = new Uint8Array(8 + h.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(h.length), true);
  out.set(h, 8);
  return out;
}

describe("parseSafetensors", () => {
  it("reads F32 and widens F16/BF16", () => {
    const f32 = new Uint8Array(new Float32Array([1.5, -2]).buffer);
    const f16 = new Uint8Array(new Uint16Array([0x3c00, 0xc000]).buffer); // 1, -2
    const bf16 = new Uint8Array(new Uint16Array([0x3fc0]).buffer); // 1.5
    const data = new Uint8Array([...f32, ...f16, ...bf16]);
    const t = parseSafetensors(
      file(
        {
          a: { dtype: "F32", shape: [2], data_offsets: [0, 8] },
          b: { dtype: "F16", shape: [1, 2], data_offsets: [8, 12] },
          c: { dtype: "BF16", shape: [1], data_offsets: [12, 14] },
          __metadata__: { format: "pt" },
        },
        data,
      ),
      "x.safetensors",
    );
    expect([...t.get("a")!.data]).toEqual([1.5, -2]);
    expect([...t.get("b")!.data]).toEqual([1, -2]);
    expect(t.get("b")!.dims).toEqual([1, 2]);
    expect([...t.get("c")!.data]).toEqual([1.5]);
  });

  it.each([
    ["truncated", new Uint8Array(4)],
    ["bad header length", file({}, new Uint8Array()).map((v, i) => (i === 0 ? 255 : v))],
    ["inconsistent offsets", file({ a: { dtype: "F32", shape: [3], data_offsets: [0, 8] } }, new Uint8Array(8))],
    ["unsupported dtype", file({ a: { dtype: "I8", shape: [1], data_offsets: [0, 1] } }, new Uint8Array(1))],
    // Headers as a hostile or broken writer could make them: each was an uncoded TypeError, or
    // silently read the wrong bytes, before the reader was strict.
    ["tensor without a shape", file({ a: { dtype: "F32", data_offsets: [0, 8] } }, two)],
    ["string shape", file({ a: { dtype: "F32", shape: "2", data_offsets: [0, 8] } }, two)],
    ["negative dimension", file({ a: { dtype: "F32", shape: [-2], data_offsets: [0, 8] } }, two)],
    ["fractional dimension", file({ a: { dtype: "F32", shape: [1.5], data_offsets: [0, 8] } }, two)],
    ["missing data_offsets", file({ a: { dtype: "F32", shape: [2] } }, two)],
    ["a null entry", file({ a: null }, two)],
    ["a string entry", file({ a: "F32" }, two)],
    ["an array header", file([1, 2] as unknown as object, two)],
    ["negative offsets (reading the header as weights)", file({ a: { dtype: "F32", shape: [2], data_offsets: [-8, 0] } }, two)],
    ["reversed offsets", file({ a: { dtype: "F32", shape: [0], data_offsets: [8, 0] } }, two)],
    ["offsets past the data", file({ a: { dtype: "F32", shape: [2], data_offsets: [4, 12] } }, two)],
    ["a dtype inherited from Object.prototype", file({ a: { dtype: "constructor", shape: [2], data_offsets: [0, 8] } }, two)],
    [
      "overlapping tensors",
      file(
        {
          a: { dtype: "F32", shape: [2], data_offsets: [0, 8] },
          b: { dtype: "F32", shape: [1], data_offsets: [4, 8] },
        },
        two,
      ),
    ],
    ["a gap before the first tensor", file({ a: { dtype: "F32", shape: [1], data_offsets: [4, 8] } }, two)],
    ["bytes after the last tensor", file({ a: { dtype: "F32", shape: [1], data_offsets: [0, 4] } }, two)],
    [
      "NaN weights",
      file({ a: { dtype: "F32", shape: [2], data_offsets: [0, 8] } }, new Uint8Array(new Float32Array([1, Number.NaN]).buffer)),
    ],
    [
      "infinite weights",
      file({ a: { dtype: "F32", shape: [1], data_offsets: [0, 4] } }, new Uint8Array(new Float32Array([-Infinity]).buffer)),
    ],
    ["an F16 NaN", file({ a: { dtype: "F16", shape: [1], data_offsets: [0, 2] } }, new Uint8Array(new Uint16Array([0x7e00]).buffer))],
    ["a header of invalid UTF-8", withHeader(new Uint8Array([0x7b, 0xff, 0x7d]))],
    ["a header length of 2⁶³", withHeader(new TextEncoder().encode("{}")).map((v, i) => (i === 7 ? 0x80 : v))],
  ])("rejects a %s file as MALFORMED_PACK", (_n, bytes) => {
    expect(() => parseSafetensors(bytes, "x.safetensors")).toThrow(
      expect.objectContaining({ name: "MolorecError", code: "MALFORMED_PACK", message: expect.stringMatching(/^x\.safetensors: /) }),
    );
  });

  it("accepts empty tensors and tensors in any header order", () => {
    const t = parseSafetensors(
      file(
        {
          b: { dtype: "F32", shape: [1], data_offsets: [4, 8] },
          e: { dtype: "F32", shape: [0, 3], data_offsets: [4, 4] },
          a: { dtype: "F32", shape: [1], data_offsets: [0, 4] },
        },
        two,
      ),
      "x.safetensors",
    );
    expect([...t.get("a")!.data, ...t.get("b")!.data]).toEqual([1, 2]);
    expect(t.get("e")!.dims).toEqual([0, 3]);
  });
});
