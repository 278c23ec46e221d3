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
  ])("rejects a %s file as MALFORMED_PACK", (_n, bytes) => {
    expect(() => parseSafetensors(bytes, "x.safetensors")).toThrow(expect.objectContaining({ code: "MALFORMED_PACK" }));
  });
});
