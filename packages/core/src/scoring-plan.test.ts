import { describe, expect, it } from "vitest";
import {
  type CandidateRun,
  descendingOrder,
  type PlanLimits,
  planGroupedRuns,
  planPerRowRuns,
  planPromptRuns,
  planRuns,
  planScoring,
  tokenCosts,
} from "./scoring-plan.js";

// Token costs where attention is cheap beside the rest: plans then follow padded tokens.
const limits = (over: Partial<PlanLimits> = {}): PlanLimits => ({
  maxRows: 64,
  runCostTokens: 32,
  maxPromptLogits: Infinity,
  maxCandidateLogits: Infinity,
  vocab: 100,
  costs: { token: 1000, key: 1 },
  ...over,
});

/** Every (prompt, candidate) pair of `fed` exactly once over the runs. */
function expectEachRowOnce(runs: readonly CandidateRun[], fed: ReadonlyArray<readonly number[]>): void {
  const seen = runs.flatMap((r) => r.rows.map((x) => `${x.prompt}:${x.candidate}`)).sort();
  const want = fed.flatMap((cs, p) => cs.map((_, c) => `${p}:${c}`)).sort();
  expect(seen).toEqual(want);
}

describe("tokenCosts", () => {
  it("counts projections, MLP and LM head per token, attention per key", () => {
    expect(tokenCosts({ hiddenSize: 2, vocabSize: 10, numLayers: 3, numHeads: 4, headDim: 5 })).toEqual({
      token: 3 * 12 * 4 + 2 * 10,
      key: 3 * 2 * 4 * 5,
    });
  });
});

describe("descendingOrder", () => {
  it("sorts indices by the first key descending, then the second, then by index", () => {
    expect(descendingOrder([3, 1, 3, 2, 1])).toEqual([0, 2, 3, 1, 4]);
    expect(descendingOrder([3, 1, 3, 2, 1], [0, 5, 9, 0, 6])).toEqual([2, 0, 3, 4, 1]);
    expect(descendingOrder([])).toEqual([]);
  });
});

describe("planRuns", () => {
  it("fills runs in order with an infinite run cost", () => {
    expect(planRuns([9, 8, 7, 6, 5], 2, Infinity)).toEqual([
      { start: 0, end: 2 },
      { start: 2, end: 4 },
      { start: 4, end: 5 },
    ]);
  });

  it("splits off a long row when the padding saved outweighs a run", () => {
    expect(planRuns([40, 5, 3, 1, 1], 64, 32)).toEqual([
      { start: 0, end: 1 },
      { start: 1, end: 5 },
    ]);
    expect(planRuns([6, 5, 3, 1, 1], 64, 32)).toEqual([{ start: 0, end: 5 }]);
  });
});

describe("planPromptRuns", () => {
  it("sorts prompt rows longest first, pads each run to its longest", () => {
    expect(planPromptRuns([10, 300, 12], limits())).toEqual([
      { rows: [1], width: 300 },
      { rows: [2, 0], width: 12 },
    ]);
    expect(planPromptRuns([10, 300, 12], limits({ runCostTokens: Infinity }))).toEqual([{ rows: [1, 2, 0], width: 300 }]);
  });

  it("bounds rows by maxRows and by the logits a run returns", () => {
    const sizes = (l: PlanLimits) => planPromptRuns([5, 5, 5], l).map((r) => r.rows.length);
    expect(sizes(limits({ maxRows: 2 })).sort()).toEqual([1, 2]);
    // 2 rows × 5 positions × 100 vocab = 1000 floats fit, 3 rows do not
    expect(sizes(limits({ maxPromptLogits: 1000 })).sort()).toEqual([1, 2]);
    expect(sizes(limits({ maxPromptLogits: 1499 })).sort()).toEqual([1, 2]);
    expect(sizes(limits())).toEqual([3]);
    expect(planPromptRuns([5], limits({ maxPromptLogits: 1 })).map((r) => r.rows.length)).toEqual([1]);
    expect(planPromptRuns([], limits())).toEqual([]);
  });
});

