import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { beforeAll, describe, expect, it } from "vitest";
import type { InferenceBackend, InferenceSession } from "./backend.js";
import { scoreBatchedJobs } from "./batch-scoring.js";
import { isMolorecError } from "./errors.js";
import { LoraMixer, type AdapterWeights } from "./lora-mixture.js";
import { logSoftmaxAt } from "./math.js";
import { loadPack, type ModelPack } from "./pack.js";
import { buildCandidate, buildPrompt } from "./prompt.js";
import { createRecommender, type Recommender } from "./recommender.js";
import { scoreCandidates, type ScoreJob } from "./scoring.js";
import { tensor } from "./tensor.js";
import { cpuBackend } from "./test-fixtures.js";

// The fixture pack on onnxruntime-node's CPU provider (a dev dependency: core itself imports no
// runtime). Batched scores must equal one-job-at-a-time scores to 1e-5.
const fixture = fileURLToPath(new URL("../../../test/fixtures/tiny-pack", import.meta.url));
const golden = JSON.parse(
  await readFile(fileURLToPath(new URL("../../../test/fixtures/tiny-pack.golden.json", import.meta.url)), "utf8"),
) as {
  cases: Array<{ request: { history: string[]; candidates: string[] } }>;
};

const backend = cpuBackend;

/**
 * The real session plus the optional graph inputs (`num_logits_to_keep`, `target_ids` →
 * `token_logprobs`), computed from its full logits, so that the batched paths for packs exported
 * with them are checked against the same model. `acceptsEmptyTensors: false` too, optionally.
 */
function withExtras(inner: InferenceSession, opts: { extras: boolean; noEmpty: boolean }): InferenceSession {
  return {
    inputNames: opts.extras ? [...inner.inputNames, "num_logits_to_keep", "target_ids"] : inner.inputNames,
    outputNames: opts.extras ? [...inner.outputNames, "token_logprobs"] : inner.outputNames,
    ...(opts.noEmpty ? { acceptsEmptyTensors: false } : {}),
    async run(feeds, names) {
      for (const [name, t] of Object.entries(feeds))
        if (opts.noEmpty && t.data.length === 0) throw new Error(`zero-sized tensor fed: ${name}`);
      if (!opts.extras) return inner.run(feeds, names);
      const { num_logits_to_keep: keepT, target_ids: targetT, ...rest } = feeds;
      const wanted = (names ?? []).filter((n) => n !== "token_logprobs");
      const out = await inner.run(rest, [...new Set(["logits", ...wanted])]);
      const [B, S] = feeds.input_ids!.dims as [number, number];
      const V = out.logits!.dims[2]!;
      const k = Number((keepT!.data as BigInt64Array)[0]);
      const first = k > 0 ? Math.max(0, S - k) : 0;
      const kept = S - first;
      const full = out.logits!.data as Float32Array;
      const logits = new Float32Array(B * kept * V);
      const lp = new Float32Array(B * kept);
      for (let b = 0; b < B; b++) {
        for (let t = first; t < S; t++) {
          logits.set(full.subarray((b * S + t) * V, (b * S + t + 1) * V), (b * kept + t - first) * V);
          lp[b * kept + t - first] = logSoftmaxAt(full, (b * S + t) * V, V, Number((targetT!.data as BigInt64Array)[b * S + t]));
        }
      }
      return { ...out, logits: tensor("float32", logits, [B, kept, V]), token_logprobs: tensor("float32", lp, [B, kept]) };
    },
    release: () => inner.release(),
  };
}

function expectClose(got: number[][], want: number[][], tol = 1e-5): void {
  expect(got.length).toBe(want.length);
  got.forEach((row, m) => {
    expect(row.length).toBe(want[m]!.length);
    row.forEach((g, c) => {
      const w = want[m]![c]!;
      if (!(Math.abs(g - w) <= tol))
        throw new Error(`mixture ${m}, candidate ${c}: batched ${g}, alone ${w} (|diff| ${Math.abs(g - w).toExponential(2)})`);
    });
  });
}

let pack: ModelPack;
let session: InferenceSession;
let mixer: LoraMixer;
let jobs: ScoreJob[];

const G: AdapterWeights = [["general", 1]];
const D: AdapterWeights = [["domain:movies", 1]];
const mix = (l: number): AdapterWeights => [
  ["general", 1 - l],
  ["domain:movies", l],
];

