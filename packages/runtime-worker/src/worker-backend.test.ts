import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { createRecommender, loadPack } from "@molorec/core";
import { describe, expect, it } from "vitest";
import { bundledSource } from "./sources.js";
import { sessionsCreatedInIsolate, wasmHeapBytes, workerBackend } from "./worker-backend.js";

const packDir = fileURLToPath(new URL("../../../test/fixtures/tiny-pack/", import.meta.url));
const golden = JSON.parse(await readFile(new URL("../../../test/fixtures/tiny-pack.golden.json", import.meta.url), "utf8")) as {
  cases: Array<{ request: Record<string, unknown>; scores: number[]; ranking: number[] }>;
};
const FILES = [
  "molorec.json",
  "model.onnx",
  "tokenizer.json",
  "tokenizer_config.json",
  "adapters/general/adapter_model.safetensors",
  "adapters/domain-movies/adapter_model.safetensors",
];

// Node may compile wasm from bytes, so this checks the compiled-module shim without workerd;
// the workerd run of the conformance suite lives in apps/worker.
describe("workerBackend (in Node, module compiled here)", () => {
  it("instantiates onnxruntime-web from a precompiled module and reproduces the golden scores", async () => {
    const wasmPath = createRequire(import.meta.url).resolve("onnxruntime-web/ort-wasm-simd-threaded.wasm");
    const wasmModule = await WebAssembly.compile(await readFile(wasmPath));
    const files = Object.fromEntries(await Promise.all(FILES.map(async (f) => [f, new Uint8Array(await readFile(packDir + f))] as const)));
    const backend = workerBackend({ wasmModule });
    const original = WebAssembly.instantiate;
    const rec = await createRecommender({ backend, pack: await loadPack(bundledSource(files)) });
    // the shim served the sentinel (ORT never compiled bytes) and removed itself
    expect(WebAssembly.instantiate).toBe(original);
    expect(String(Object.getOwnPropertyDescriptor(WebAssembly, "instantiate")?.value)).toMatch(/native code/);
    expect(rec.backendName).toMatch(/^onnxruntime-web@1\.30\.0\(wasm\)$/);
    for (const c of golden.cases.slice(0, 3)) {
      const res = await rec.recommend(c.request);
      expect(res.ranked.map((r) => r.index)).toEqual(c.ranking);
      for (const r of res.ranked)
        expect(Math.abs(r.score - c.scores[r.index]!)).toBeLessThan(1e-4 * Math.max(1, Math.abs(c.scores[r.index]!)));
    }
    expect(backend.sessionsCreated).toBe(1);
    expect(sessionsCreatedInIsolate()).toBe(1);
    // ORT's heap starts at 16 MiB (256 pages) and grows in whole pages
    expect(wasmHeapBytes()).toBeGreaterThanOrEqual(16 * 1024 * 1024);
    expect(wasmHeapBytes()! % 65536).toBe(0);
    await rec.close();
  });

  it("says what to pass when the wasm module is missing", async () => {
    const backend = workerBackend({ wasmModule: undefined as unknown as WebAssembly.Module });
    await expect(backend.createSession(new Uint8Array(1))).rejects.toMatchObject({
      code: "BACKEND_UNAVAILABLE",
      message: expect.stringMatching(/CompiledWasm/),
    });
  });
});
