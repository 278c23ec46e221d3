// The cross-runtime conformance suite, run inside workerd (vitest-pool-workers) with the Worker
// backend, the pack given as bundled bytes (miniflare data blobs).
import { env } from "cloudflare:workers";
import { loadPack } from "@molorec/core";
import { createApp } from "@molorec/http";
import { bundledSource, cachedRecommender, openRecommender, r2Source, workerBackend } from "@molorec/runtime-worker";
import { describe, expect, it } from "vitest";
import { conformanceSuite } from "../../../test/conformance/suite.js";
// A CompiledWasm module, as in the Worker (src/index.ts).
import ortWasm from "onnxruntime-web/ort-wasm-simd-threaded.wasm";

const files: Record<string, ArrayBuffer> = Object.fromEntries(env.PACK_FILES.map((path, i) => [path, env[`PACK_FILE_${i}`]!]));

const groupedFiles: Record<string, ArrayBuffer> = Object.fromEntries(env.GROUPED_FILES.map((path, i) => [path, env[`GROUPED_FILE_${i}`]!]));

conformanceSuite({
  name: "workerd (onnxruntime-web wasm, compiled module)",
  backend: () => workerBackend({ wasmModule: ortWasm }),
  loadFixturePack: () => loadPack(bundledSource(files, "bundled:tiny-pack")),
});

conformanceSuite({
  name: "workerd (onnxruntime-web wasm), grouped KV cache + scoring head",
  backend: () => workerBackend({ wasmModule: ortWasm }),
  loadFixturePack: () => loadPack(bundledSource(groupedFiles, "bundled:tiny-pack-grouped")),
});

// Worker-specific checks share this file: each test file re-imports the 14 MB wasm module.
describe("runtime-worker in workerd", () => {
  const request = {
    history: ["The Silent River (1994)", "Electric Garden (2001)"],
    candidates: ["Broken Mirror (1999)", "Wild Orchestra (2004)", "Frozen Letter (1968)"],
    domain: "movies",
  };

  it("loads the pack from an R2 bucket binding, with the same answer as bundled bytes", async () => {
    for (const [path, data] of Object.entries(files)) await env.PACK_BUCKET.put(`packs/tiny/${path}`, data);
    const fromR2 = await openRecommender({ wasmModule: ortWasm, source: r2Source(env.PACK_BUCKET, "packs/tiny/") });
    const bundled = await openRecommender({ wasmModule: ortWasm, source: bundledSource(files) });
    expect(fromR2.pack.location).toBe("r2://packs/tiny");
    expect(await fromR2.recommend(request)).toEqual(await bundled.recommend(request));
    await expect(openRecommender({ wasmModule: ortWasm, source: r2Source(env.PACK_BUCKET, "packs/missing/") })).rejects.toMatchObject({
      code: "PACK_FILE_MISSING",
    });
    await Promise.all([fromR2.close(), bundled.close()]);
  });

  it("serves the HTTP API from one memoised recommender", async () => {
    let opened = 0;
    const getRecommender = cachedRecommender(async () => {
      opened++;
      return openRecommender({ wasmModule: ortWasm, source: bundledSource(files) });
    });
    const app = createApp({ getRecommender, health: () => ({ ...getRecommender.stats }) });
    const post = (body: string) => app.request("/v1/recommend", { method: "POST", body, headers: { "content-type": "application/json" } });
    const first = await post(JSON.stringify(request));
    expect(first.status).toBe(200);
    expect(((await first.json()) as { ranked: unknown[] }).ranked).toHaveLength(3);
    expect((await post("{not json")).status).toBe(400);
    expect((await post(JSON.stringify({ ...request, domain: "cars" }))).status).toBe(404);
    expect((await post(JSON.stringify({ ...request, candidates: [] }))).status).toBe(400);
    expect((await post(JSON.stringify({ ...request, candidates: ["x".repeat(2_000_000)] }))).status).toBe(413);
    expect((await post(JSON.stringify(request))).status).toBe(200);
    const health = (await (await app.request("/v1/health")).json()) as Record<string, unknown>;
    expect(health).toMatchObject({ status: "ok", recommendersCreated: 1, backend: "onnxruntime-web@1.30.0(wasm)" });
    expect(opened).toBe(1);
  });
});
