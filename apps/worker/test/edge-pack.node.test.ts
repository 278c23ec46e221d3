// The committed edge pack (packs/edge: the distilled 3-layer student, every weight 4-bit) served
// by the Worker as deployed — `wrangler dev` (workerd) on 127.0.0.1, the pack as static assets —
// against the Node runtime on the same request: the pack runs unchanged in both, within the
// isolate's memory (docs/results.md, "Distilled edge packs").
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { createRecommender, type RecommendResponse, type Recommender } from "@molorec/core";
import { loadPackFromDir, nodeBackend } from "@molorec/runtime-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { configForPack, memoryOf, startWranglerDev, type WranglerDev } from "./wrangler-dev.mjs";

const edgePack = fileURLToPath(new URL("../../../packs/edge", import.meta.url));
const request = JSON.parse(readFileSync(new URL("../../../examples/request.json", import.meta.url), "utf8")) as Record<string, unknown>;

let dev: WranglerDev;
let node: Recommender;

beforeAll(async () => {
  const [a, n] = await Promise.allSettled([
    startWranglerDev({ configPath: configForPack(edgePack, mkdtempSync(join(tmpdir(), "molorec-edge-"))) }),
    loadPackFromDir(edgePack).then((pack) =>
      createRecommender({ backend: nodeBackend({ executionProvider: "cpu", log: () => {} }), pack }),
    ),
  ]);
  if (a.status === "fulfilled") dev = a.value;
  if (n.status === "fulfilled") node = n.value;
  for (const r of [a, n]) if (r.status === "rejected") throw r.reason;
});

afterAll(async () => {
  await dev?.stop();
  await node?.close();
});

describe("packs/edge in wrangler dev (workerd)", () => {
  it("ranks examples/request.json as the Node runtime does (ranking, scores ≤ 1e-4), far inside the isolate's 128 MB", async () => {
    const pid = dev.workerdPid();
    const before = pid ? memoryOf(pid) : null;
    const res = await fetch(`${dev.url}/v1/recommend`, {
      method: "POST",
      body: JSON.stringify(request),
      headers: { "content-type": "application/json" },
    });
    expect(res.status).toBe(200);
    const got = (await res.json()) as RecommendResponse;
    const want = await node.recommend(request);
    expect(got.ranked.map((r) => r.index)).toEqual(want.ranked.map((r) => r.index));
    got.ranked.forEach((r, i) =>
      expect(Math.abs(r.score - want.ranked[i]!.score)).toBeLessThanOrEqual(1e-4 * Math.max(1, Math.abs(want.ranked[i]!.score))),
    );
    expect(got.mixture).toEqual(want.mixture);
    const health = (await (await fetch(`${dev.url}/v1/health`)).json()) as { isolate: { wasmHeapMiB: number } };
    expect(health.isolate.wasmHeapMiB).toBeLessThan(48);
    if (pid && before) expect(memoryOf(pid).peakRssMiB - before.rssMiB).toBeLessThan(96);
  });
});
