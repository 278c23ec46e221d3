import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { createRecommender } from "@molorec/core";
import { tensor } from "@molorec/core/internal";
import { dirSource, loadPackFromDir } from "./dir-source.js";
import { cudaProviderInstalled, nodeBackend, PREPACK_AUTO_LIMIT, sessionTuning } from "./node-backend.js";

const fixture = fileURLToPath(new URL("../../../test/fixtures/tiny-pack", import.meta.url));

// y = x · W, W = [[0, 1, 2], [3, 4, 5]] stored in "model.data" beside the graph (onnx, size_threshold=0)
const MATMUL_EXTERNAL = Buffer.from(
  "CAg6gAEKEQoBeAoBVxIBeSIGTWF0TXVsEgFnKj4IAggDEAFCAVdqFgoIbG9jYXRpb24SCm1vZGVsLmRhdGFqCwoGb2Zmc2V0EgEwagwKBmxlbmd0aBICMjRwAVoTCgF4Eg4KDAgBEggKAggBCgIIAmITCgF5Eg4KDAgBEggKAggBCgIIA0IECgAQEQ==",
  "base64",
);
const MATMUL_DATA = Buffer.from("AAAAAAAAgD8AAABAAABAQAAAgEAAAKBA", "base64");

describe("nodeBackend", () => {
  it("falls back to CPU under auto when CUDA is not installed, and says why", async () => {
    const lines: string[] = [];
    const backend = nodeBackend({ log: (l) => lines.push(l) });
    const rec = await createRecommender({ backend, pack: await loadPackFromDir(fixture) });
    if (!cudaProviderInstalled()) {
      expect(backend.provider()).toBe("cpu");
      expect(lines.join("\n")).toMatch(/running on CPU \(no libonnxruntime_providers_cuda\.so/);
    }
    expect(rec.backendName).toMatch(/^onnxruntime-node\((cpu|cuda)\)$/);
    await rec.close();
  });

  it.skipIf(cudaProviderInstalled())("reports BACKEND_UNAVAILABLE when CUDA is demanded but missing", async () => {
    const backend = nodeBackend({ executionProvider: "cuda", log: () => {} });
    await expect(backend.createSession(readFileSync(join(fixture, "model.onnx")))).rejects.toMatchObject({ code: "BACKEND_UNAVAILABLE" });
  });

  it("opens a model whose weights are external data, passed by name in the session options", async () => {
    const [model, data] = [MATMUL_EXTERNAL, MATMUL_DATA];
    const backend = nodeBackend({ executionProvider: "cpu", log: () => {} });
    await expect(backend.createSession(model)).rejects.toMatchObject({ code: "BACKEND_UNAVAILABLE" });
    const session = await backend.createSession(model, { externalData: [{ path: "model.data", data }] });
    const out = await session.run({ x: tensor("float32", new Float32Array([1, 1]), [1, 2]) });
    expect(Array.from(out.y!.data as Float32Array)).toEqual([3, 5, 7]);
    await session.release();
  });

  it("opens a model file in place, its external data read beside it by onnxruntime", async () => {
    const dir = mkdtempSync(join(tmpdir(), "molorec-inplace-"));
    writeFileSync(join(dir, "model.onnx"), MATMUL_EXTERNAL);
    writeFileSync(join(dir, "model.data"), MATMUL_DATA);
    const file = await dirSource(dir).openFile!("model.onnx");
    expect(file.byteLength).toBe(MATMUL_EXTERNAL.byteLength);
    const session = await nodeBackend({ executionProvider: "cpu", log: () => {} }).createSession(file);
    const out = await session.run({ x: tensor("float32", new Float32Array([1, 1]), [1, 2]) });
    expect(Array.from(out.y!.data as Float32Array)).toEqual([3, 5, 7]);
    await session.release();
  });

  it("repacks weights below PREPACK_AUTO_LIMIT only, unless told; idle threads sleep unless told", () => {
    const off = { extra: { session: { disable_prepacking: "1" } } };
    expect(sessionTuning("auto", 10_000_000, true)).toEqual({});
    expect(sessionTuning("auto", PREPACK_AUTO_LIMIT, true)).toEqual(off);
    expect(sessionTuning(true, 2 ** 33, true)).toEqual({});
    expect(sessionTuning(false, 1000, true)).toEqual(off);
    expect(sessionTuning("auto", 1000)).toEqual({ extra: { session: { "intra_op.allow_spinning": "0" } } });
    expect(() => nodeBackend({ intraOpNumThreads: 0 })).toThrow(expect.objectContaining({ code: "INVALID_REQUEST" }));
  });

  it("reports a corrupt model as BACKEND_UNAVAILABLE with the runtime's reason", async () => {
    const pack = await loadPackFromDir(fixture);
    const broken = { ...pack, model: new Uint8Array([1, 2, 3, 4]) };
    await expect(
      createRecommender({ backend: nodeBackend({ executionProvider: "cpu", log: () => {} }), pack: broken }),
    ).rejects.toMatchObject({
      code: "BACKEND_UNAVAILABLE",
    });
  });
});

describe("pack loading from a directory", () => {
  function copy(): string {
    const dir = join(mkdtempSync(join(tmpdir(), "molorec-pack-")), "pack");
    mkdirSync(dir);
    cpSync(fixture, dir, { recursive: true });
    return dir;
  }

  it("holds the model as a file opened in place, not as bytes in JavaScript memory", async () => {
    const pack = await loadPackFromDir(fixture);
    expect(pack.model).not.toBeInstanceOf(Uint8Array);
    expect(pack.model).toMatchObject({ path: join(fixture, "model.onnx") });
    expect(pack.modelBytes).toBe(readFileSync(join(fixture, "model.onnx")).byteLength);
  });

  it("refuses paths that leave the pack", async () => {
    await expect(dirSource(fixture).readBytes("../tiny-pack.golden.json")).rejects.toThrow(/outside the pack/);
  });

  it.each([
    [
      "a missing model file",
      (d: string) =>
        writeFileSync(join(d, "molorec.json"), readFileSync(join(d, "molorec.json"), "utf8").replace('"model.onnx"', '"gone.onnx"')),
      "PACK_FILE_MISSING",
    ],
    ["a manifest that is not JSON", (d: string) => writeFileSync(join(d, "molorec.json"), "{nope"), "MALFORMED_PACK"],
    [
      "a truncated adapter",
      (d: string) => writeFileSync(join(d, "adapters/general/adapter_model.safetensors"), new Uint8Array(3)),
      "MALFORMED_PACK",
    ],
    ["a broken tokenizer", (d: string) => writeFileSync(join(d, "tokenizer.json"), "{}"), "MALFORMED_PACK"],
    [
      "a truncated model (read in place)",
      (d: string) => writeFileSync(join(d, "model.onnx"), readFileSync(join(d, "model.onnx")).subarray(0, 5000)),
      "MALFORMED_PACK",
    ],
    [
      "a model linked from outside the pack",
      (d: string) => {
        const outsideFile = join(d, "..", "elsewhere.onnx");
        cpSync(join(d, "model.onnx"), outsideFile);
        rmSync(join(d, "model.onnx"));
        symlinkSync(outsideFile, join(d, "model.onnx"));
      },
      "MALFORMED_PACK",
    ],
    [
      "a listed external-data file that is missing",
      (d: string) => {
        const m = JSON.parse(readFileSync(join(d, "molorec.json"), "utf8"));
        m.files.modelExternalData = ["model.onnx.data"];
        writeFileSync(join(d, "molorec.json"), JSON.stringify(m));
      },
      "PACK_FILE_MISSING",
    ],
  ])("reports %s with a code", async (_n, breakIt, code) => {
    const dir = copy();
    breakIt(dir);
    await expect(loadPackFromDir(dir)).rejects.toMatchObject({ code });
  });
});
