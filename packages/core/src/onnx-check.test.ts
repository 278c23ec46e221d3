import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { checkOnnxModel } from "./onnx-check.js";

const model = new Uint8Array(readFileSync(new URL("../../../test/fixtures/tiny-pack/model.onnx", import.meta.url)));
const demo = new Uint8Array(readFileSync(new URL("../../../packs/demo/model.onnx", import.meta.url)));

describe("checkOnnxModel", () => {
  it("accepts the fixture's and the demo pack's models", () => {
    expect(() => checkOnnxModel(model, "model.onnx")).not.toThrow();
    expect(() => checkOnnxModel(demo, "model.onnx")).not.toThrow();
  });

  it.each([0.999, 0.9, 0.5, 0.1, 0.001])("refuses the model cut to %f of its bytes as MALFORMED_PACK", (share) => {
    expect(() => checkOnnxModel(model.subarray(0, Math.floor(model.byteLength * share)), "model.onnx")).toThrow(
      expect.objectContaining({ code: "MALFORMED_PACK", message: expect.stringMatching(/^model\.onnx is not a complete ONNX model/) }),
    );
  });

  it.each([
    ["an empty file", new Uint8Array(0)],
    ["zeros", new Uint8Array(64)],
    ["text", new TextEncoder().encode("<html>404 Not Found</html>")],
    ["a model without its graph", new Uint8Array([0x08, 0x07])],
    ["a group wire type", new Uint8Array([0x0b, 0x0c])],
  ])("refuses %s", (_name, bytes) => {
    expect(() => checkOnnxModel(bytes, "model.onnx")).toThrow(expect.objectContaining({ code: "MALFORMED_PACK" }));
  });
});
