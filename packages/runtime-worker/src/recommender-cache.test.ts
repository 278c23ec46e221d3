import type { Recommender } from "@molorec/core";
import { describe, expect, it } from "vitest";
import { cachedRecommender } from "./recommender-cache.js";

describe("cachedRecommender", () => {
  it("opens once per isolate, shares a pending load and counts cache hits", async () => {
    let opened = 0;
    const rec = { backendName: "fake" } as Recommender;
    const get = cachedRecommender(async (env: { n: number }) => {
      opened++;
      expect(env.n).toBe(1);
      return rec;
    });
    const [a, b] = await Promise.all([get({ n: 1 }), get({ n: 1 })]);
    expect(await get({ n: 1 })).toBe(rec);
    expect(a).toBe(rec);
    expect(b).toBe(rec);
    expect(opened).toBe(1);
    expect(get.stats).toMatchObject({ recommendersCreated: 1, cacheHits: 2, loadFailures: 0 });
    expect(get.stats.lastLoadMs).toBeGreaterThanOrEqual(0);
  });
  it("keeps a load alive past the request that started it (ctx.waitUntil)", async () => {
    const waited: Promise<unknown>[] = [];
    const ctx = { waitUntil: (p: Promise<unknown>) => waited.push(p) };
    const get = cachedRecommender(async () => ({ backendName: "fake" }) as Recommender);
    await Promise.all([get(undefined, ctx), get(undefined, ctx)]);
    expect(waited).toHaveLength(1);
  });

  it("does not cache a failed load", async () => {
    let calls = 0;
    const get = cachedRecommender(async () => {
      if (++calls === 1) throw new Error("R2 down");
      return { backendName: "fake" } as Recommender;
    });
    await expect(get(undefined)).rejects.toThrow("R2 down");
    await expect(get(undefined)).resolves.toMatchObject({ backendName: "fake" });
    expect(get.stats).toMatchObject({ recommendersCreated: 1, loadFailures: 1 });
  });
});
