import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { describeWebGpuBlockers, webGpuBlockers } from "./webgpu-compat.js";

const repo = new URL("../../../", import.meta.url);
const read = (path: string) => new Uint8Array(readFileSync(new URL(path, repo)));

// A minimal protobuf writer for hand-made ModelProtos.
const varint = (n: number): number[] => {
  const out: number[] = [];
  while (n >= 0x80) {
    out.push((n % 0x80) | 0x80);
    n = Math.floor(n / 0x80);
  }
  out.push(n);
  return out;
};
const len = (field: number, body: number[]): number[] => [...varint(field * 8 + 2), ...varint(body.length), ...body];
const str = (field: number, s: string): number[] => len(field, [...new TextEncoder().encode(s)]);
const int = (field: number, v: number): number[] => [...varint(field * 8), ...varint(v)];
const node = (opType: string, name: string, domain = "", ints: Record<string, number> = {}): number[] =>
  len(1, [
    ...str(1, "x"),
    ...str(2, "y"),
    ...str(3, name),
    ...str(4, opType),
    ...Object.entries(ints).flatMap(([k, v]) => len(5, [...str(1, k), ...int(3, v), ...int(20, 2)])),
    ...(domain ? str(7, domain) : []),
  ]);
const model = (...nodes: number[][]): Uint8Array =>
  // ir_version, a graph holding the nodes and an initializer with raw bytes, opset_import
  new Uint8Array([
    ...int(1, 8),
    ...len(7, [...nodes.flat(), ...len(5, [...int(1, 4), ...int(2, 2), ...str(8, "W"), ...len(9, [1, 2, 3, 4])])]),
    ...len(8, int(2, 17)),
  ]);

describe("webGpuBlockers", () => {
  it("finds nothing in a float32 pack (the fixture) or a 4-bit MatMulNBits graph", () => {
    expect(webGpuBlockers(read("test/fixtures/tiny-pack/model.onnx"))).toEqual([]);
    expect(webGpuBlockers(model(node("MatMulNBits", "q4", "com.microsoft", { bits: 4, block_size: 32 }), node("MatMul", "m")))).toEqual([]);
  });

  it("names the 8-bit MatMulNBits (the session would not open) and counts them", () => {
    const found = webGpuBlockers(
      model(
        node("MatMulNBits", "q4", "com.microsoft", { bits: 4 }),
        node("MatMulNBits", "head", "com.microsoft", { bits: 8 }),
        node("MatMulNBits", "head2", "com.microsoft", { bits: 8 }),
      ),
    );
    expect(found).toEqual([
      expect.objectContaining({ op: "com.microsoft.MatMulNBits", detail: "bits=8", node: "head", count: 2, effect: "session" }),
    ]);
    expect(describeWebGpuBlockers(found)).toMatch(/^com\.microsoft\.MatMulNBits \(bits=8, 2 nodes\): .*4-bit weights only/);
  });

  it("names the DequantizeLinear of packs/edge's uint8 embedding table (wrong values on WebGPU)", () => {
    const found = webGpuBlockers(read("packs/edge/model.onnx"));
    expect(found).toEqual([expect.objectContaining({ op: "DequantizeLinear", count: 1, effect: "values" })]);
    expect(found[0]!.node).toMatch(/embed_tokens/);
    // The same op in a foreign domain is not onnxruntime's kernel.
    expect(webGpuBlockers(model(node("DequantizeLinear", "dq", "com.example")))).toEqual([]);
  });

  it("throws on bytes that are not a protobuf message", () => {
    expect(() => webGpuBlockers(new Uint8Array([0x3a, 0xff, 0xff, 0xff, 0x0f]))).toThrow();
  });
});