beforeAll(async () => {
  pack = await loadPack({ location: fixture, readBytes: async (p) => new Uint8Array(await readFile(join(fixture, p))) });
  session = await backend.createSession(pack.model);
  mixer = new LoraMixer(pack);
  const spec = pack.manifest.prompt;
  const job = (history: string[], candidates: string[], mixtures: AdapterWeights[]): ScoreJob => ({
    promptIds: buildPrompt(pack.encoder, spec, history).ids,
    candidateIds: candidates.map((c) => buildCandidate(pack.encoder, spec, c)),
    mixtures,
  });
  const cs = golden.cases.map((c) => c.request);
  const long = cs.find((c) => c.history.length > 10)!;
  // Different prompt lengths, candidate counts (1 … all) and mixtures (base, single adapters,
  // 2-adapter mixtures, several mixtures per job as the adaptive policy sends).
  jobs = [
    job(cs[0]!.history, cs[0]!.candidates, [mix(0.5)]),
    job(cs[1]!.history.slice(0, 1), cs[1]!.candidates.slice(0, 1), [D]),
    job(long.history, long.candidates, [[], G, D, mix(0.3)]),
    job(cs[2]!.history.slice(0, 2), cs[2]!.candidates.slice(0, 3), [G]),
    job(cs[0]!.history, [...cs[0]!.candidates].reverse().slice(0, 4), [mix(0), mix(0.25), mix(0.5), mix(0.75), mix(1)]),
  ];
  expect(new Set(jobs.map((j) => j.promptIds.length)).size).toBeGreaterThanOrEqual(4);
});

describe("scoreBatchedJobs", () => {
  it("scores several jobs in shared runs exactly as each job alone (≤ 1e-5)", async () => {
    const alone = await Promise.all(jobs.map((j) => scoreCandidates(session, pack, mixer, j)));
    const batched = await scoreBatchedJobs(session, pack, mixer, jobs, { runCostTokens: Infinity });
    expect(batched.runs).toBe(2); // one prompt run, one candidate run for all jobs
    batched.results.forEach((r, j) => expectClose(r.scores, alone[j]!.scores));
    // Prompts of different lengths in runs of their own (less padding), same scores.
    const bucketed = await scoreBatchedJobs(session, pack, mixer, jobs, { runCostTokens: 0 });
    expect(bucketed.runs).toBeGreaterThan(2);
    bucketed.results.forEach((r, j) => expectClose(r.scores, alone[j]!.scores));
    const byDefault = await scoreBatchedJobs(session, pack, mixer, jobs);
    byDefault.results.forEach((r, j) => expectClose(r.scores, alone[j]!.scores));
    // and against one full pass per candidate
    const naive = await scoreCandidates(session, pack, mixer, jobs[2]!, { strategy: "naive" });
    expectClose(batched.results[2]!.scores, naive.scores);
  });

  it("splits prompt and candidate runs at maxBatchRows with the same scores", async () => {
    const alone = await Promise.all(jobs.map((j) => scoreCandidates(session, pack, mixer, j)));
    const batched = await scoreBatchedJobs(session, pack, mixer, jobs, { maxBatchRows: 3 });
    expect(batched.runs).toBeGreaterThan(2);
    batched.results.forEach((r, j) => expectClose(r.scores, alone[j]!.scores));
    const tight = await scoreBatchedJobs(session, pack, mixer, jobs, { maxPromptLogits: 1, maxCandidateLogits: 1 });
    tight.results.forEach((r, j) => expectClose(r.scores, alone[j]!.scores));
  });

  it.each([
    ["num_logits_to_keep + token_logprobs", { extras: true, noEmpty: false }],
    ["no zero-sized tensors (masked 1-token past)", { extras: false, noEmpty: true }],
    ["both", { extras: true, noEmpty: true }],
  ])("gives the same scores on graphs with %s", async (_name, opts) => {
    const alone = await Promise.all(jobs.map((j) => scoreCandidates(session, pack, mixer, j)));
    const batched = await scoreBatchedJobs(withExtras(session, opts), pack, mixer, jobs);
    batched.results.forEach((r, j) => expectClose(r.scores, alone[j]!.scores));
  });

  it("answers empty jobs with empty results and rejects a job that does not fit", async () => {
    const res = await scoreBatchedJobs(session, pack, mixer, [{ ...jobs[0]!, candidateIds: [] }, jobs[1]!]);
    expect(res.results[0]!.scores).toEqual([]);
    expect(res.results[1]!.scores[0]!.length).toBe(1);
    const tooLong = { ...jobs[0]!, promptIds: new Array(pack.manifest.model.maxPositions).fill(1) };
    await expect(scoreBatchedJobs(session, pack, mixer, [jobs[0]!, tooLong])).rejects.toMatchObject({ code: "HISTORY_TOO_LONG" });
  });
});

