// The cross-runtime conformance suite, run inside workerd (vitest-pool-workers) with the Worker
// backend, the pack given as bundled bytes (miniflare data blobs).
import { env } from "cloudflare:workers";
import { createRecommender, loadPack } from "@molorec/core";
import { createApp } from "@molorec/http";
import { bundledSource, cachedRecommender, openRecommender, r2Source, workerBackend } from "@molorec/runtime-worker";
import { describe, expect, it } from "vitest";
import { conformanceSuite } from "../../../test/conformance/suite.js";
import fanoutGolden from "../../../test/fixtures/tiny-pack-fanout.golden.json" with { type: "json" };
import { hostilePacks, protoNamedPack } from "../../../test/hostile/packs.js";
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

const fanoutFiles: Record<string, ArrayBuffer> = Object.fromEntries(env.FANOUT_FILES.map((path, i) => [path, env[`FANOUT_FILE_${i}`]!]));

conformanceSuite({
  name: "workerd (onnxruntime-web wasm), fan-out (shared lower layer)",
  backend: () => workerBackend({ wasmModule: ortWasm }),
  loadFixturePack: () => loadPack(bundledSource(fanoutFiles, "bundled:tiny-pack-fanout")),
  golden: fanoutGolden,
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

describe("workerBackend in workerd, concurrently", () => {
  it("opens two recommenders at once (each probes its model on the shared wasm instance) and serves both", async () => {
    // Without workerBackend's queue, one probe ran while the other model was opening and failed
    // with "Unexpected input data type".
    const packs = await Promise.all([files, groupedFiles].map((f) => loadPack(bundledSource(f))));
    const recs = await Promise.all(packs.map((pack) => createRecommender({ backend: workerBackend({ wasmModule: ortWasm }), pack })));
    const request = { history: ["The Silent River (1994)"], candidates: ["Broken Mirror (1999)", "Wild Orchestra (2004)"] };
    const [a, b, c, d] = await Promise.all([...recs, ...recs].map((r) => r.recommend(request)));
    expect(c).toEqual(a);
    expect(d).toEqual(b);
    await Promise.all(recs.map((r) => r.close()));
  });
});

// Hostile packs (test/hostile/packs.ts) opened inside workerd: each is a coded error when the
// Worker loads it, answered as JSON by every route, never a served pack.
describe("hostile packs in workerd", () => {
  const fixture = Object.fromEntries(Object.entries(files).map(([path, data]) => [path, new Uint8Array(data)]));
  const request = { history: ["The Silent River (1994)"], candidates: ["Broken Mirror (1999)", "Wild Orchestra (2004)"] };

  it.each(hostilePacks(fixture).map((p) => [p.name, p] as const))("refuses %s", async (_name, p) => {
    await expect(openRecommender({ wasmModule: ortWasm, source: bundledSource(p.files) })).rejects.toMatchObject({
      name: "MolorecError",
      code: p.code,
      message: expect.stringMatching(p.message),
    });
  });

  it("answers every route with the coded load error, every time", async () => {
    const p = hostilePacks(fixture).find((x) => x.name === "more layers than the graph")!;
    const getRecommender = cachedRecommender(() => openRecommender({ wasmModule: ortWasm, source: bundledSource(p.files) }));
    const app = createApp({ getRecommender, onError: () => {} });
    for (let i = 0; i < 2; i++) {
      for (const res of [
        await app.request("/v1/health"),
        await app.request("/v1/recommend", {
          method: "POST",
          body: JSON.stringify(request),
          headers: { "content-type": "application/json" },
        }),
      ]) {
        expect(res.status).toBe(500);
        expect(((await res.json()) as { error: { code: string } }).error.code).toBe("MALFORMED_PACK");
      }
    }
    expect(getRecommender.stats).toMatchObject({ recommendersCreated: 0, loadFailures: 4 });
  });

  it("serves a pack whose domain and adapter are called __proto__ as the fixture serves movies", async () => {
    const renamed = await openRecommender({ wasmModule: ortWasm, source: bundledSource(protoNamedPack(fixture)) });
    const original = await openRecommender({ wasmModule: ortWasm, source: bundledSource(fixture) });
    const got = await renamed.recommend({ ...request, domain: "__proto__", mixture: "domain" });
    expect(got.ranked).toEqual((await original.recommend({ ...request, domain: "movies", mixture: "domain" })).ranked);
    await expect(original.recommend({ ...request, domain: "__proto__" })).rejects.toMatchObject({ code: "UNKNOWN_DOMAIN" });
    await Promise.all([renamed.close(), original.close()]);
  });
});