describe("planPerRowRuns", () => {
  it("covers every row once, in runs of at most maxRows, each on its own cache", () => {
    const fed = [
      [3, 1, 4],
      [1, 5],
      [9, 2, 6, 5],
    ];
    const { runs } = planPerRowRuns([7, 20, 3], fed, limits({ maxRows: 3 }));
    expectEachRowOnce(runs, fed);
    for (const run of runs) {
      expect(run.rows.length).toBeLessThanOrEqual(3);
      expect(run.caches).toBeNull();
    }
  });

  it("orders by prompt length when attention dominates, by suffix length otherwise", () => {
    // Two prompts of very different length, suffixes of two lengths crossing them.
    const prompts = [1000, 10];
    const fed = [
      [1, 8],
      [8, 1],
    ];
    const grouped = (l: PlanLimits) =>
      planPerRowRuns(prompts, fed, { ...l, maxRows: 2 }).runs.map((r) => r.rows.map((x) => x.prompt).sort());
    expect(grouped(limits({ costs: { token: 1000, key: 0.001 } }))).toEqual([
      [0, 1],
      [0, 1],
    ]); // by suffix: 8s together, 1s together
    expect(grouped(limits({ costs: { token: 1, key: 1000 } }))).toEqual([
      [0, 0],
      [1, 1],
    ]); // by prompt: the long prompt's keys attended by its own rows only
  });

  it("does not cost or run suffixes that are all empty (single-token candidates)", () => {
    const { runs, cost } = planPerRowRuns([5], [[0, 0, 0]], limits());
    expect(cost).toBe(0);
    expectEachRowOnce(runs, [[0, 0, 0]]);
  });

  it("keeps a run's logits under maxCandidateLogits (a lone row may exceed it)", () => {
    const fed = [[10, 10, 10, 10, 50]];
    const { runs } = planPerRowRuns([5], fed, limits({ maxCandidateLogits: 2000, runCostTokens: Infinity }));
    for (const run of runs) {
      const L = Math.max(...run.rows.map((r) => fed[r.prompt]![r.candidate]!));
      if (run.rows.length > 1) expect(run.rows.length * L * 100).toBeLessThanOrEqual(2000);
    }
    expectEachRowOnce(runs, fed);
  });
});