describe("Recommender.recommendBatch", () => {
  let rec: Recommender;
  beforeAll(async () => {
    rec = await createRecommender({ backend, pack });
  });

  it("answers each request as recommend does, with per-request errors", async () => {
    const cs = golden.cases.map((c) => c.request);
    const requests: unknown[] = [
      { ...cs[0], domain: "movies", mixture: "wa" },
      { history: cs[1]!.history.slice(0, 2), candidates: cs[1]!.candidates.slice(0, 2), mixture: "adaptive", topK: 1 },
      { history: [], candidates: ["x"] },
      { ...cs[2], domain: "cars" },
      { ...cs[3 % cs.length], mixture: { lambda: 0.8 } },
      { ...cs[0], mixture: "base" },
    ];
    const batched = await rec.recommendBatch(requests);
    for (const [i, body] of requests.entries()) {
      const alone = await rec.recommend(body).then(
        (value) => ({ status: "fulfilled" as const, value }),
        (reason: unknown) => ({ status: "rejected" as const, reason }),
      );
      const got = batched[i]!;
      expect(got.status).toBe(alone.status);
      if (got.status === "rejected" || alone.status === "rejected") {
        expect(isMolorecError((got as PromiseRejectedResult).reason)).toBe(true);
        expect((got as PromiseRejectedResult).reason.code).toBe((alone as PromiseRejectedResult).reason.code);
        continue;
      }
      const { ranked, entropy, ...rest } = got.value;
      const { ranked: wantRanked, entropy: wantEntropy, ...wantRest } = alone.value;
      expect(rest).toEqual(wantRest);
      expect(ranked.map((r) => r.index)).toEqual(wantRanked.map((r) => r.index));
      expectClose([ranked.map((r) => r.score)], [wantRanked.map((r) => r.score)]);
      expect(Math.abs(entropy - wantEntropy)).toBeLessThan(1e-5);
    }
    expect(batched.map((b) => b.status)).toEqual(["fulfilled", "fulfilled", "rejected", "rejected", "fulfilled", "fulfilled"]);
  });

  it("batches a request only with requests that use the same adapters (a run pays for all of them)", async () => {
    const ranks: number[] = [];
    const recording: InferenceBackend = {
      name: "recording",
      async createSession(model, options) {
        const s = await backend.createSession(model, options);
        return {
          ...s,
          run: (feeds, names) => {
            ranks.push(feeds.lora_scale!.dims[1]!);
            return s.run(feeds, names);
          },
        };
      },
    };
    const r = await createRecommender({ backend: recording, pack });
    ranks.length = 0; // the start-up probe run (base model, rank 1) is not a request's
    const cs = golden.cases.map((c) => c.request);
    const requests = [
      { ...cs[0], mixture: "domain" },
      { ...cs[1], mixture: "general" },
      { ...cs[2], mixture: "domain" },
      { ...cs[3 % cs.length], mixture: "general" },
    ];
    const batched = await r.recommendBatch(requests);
    const { general, "domain:movies": domain } = pack.manifest.adapters;
    // two groups (general only: rank 4; domain only: rank 8), never one run with both (rank 12)
    expect(new Set(ranks)).toEqual(new Set([general!.rank, domain!.rank]));
    expect(ranks.length).toBe(4); // per group: one prompt run and one candidate run
    for (const [i, body] of requests.entries()) {
      const got = batched[i]!;
      expect(got.status).toBe("fulfilled");
      const alone = await r.recommend(body);
      expect((got as PromiseFulfilledResult<typeof alone>).value.ranked.map((x) => x.index)).toEqual(alone.ranked.map((x) => x.index));
    }
    await r.close();
  });

  it("answers a batch of one exactly as recommend", async () => {
    const body = { ...golden.cases[0]!.request, mixture: "calibrated" };
    const [only] = await rec.recommendBatch([body]);
    expect(only).toEqual({ status: "fulfilled", value: await rec.recommend(body) });
    expect(await rec.recommendBatch([])).toEqual([]);
  });
});

