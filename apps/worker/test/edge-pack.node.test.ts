// The Worker as wrangler.jsonc deploys it by default — the committed edge pack (packs/edge: the
// distilled 3-layer student, every weight 4-bit) as static assets — and with the same pack compiled
// into the script (`--env bundled`), under `wrangler dev` (workerd) on 127.0.0.1, against the Node
// runtime on the same request: the pack runs unchanged in both, within the isolate's memory
// (docs/results.md, "Distilled edge packs").
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { createRecommender, type RecommendResponse, type Recommender } from "@molorec/core";
import { loadPackFromDir, nodeBackend } from "@molorec/runtime-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { memoryOf, startWranglerDev, type WranglerDev } from "./wrangler-dev.mjs";

const edgePack = fileURLToPath(new URL("../../../packs/edge", import.meta.url));
const request = JSON.parse(readFileSync(new URL("../../../examples/request.json", import.meta.url), "utf8")) as Record<string, unknown>;

let dev: WranglerDev;
let bundled: WranglerDev;
let node: Recommender;

beforeAll(async () => {
  const [a, b, n] = await Promise.allSettled([
    startWranglerDev(), // wrangler.jsonc as it is: no config override
    startWranglerDev({ environment: "bundled" }),
    loadPackFromDir(edgePack).then((pack) =>
      createRecommender({ backend: nodeBackend({ executionProvider: "cpu", log: () => {} }), pack }),
    ),
  ]);
  if (a.status === "fulfilled") dev = a.value;
  if (b.status === "fulfilled") bundled = b.value;
  if (n.status === "fulfilled") node = n.value;
  for (const r of [a, b, n]) if (r.status === "rejected") throw r.reason;
});

afterAll(async () => {
  await Promise.all([dev?.stop(), bundled?.stop()]);
  await node?.close();
});

async function recommend(url: string): Promise<RecommendResponse> {
  const res = await fetch(`${url}/v1/recommend`, {
    method: "POST",
    body: JSON.stringify(request),
    headers: { "content-type": "application/json" },
  });
  expect(res.status).toBe(200);
  return (await res.json()) as RecommendResponse;
}

function expectNodeAnswer(got: RecommendResponse, want: RecommendResponse): void {
  expect(got.ranked.map((r) => r.index)).toEqual(want.ranked.map((r) => r.index));
  got.ranked.forEach((r, i) =>
    expect(Math.abs(r.score - want.ranked[i]!.score)).toBeLessThanOrEqual(1e-4 * Math.max(1, Math.abs(want.ranked[i]!.score))),
  );
  expect(got.mixture).toEqual(want.mixture);
}

describe("packs/edge, the Worker's default pack, in wrangler dev (workerd)", () => {
  it("is what wrangler.jsonc serves (GET /v1/pack)", async () => {
    const res = await fetch(`${dev.url}/v1/pack`);
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ name: "molorec-edge", defaultDomain: "movies-ml100k" });
  });

  it("ranks examples/request.json as the Node runtime does (ranking, scores ≤ 1e-4), far inside the isolate's 128 MB", async () => {
    const pid = dev.workerdPid();
    const before = pid ? memoryOf(pid) : null;
    expectNodeAnswer(await recommend(dev.url), await node.recommend(request));
    const health = (await (await fetch(`${dev.url}/v1/health`)).json()) as { isolate: { wasmHeapMiB: number } };
    expect(health.isolate.wasmHeapMiB).toBeLessThan(48);
    // The isolate's memory (V8 heap + ArrayBuffers + wasm memory) stays under half the 128 MB limit.
    const heap = await dev.isolateHeap();
    const isolateMiB = heap.totalMiB + heap.backingStorageMiB + health.isolate.wasmHeapMiB;
    expect(isolateMiB).toBeLessThan(64);
    const rss =
      pid && before
        ? `; the Worker's workerd process: ${before.rssMiB.toFixed(0)} → peak ${memoryOf(pid).peakRssMiB.toFixed(0)} MiB RSS`
        : "";
    console.log(
      `packs/edge in the Worker: isolate ${isolateMiB.toFixed(1)} MiB (wasm ${health.isolate.wasmHeapMiB.toFixed(1)}, JS heap ${heap.totalMiB.toFixed(1)}, ArrayBuffers ${heap.backingStorageMiB.toFixed(1)})${rss}`,
    );
  });

  it("answers the same with the pack compiled into the script (--env bundled)", async () => {
    expectNodeAnswer(await recommend(bundled.url), await node.recommend(request));
    const health = (await (await fetch(`${bundled.url}/v1/health`)).json()) as { isolate: Record<string, number> };
    expect(health.isolate.sessionsCreated).toBe(1);
  });
});