describe("planGroupedRuns", () => {
  it("feeds each cache once per run, serving the same number of consecutive rows", () => {
    const fed = [
      [3, 1, 4, 1],
      [5, 9, 2, 6],
      [5, 3, 5, 8],
    ];
    const { runs } = planGroupedRuns([30, 10, 20], fed, limits({ maxRows: 8 }));
    expectEachRowOnce(runs, fed);
    for (const run of runs) {
      const caches = run.caches!;
      const g = run.rows.length / caches.length;
      expect(Number.isInteger(g)).toBe(true);
      expect(run.rows.length).toBeLessThanOrEqual(8);
      run.rows.forEach((r, i) => expect(r.prompt).toBe(caches[Math.floor(i / g)]));
    }
  });

  it("keeps a unit's rows (a job's mixtures on a fan-out graph) in the same runs, within the bounds", () => {
    // Two jobs of 3 mixtures each and one of 2: rows 0-2, 3-5 and 6-7; the logits budget alone
    // would put one row per run.
    const job = (lengths: number[], n: number) => Array.from({ length: n }, () => lengths);
    const fed = [...job([3, 1, 4, 1], 3), ...job([5, 9, 2, 6], 3), ...job([2, 2, 7, 1], 2)];
    const prompts = [30, 30, 30, 10, 10, 10, 20, 20];
    const units = [0, 0, 0, 1, 1, 1, 2, 2];
    const bounds = limits({ maxRows: 8, maxCandidateLogits: 9 * 100 });
    const { runs } = planGroupedRuns(prompts, fed, bounds, units);
    expectEachRowOnce(runs, fed);
    for (const run of runs) {
      const caches = run.caches!;
      const g = run.rows.length / caches.length;
      run.rows.forEach((r, i) => expect(r.prompt).toBe(caches[Math.floor(i / g)]));
      // whole units only, and each unit's rows on the same candidates
      for (const u of new Set(caches.map((c) => units[c]!))) {
        const rows = caches.filter((c) => units[c] === u);
        expect(rows.length).toBe(units.filter((x) => x === u).length);
        const cands = rows.map((c) => run.rows.filter((r) => r.prompt === c).map((r) => r.candidate));
        for (const c of cands) expect(c).toEqual(cands[0]);
      }
      expect(run.rows.length).toBeLessThanOrEqual(8);
    }
    // Without units the budget splits the mixtures apart.
    const apart = planGroupedRuns(prompts, fed, bounds).runs;
    expect(apart.some((r) => r.caches!.length === 1)).toBe(true);
    // A unit larger than maxRows is planned row by row.
    const big = planGroupedRuns(prompts, fed, limits({ maxRows: 2 }), units);
    expectEachRowOnce(big.runs, fed);
    for (const run of big.runs) expect(run.rows.length).toBeLessThanOrEqual(2);
  });

  it("cuts one prompt row's candidates where a lone job's plan would (outlier alone)", () => {
    const fed = [[1, 40, 3, 5, 1]];
    const { runs } = planGroupedRuns([8], fed, limits());
    expect(runs.map((r) => r.rows.map((x) => x.candidate))).toEqual([[1], [3, 2, 0, 4]]);
    expect(runs.every((r) => r.caches!.length === 1)).toBe(true);
  });

  it("plans a lone prompt row as planRuns plans its candidates, ties going to fewer runs", () => {
    // Deterministic pseudo-random suffix lengths (an LCG), sorted longest first as both plan them.
    let seed = 7;
    const next = () => (seed = (seed * 48271) % 2147483647) / 2147483647;
    const demo = limits({ costs: tokenCosts({ hiddenSize: 128, vocabSize: 2048, numLayers: 4, numHeads: 4, headDim: 32 }) });
    // A demo-pack request of 50 titles whose padding nearly ties between 3 and 4 runs.
    const titles = [24, 23, 19, 19, 15, 12, 12, 12, ...Array(7).fill(11), ...Array(6).fill(10), ...Array(6).fill(9), ...Array(4).fill(8)];
    const near = [...titles, ...Array(10).fill(7), ...Array(8).fill(6), 5];
    expect(planGroupedRuns([149], [near], demo).runs.map((r) => r.rows.length)).toEqual([5, 26, 19]);
    for (let trial = 0; trial < 50; trial++) {
      const fed = Array.from({ length: 5 + Math.floor(next() * 95) }, () => 1 + Math.floor(next() * next() * 30)).sort((a, b) => b - a);
      const want = planRuns(fed, 64, 32).map(({ start, end }) => end - start);
      const got = planGroupedRuns([150], [fed], demo).runs.map((r) => r.rows.length);
      expect(got).toEqual(want);
    }
  });

  it("puts prompt rows with different candidate counts in different runs", () => {
    const { runs } = planGroupedRuns([5, 5], [[2, 2], [2]], limits());
    for (const run of runs) expect(new Set(run.rows.map((r) => r.prompt)).size).toBe(1);
  });
});

describe("planScoring", () => {
  it("keeps the grouped plan for a lone job (nothing cheaper to gain)", () => {
    const plan = planScoring(
      {
        prompts: [20, 20],
        fed: [
          [4, 2, 7],
          [4, 2, 7],
        ],
        grouped: true,
      },
      limits(),
    );
    expect(plan.promptRuns).toEqual([{ rows: [0, 1], width: 20 }]);
    expect(plan.candidateRuns.every((r) => r.caches !== null)).toBe(true);
  });

  it("falls back to per-row caches when grouping is clearly dearer", () => {
    // One row per candidate count: grouped needs a run per row, per-row caches need one run.
    const fed = [[2], [2, 2], [2, 2, 2], [2, 2, 2, 2]];
    const plan = planScoring({ prompts: [9, 9, 9, 9], fed, grouped: true }, limits());
    expect(plan.candidateRuns).toHaveLength(1);
    expect(plan.candidateRuns[0]!.caches).toBeNull();
    expect(planGroupedRuns([9, 9, 9, 9], fed, limits()).runs).toHaveLength(4);
  });

  it("plans as few runs as the bounds allow with an infinite run cost", () => {
    const fed = [[40, 1, 1, 1, 1, 1, 1, 1]];
    expect(planScoring({ prompts: [5], fed, grouped: false }, limits({ runCostTokens: Infinity })).candidateRuns).toHaveLength(1);
    expect(planScoring({ prompts: [5], fed, grouped: true }, limits({ runCostTokens: Infinity })).candidateRuns).toHaveLength(1);
    expect(planScoring({ prompts: [5], fed, grouped: false }, limits()).candidateRuns).toHaveLength(2);
  });
});