describe("a grouped-KV-cache graph (test/fixtures/tiny-pack-grouped: same weights, scoring head)", () => {
  it("scores alone and in cross-request batches as the concat graph does (≤ 1e-5), with the prompt's cache fed once", async () => {
    const dir = fileURLToPath(new URL("../../../test/fixtures/tiny-pack-grouped", import.meta.url));
    const grouped = await loadPack({ location: dir, readBytes: async (p) => new Uint8Array(await readFile(join(dir, p))) });
    expect(grouped.manifest.model.kvCache).toBe("grouped");
    const inner = await backend.createSession(grouped.model);
    const pastBatches: number[] = [];
    const recording: InferenceSession = {
      ...inner,
      run(feeds, names) {
        const past = feeds["past_key_values.0.key"]!.dims;
        if (past[2]! > 0) pastBatches.push(past[0]!); // candidate runs (on the prompt's cache)
        return inner.run(feeds, names);
      },
    };
    const groupedMixer = new LoraMixer(grouped);
    for (const job of jobs) {
      const want = await scoreCandidates(session, pack, mixer, job);
      pastBatches.length = 0;
      const got = await scoreCandidates(recording, grouped, groupedMixer, job);
      expectClose(got.scores, want.scores);
      // one past row per mixture, however many candidate rows
      expect(pastBatches.length).toBe(got.runs - 1);
      expect(pastBatches.length).toBeGreaterThan(0);
      for (const b of pastBatches) expect(b).toBe(job.mixtures.length);
    }
    const want = await scoreBatchedJobs(session, pack, mixer, jobs);
    const shapes: Array<[rows: number, caches: number]> = [];
    const watching: InferenceSession = {
      ...inner,
      run(feeds, names) {
        const past = feeds["past_key_values.0.key"]!.dims;
        if (past[2]! > 0) shapes.push([feeds.input_ids!.dims[0]!, past[0]!]);
        return inner.run(feeds, names);
      },
    };
    const got = await scoreBatchedJobs(watching, grouped, groupedMixer, jobs);
    got.results.forEach((r, j) => expectClose(r.scores, want.results[j]!.scores));
    // Jobs with the same candidate count share runs with one cache per prompt row: every cache
    // serves a whole number of rows. (Mixed counts may take the per-row copies when cheaper.)
    // (equal lengths too, so that both plans pad alike and the grouped one is kept)
    const same = jobs
      .filter((j) => j.candidateIds.length >= 4)
      .map((j) => ({ ...j, candidateIds: j.candidateIds.slice(0, 4).map((c) => c.slice(0, 3)) }));
    const wantSame = await scoreBatchedJobs(session, pack, mixer, same);
    shapes.length = 0;
    const gotSame = await scoreBatchedJobs(watching, grouped, groupedMixer, same);
    gotSame.results.forEach((r, j) => expectClose(r.scores, wantSame.results[j]!.scores));
    for (const [rows, caches] of shapes) expect(rows % caches).toBe(0);
    expect(shapes.every(([rows, caches]) => caches < rows)).toBe(true);
    const totalRows = same.reduce((n, j) => n + j.mixtures.length * j.candidateIds.length, 0);
    expect(shapes.reduce((n, [rows]) => n + rows, 0)).toBe(totalRows);
    shapes.length = 0;
    const small = await scoreBatchedJobs(watching, grouped, groupedMixer, same, { maxBatchRows: 3 });
    small.results.forEach((r, j) => expectClose(r.scores, wantSame.results[j]!.scores));
    for (const [rows] of shapes) expect(rows).toBeLessThanOrEqual(3);
    // token_logprobs spares the transfer, not the graph's own vocabulary-wide logits: the budget
    // still bounds a candidate run's rows × positions × vocabulary.
    const positions: number[] = [];
    const counting: InferenceSession = {
      ...inner,
      run(feeds, names) {
        if (feeds["past_key_values.0.key"]!.dims[2]! > 0) positions.push(feeds.input_ids!.dims[0]! * feeds.input_ids!.dims[1]!);
        return inner.run(feeds, names);
      },
    };
    const V = grouped.manifest.model.vocabSize;
    const bounded = await scoreBatchedJobs(counting, grouped, groupedMixer, same, { maxCandidateLogits: 4 * V });
    bounded.results.forEach((r, j) => expectClose(r.scores, wantSame.results[j]!.scores));
    expect(positions.length).toBeGreaterThan(shapes.length);
    for (const n of positions) expect(n).toBeLessThanOrEqual(4);
    await inner.release();
  });
});

