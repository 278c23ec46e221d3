import { existsSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { createRecommender, type Recommender } from "@molorec/core";
import { loadPackFromDir, nodeBackend } from "@molorec/runtime-node";
import { afterAll, describe, expect, it } from "vitest";

// The packs the repository ships: the recipe's demo pack and the distilled 4-bit edge pack. Each
// must load and rank real held-out next items (the last item of each MovieLens user, which the
// recipe never trains on) far above chance (1 in 20). Needs ../shared/data (CI has it).
const root = fileURLToPath(new URL("../../", import.meta.url));
const data = process.env.MOLOREC_DATA ?? fileURLToPath(new URL("../../../shared/data", import.meta.url));
const movies = `${data}/movies-ml100k`;

function heldOutCases(n: number): Array<{ history: string[]; candidates: string[]; positive: number }> {
  const titles = new Map(
    readFileSync(`${movies}/items.tsv`, "utf8")
      .split("\n")
      .slice(1)
      .filter(Boolean)
      .map((l) => l.split("\t") as [string, string]),
  );
  const ids = [...titles.keys()];
  let s = 7;
  const rand = () => (s = (s * 1103515245 + 12345) % 2147483648) / 2147483648;
  const users = readFileSync(`${movies}/sequences.jsonl`, "utf8")
    .split("\n")
    .filter(Boolean)
    .map((l) => (JSON.parse(l) as { items: string[] }).items)
    .filter((items) => items.length >= 11);
  const out = [];
  for (let u = 0; u < users.length && out.length < n; u += Math.floor(users.length / n)) {
    const items = users[u]!;
    const seen = new Set(items);
    const negatives = new Set<string>();
    while (negatives.size < 19) {
      const id = ids[Math.floor(rand() * ids.length)]!;
      if (!seen.has(id)) negatives.add(id);
    }
    const candidates = [...negatives].map((id) => titles.get(id)!);
    const positive = Math.floor(rand() * 20);
    candidates.splice(positive, 0, titles.get(items.at(-1)!)!);
    out.push({ history: items.slice(-11, -1).map((id) => titles.get(id)!), candidates, positive });
  }
  return out;
}

describe.skipIf(!existsSync(movies))("the committed packs", () => {
  const open: Recommender[] = [];
  let heldOut: ReturnType<typeof heldOutCases> | null = null;
  afterAll(async () => Promise.all(open.map((r) => r.close())));

  for (const [dir, minHitRate] of [
    ["packs/demo", 0.1],
    ["packs/edge", 0.1],
  ] as const) {
    it(`${dir} ranks held-out MovieLens next items above chance (hit@1 ≥ ${minHitRate}, chance 0.05)`, async () => {
      const rec = await createRecommender({
        backend: nodeBackend({ executionProvider: "cpu", log: () => {} }),
        pack: await loadPackFromDir(`${root}${dir}`),
      });
      open.push(rec);
      const cases = (heldOut ??= heldOutCases(100));
      expect(cases.length).toBe(100);
      let hits = 0;
      for (const c of cases) {
        const res = await rec.recommend({ history: c.history, candidates: c.candidates, domain: "movies-ml100k", mixture: "calibrated" });
        expect(res.ranked.reduce((a, r) => a + r.probability, 0)).toBeCloseTo(1, 5);
        if (res.ranked[0]!.index === c.positive) hits++;
      }
      console.log(`${dir}: hit@1 ${hits} of ${cases.length}`);
      expect(hits / cases.length).toBeGreaterThanOrEqual(minHitRate);
    });
  }
});
