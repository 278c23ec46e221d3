import { describe, expect, it } from "vitest";
import { searchLambda } from "./lambda-search.js";
import { entropy, logitsEntropy, logSoftmaxAt, rankByScore, softmax } from "./math.js";
import { RankingMetrics, ndcgAtK, rankOf } from "./metrics.js";

describe("math", () => {
  it("log-softmax and softmax agree with the definitions", () => {
    const x = new Float32Array([1, 2, 3, 0, 1000, 1001]);
    expect(logSoftmaxAt(x, 0, 3, 2)).toBeCloseTo(3 - Math.log(Math.exp(1) + Math.exp(2) + Math.exp(3)), 6);
    expect(logSoftmaxAt(x, 3, 3, 2)).toBeCloseTo(-Math.log(1 + Math.exp(-1)), 6); // stable for large logits
    expect(softmax([0, Math.log(3)])).toEqual([0.25, 0.75].map((v) => expect.closeTo(v, 12)) as unknown as number[]);
  });

  it("entropy is log(n) for uniform and 0 for one-hot", () => {
    expect(entropy([0.25, 0.25, 0.25, 0.25])).toBeCloseTo(Math.log(4), 12);
    expect(entropy([1, 0, 0])).toBe(0);
  });

  it("entropy of logits equals the entropy of their softmax, also for large logits", () => {
    const x = new Float32Array([9, 0.5, -2, 3, 1000, 1001, 1002]);
    expect(logitsEntropy(x, 0, 4)).toBeCloseTo(entropy(softmax(Array.from(x.subarray(0, 4)))), 10);
    expect(logitsEntropy(x, 4, 3)).toBeCloseTo(entropy(softmax([0, 1, 2])), 10);
    expect(logitsEntropy(new Float32Array(5), 0, 5)).toBeCloseTo(Math.log(5), 10);
  });

  it("ranks by descending score with stable ties", () => {
    expect(rankByScore([0.1, 0.5, 0.5, -1])).toEqual([1, 2, 0, 3]);
  });
});

describe("metrics", () => {
  it("NDCG and HR for one relevant item", () => {
    expect(ndcgAtK(0, 1)).toBe(1);
    expect(ndcgAtK(1, 1)).toBe(0);
    expect(ndcgAtK(1, 3)).toBeCloseTo(1 / Math.log2(3), 12);
    expect(rankOf([0.1, 0.9, 0.5], 2)).toBe(1);
    const m = new RankingMetrics();
    m.add(0);
    m.add(2);
    m.add(5);
    expect(m.summary()).toMatchObject({ count: 3, ndcg1: 1 / 3, hr3: 2 / 3 });
    expect(m.summary().ndcg3).toBeCloseTo((1 + 0.5) / 3, 12);
  });
});

describe("searchLambda", () => {
  it("finds the minimum of a smooth objective to within the final grid step", async () => {
    const calls: number[][] = [];
    const res = await searchLambda(async (ls) => {
      calls.push(ls);
      return ls.map((l) => (l - 0.37) ** 2);
    });
    expect(Math.abs(res.lambda - 0.37)).toBeLessThan(0.02);
    expect(calls[0]).toHaveLength(11); // all λ of a round are evaluated as one batch
    expect(new Set(res.evaluated.map((e) => e.lambda)).size).toBe(res.evaluated.length); // nothing evaluated twice
  });

  it("handles a minimum on the boundary", async () => {
    const res = await searchLambda(async (ls) => ls.map((l) => l));
    expect(res.lambda).toBe(0);
  });
});
