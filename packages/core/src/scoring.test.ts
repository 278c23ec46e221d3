import { describe, expect, it } from "vitest";
import type { InferenceSession } from "./backend.js";
import { LoraMixer } from "./lora-mixture.js";
import { parseManifest } from "./manifest.js";
import type { ModelPack } from "./pack.js";
import { scoreBatchedJobs } from "./batch-scoring.js";
import { entropy, softmax } from "./math.js";
import { scoreCandidates, type ScoringStrategy } from "./scoring.js";
import { tensor, type TensorLike } from "./tensor.js";

// A bigram "model": the logits at a position depend only on that position's token, so every
// strategy must give the same scores. It implements the optional graph inputs scoring.ts uses
// (num_logits_to_keep, target_ids → token_logprobs) to check them against the plain path.
const V = 11;
const table = Array.from({ length: V }, (_, a) => Array.from({ length: V }, (_, b) => Math.sin(3 * a + 7 * b) * 4));

const pack = {
  manifest: parseManifest({
    format: "molorec-pack",
    formatVersion: 1,
    name: "bigram",
    dtype: "float32",
    model: {
      architecture: "llama",
      numLayers: 1,
      numHeads: 1,
      numKvHeads: 1,
      headDim: 2,
      hiddenSize: 2,
      vocabSize: V,
      maxPositions: 64,
      kvCache: "concat",
      sharedLayers: 0,
    },
    files: { model: "model.onnx", tokenizer: "tokenizer.json" },
    lora: { targets: [{ module: "m", inFeatures: 2, outFeatures: 2, inputA: "lora.m.A", inputB: "lora.m.B" }], scaleInput: "lora_scale" },
    adapters: {},
    domains: {},
    prompt: { prefix: "", itemPrefix: "", itemSuffix: "", suffix: "", maxTitleTokens: 8, maxHistoryTokens: 32, endTokenId: 0 },
    limits: { maxCandidates: 64, maxHistoryItems: 8 },
  }),
  adapters: new Map(),
} as unknown as ModelPack;

function bigramSession(extras: boolean, fetched: string[][]): InferenceSession {
  const inputs = [
    "input_ids",
    "attention_mask",
    "position_ids",
    "past_key_values.0.key",
    "past_key_values.0.value",
    "lora.m.A",
    "lora.m.B",
    "lora_scale",
  ];
  const outputs = ["logits", "present.0.key", "present.0.value"];
  return {
    inputNames: extras ? [...inputs, "num_logits_to_keep", "target_ids"] : inputs,
    outputNames: extras ? [...outputs, "token_logprobs"] : outputs,
    async run(feeds, outputNames) {
      for (const name of this.inputNames) if (!(name in feeds)) throw new Error(`missing input ${name}`);
      fetched.push([...(outputNames ?? this.outputNames)]);
      const [B, S] = feeds.input_ids!.dims as [number, number];
      const ids = feeds.input_ids!.data as BigInt64Array;
      const k = extras ? Number((feeds.num_logits_to_keep!.data as BigInt64Array)[0]) : 0;
      const first = k > 0 ? Math.max(0, S - k) : 0;
      const kept = S - first;
      const logits = new Float32Array(B * kept * V);
      const logprobs = new Float32Array(B * kept);
      for (let b = 0; b < B; b++) {
        for (let t = first; t < S; t++) {
          const row = table[Number(ids[b * S + t])]!;
          logits.set(row, (b * kept + t - first) * V);
          if (extras) {
            const target = Number((feeds.target_ids!.data as BigInt64Array)[b * S + t]);
            const max = Math.max(...row);
            logprobs[b * kept + t - first] = row[target]! - max - Math.log(row.reduce((s, x) => s + Math.exp(x - max), 0));
          }
        }
      }
      const past = feeds["past_key_values.0.key"]!.dims[2]!;
      const present = tensor("float32", new Float32Array(B * (past + S) * 2), [B, 1, past + S, 2]);
      const all: Record<string, TensorLike> = {
        logits: tensor("float32", logits, [B, kept, V]),
        "present.0.key": present,
        "present.0.value": present,
        token_logprobs: tensor("float32", logprobs, [B, kept]),
      };
      return Object.fromEntries((outputNames ?? this.outputNames).map((n) => [n, all[n]!]));
    },
    async release() {},
  };
}