describe("a fan-out graph (test/fixtures/tiny-pack-fanout: LoRAs on layer 1 only, model.sharedLayers 1)", () => {
  it("scores cross-request batches as one full pass per candidate (≤ 1e-5), running layer 0 once per job and per (job, candidate)", async () => {
    const dir = fileURLToPath(new URL("../../../test/fixtures/tiny-pack-fanout", import.meta.url));
    const fan = await loadPack({ location: dir, readBytes: async (p) => new Uint8Array(await readFile(join(dir, p))) });
    expect(fan.manifest.model.sharedLayers).toBe(1);
    const inner = await backend.createSession(fan.model);
    const fanMixer = new LoraMixer(fan);
    // (sources, batch rows, shared-layer past rows, upper past rows) of every run
    const seen: Array<{ sources: number; rows: number; sharedPast: number; past: number }> = [];
    const watching: InferenceSession = {
      ...inner,
      run(feeds, names) {
        seen.push({
          sources: feeds.input_ids!.dims[0]!,
          rows: feeds.row_source!.dims[0]!,
          sharedPast: feeds["past_key_values.0.key"]!.dims[0]!,
          past: feeds["past_key_values.1.key"]!.dims[0]!,
        });
        return inner.run(feeds, names);
      },
    };
    // The same prompts and candidates (the fixture packs share a tokenizer), up to 5 mixtures a job.
    const alone = await Promise.all(jobs.map((j) => scoreCandidates(inner, fan, fanMixer, j, { strategy: "naive" })));
    for (const options of [{ runCostTokens: Infinity }, { runCostTokens: 0 }, {}, { maxBatchRows: 3 }]) {
      seen.length = 0;
      const got = await scoreBatchedJobs(watching, fan, fanMixer, jobs, options);
      got.results.forEach((r, j) => expectClose(r.scores, alone[j]!.scores));
      for (const s of seen) {
        expect(s.sources).toBeLessThanOrEqual(s.rows);
        expect(s.sharedPast).toBeLessThanOrEqual(s.past);
      }
      // Mixtures of a job share their sources: fewer source rows than batch rows overall.
      const sum = (k: "sources" | "rows") => seen.reduce((n, s) => n + s[k], 0);
      expect(sum("sources")).toBeLessThan(sum("rows"));
    }
    // One job, five mixtures (the adaptive policy's grid): the prompt runs once below layer 1, and
    // each candidate once; the grouped candidate run feeds one shared-layer cache row.
    seen.length = 0;
    const grid = jobs[4]!;
    const one = await scoreBatchedJobs(watching, fan, fanMixer, [grid], { runCostTokens: Infinity });
    expectClose(one.results[0]!.scores, alone[4]!.scores);
    expect(seen[0]).toEqual({ sources: 1, rows: 5, sharedPast: 1, past: 5 }); // empty pasts
    const n = grid.candidateIds.length;
    expect(seen[1]).toEqual({ sources: n, rows: 5 * n, sharedPast: 1, past: 5 });
    // The mixtures differ (the LoRAs are live in the fanned-out layer).
    expect(one.results[0]!.scores[0]).not.toEqual(one.results[0]!.scores[4]);
    // Token entropies from the graph's token_entropy output (no vocabulary-sized logits fetched),
    // equal to the naive scorer's, which computes them from full logits.
    const fetched: string[][] = [];
    const fetching: InferenceSession = {
      ...inner,
      run(feeds, names) {
        if (feeds["past_key_values.0.key"]!.dims[2]! > 0) fetched.push([...(names ?? [])]);
        return inner.run(feeds, names);
      },
    };
    const withEntropy = await scoreBatchedJobs(fetching, fan, fanMixer, jobs, { tokenEntropy: true });
    expect(fetched.length).toBeGreaterThan(0);
    for (const names of fetched) expect(names.sort()).toEqual(["token_entropy", "token_logprobs"]);
    for (const [j, job] of jobs.entries()) {
      const naive = await scoreCandidates(inner, fan, fanMixer, job, { strategy: "naive", tokenEntropy: true });
      expectClose(withEntropy.results[j]!.scores, naive.scores);
      expectClose(withEntropy.results[j]!.tokenEntropies!, naive.tokenEntropies!, 1e-4);
    }
    await inner.release();
  });
});