const job = {
  promptIds: [3, 1, 4, 1, 5],
  candidateIds: [
    [9, 2, 6, 0],
    [5, 0],
    [3, 5, 8, 9, 7, 0],
    [2, 0],
  ],
  mixtures: [[]],
};

async function scores(extras: boolean, strategy: ScoringStrategy, fetched: string[][] = []) {
  return scoreCandidates(bigramSession(extras, fetched), pack, new LoraMixer(pack), job, { strategy, maxBatchRows: 3 });
}

describe("scoreCandidates", () => {
  it("prefix and naive agree (a bigram model makes them equal)", async () => {
    const a = await scores(false, "prefix");
    const b = await scores(false, "naive");
    a.tokenLogProbs[0]!.forEach((lp, c) => lp.forEach((x, k) => expect(x).toBeCloseTo(b.tokenLogProbs[0]![c]![k]!, 12)));
    expect(a.runs).toBe(3); // the prompt, then two batches of at most 3 rows
    expect(b.runs).toBe(4);
  });

  it("uses num_logits_to_keep and token_logprobs when the graph has them, with the same scores", async () => {
    for (const strategy of ["prefix", "naive"] as const) {
      const fetched: string[][] = [];
      const plain = await scores(false, strategy);
      const fast = await scores(true, strategy, fetched);
      fast.scores[0]!.forEach((s, c) => expect(s).toBeCloseTo(plain.scores[0]![c]!, 5));
      // candidate runs fetch one float per token, never the logits
      const candidateRuns = strategy === "prefix" ? fetched.slice(1) : fetched;
      for (const f of candidateRuns) expect(f).toEqual(["token_logprobs"]);
    }
  });

  it("buckets candidates by length on request, with the same scores", async () => {
    const long = {
      ...job,
      candidateIds: [
        [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0],
        ...job.candidateIds,
      ],
    };
    const run = (bucketByLength: boolean) => scoreCandidates(bigramSession(false, []), pack, new LoraMixer(pack), long, { bucketByLength });
    const one = await run(false);
    const split = await run(true);
    expect(one.runs).toBe(2);
    expect(split.runs).toBe(3); // the long candidate alone: padding 4 short rows to 40 tokens costs more than a run
    split.scores[0]!.forEach((s, c) => expect(s).toBeCloseTo(one.scores[0]![c]!, 12));
  });

  it("plain graphs fetch only the logits of candidate runs (the candidates' KV cache is not read)", async () => {
    const fetched: string[][] = [];
    await scores(false, "prefix", fetched);
    expect(fetched[0]).toEqual(["logits", "present.0.key", "present.0.value"]);
    for (const f of fetched.slice(1)) expect(f).toEqual(["logits"]);
  });

  it("returns token entropies on request: the mean next-token entropy along each candidate, on every path", async () => {
    // Bigram: the distribution predicting a candidate token depends only on the token before it.
    const want = job.candidateIds.map((cand) => {
      const before = [job.promptIds[job.promptIds.length - 1]!, ...cand.slice(0, -1)];
      return before.reduce((h, t) => h + entropy(softmax(table[t]!)), 0) / cand.length;
    });
    for (const extras of [false, true]) {
      for (const strategy of ["prefix", "naive"] as const) {
        const fetched: string[][] = [];
        const res = await scoreCandidates(bigramSession(extras, fetched), pack, new LoraMixer(pack), job, {
          strategy,
          maxBatchRows: 3,
          tokenEntropy: true,
        });
        res.tokenEntropies![0]!.forEach((h, c) => expect(h).toBeCloseTo(want[c]!, 5));
        // entropies need whole distributions: even graphs with token_logprobs fetch logits here
        for (const f of fetched) expect(f[0]).toBe("logits");
        const plain = await scores(extras, strategy);
        res.scores[0]!.forEach((x, c) => expect(x).toBeCloseTo(plain.scores[0]![c]!, 5));
      }
      const batched = await scoreBatchedJobs(bigramSession(extras, []), pack, new LoraMixer(pack), [job, { ...job, promptIds: [7, 5] }], {
        maxBatchRows: 3,
        tokenEntropy: true,
      });
      for (const r of batched.results) r.tokenEntropies![0]!.forEach((h, c) => expect(h).toBeCloseTo(want[c]!, 5));
    }
    expect((await scores(false, "prefix")).tokenEntropies).toBeUndefined();
  });
});
