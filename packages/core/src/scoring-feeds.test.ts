import { describe, expect, it } from "vitest";
import { logSoftmaxAt } from "./math.js";
import {
  type CacheSlot,
  candidateLogProbs,
  type FeedContext,
  firstToken,
  type PromptCache,
  pastFeeds,
  sequenceFeeds,
  suffixFeeds,
  suffixLength,
} from "./scoring-feeds.js";
import { tensor } from "./tensor.js";

const ctx = (over: Partial<FeedContext> = {}): FeedContext => ({
  numLayers: 1,
  numKvHeads: 1,
  headDim: 1,
  vocab: 4,
  padId: 9,
  pastPad: 0,
  keep: false,
  targetInput: false,
  targets: false,
  entropyOutput: false,
  presentNames: ["present.0.key", "present.0.value"],
  pastNames: ["past_key_values.0.key", "past_key_values.0.value"],
  sharedLayers: 0,
  ...over,
});

const ints = (t: { data: unknown }) => Array.from(t.data as BigInt64Array, Number);

describe("sequenceFeeds", () => {
  it("left-pads rows, counts positions from each row's first token, masks the pad and the dummy past slot", () => {
    const f = sequenceFeeds(ctx({ pastPad: 1, keep: true, targetInput: true }), [[5, 6, 7], [8]], 3, 1);
    expect(ints(f.input_ids!)).toEqual([5, 6, 7, 9, 9, 8]);
    expect(ints(f.position_ids!)).toEqual([0, 1, 2, 0, 0, 0]);
    expect(ints(f.attention_mask!)).toEqual([0, 1, 1, 1, 0, 0, 0, 1]);
    expect(f["past_key_values.0.key"]!.dims).toEqual([2, 1, 1, 1]);
    expect(ints(f.num_logits_to_keep!)).toEqual([1]);
    expect(ints(f.target_ids!)).toEqual([0, 0, 0, 0, 0, 0]);
  });

  it("feeds the given targets, and only the inputs the graph has", () => {
    const f = sequenceFeeds(ctx({ targetInput: true }), [[1, 2]], 2, 0, [[2, 3]]);
    expect(ints(f.target_ids!)).toEqual([2, 3]);
    expect(f.num_logits_to_keep).toBeUndefined();
    expect(f["past_key_values.0.key"]!.dims).toEqual([1, 1, 0, 1]);
  });
});

describe("suffixFeeds", () => {
  it("right-pads suffixes after each row's own prompt, positions continuing from it", () => {
    const rows = [
      { promptLength: 3, tokens: [1, 2, 3] },
      { promptLength: 2, tokens: [4, 5] },
    ];
    expect(suffixLength(rows)).toBe(2);
    const f = suffixFeeds(ctx({ targetInput: true, keep: true }), rows, 3, 2);
    expect(ints(f.input_ids!)).toEqual([1, 2, 4, 9]);
    expect(ints(f.position_ids!)).toEqual([3, 4, 2, 3]);
    // past width 3 (row 2's prompt is its last 2), then 2 suffix slots
    expect(ints(f.attention_mask!)).toEqual([1, 1, 1, 1, 1, 0, 1, 1, 1, 0]);
    expect(ints(f.target_ids!)).toEqual([2, 3, 5, 0]);
    expect(ints(f.num_logits_to_keep!)).toEqual([0]);
  });
});

describe("pastFeeds", () => {
  // Two prompt rows of width 3 (kv heads 1, head dim 1): row 0 holds 10 11 12, row 1 20 21 22.
  const present = [tensor("float32", new Float32Array([10, 11, 12, 20, 21, 22]), [2, 1, 3, 1])];
  const cache: PromptCache = { present: [present[0]!, present[0]!], width: 3 };
  const slot = (row: number, length: number): CacheSlot => ({ cache, row, length });

  it("feeds a whole unpadded prompt run as it is", () => {
    const f = pastFeeds(ctx(), [slot(0, 3), slot(1, 3)], 3);
    expect(f["past_key_values.0.key"]).toBe(present[0]);
  });

  it("feeds consecutive unpadded rows as a view of the present outputs", () => {
    const f = pastFeeds(ctx(), [slot(1, 3)], 3);
    const data = f["past_key_values.0.key"]!.data as Float32Array;
    expect(Array.from(data)).toEqual([20, 21, 22]);
    expect(data.buffer).toBe(present[0]!.data.buffer);
  });

  it("copies and re-aligns anything else to end at the run's width", () => {
    // row 1 holds a 2-token prompt (left-padded: its valid positions are 21 22), fed twice
    const f = pastFeeds(ctx(), [slot(1, 2), slot(1, 2), slot(0, 3)], 3);
    expect(Array.from(f["past_key_values.0.value"]!.data as Float32Array)).toEqual([0, 21, 22, 0, 21, 22, 10, 11, 12]);
    const wider = pastFeeds(ctx(), [slot(0, 3)], 4);
    expect(Array.from(wider["past_key_values.0.key"]!.data as Float32Array)).toEqual([0, 10, 11, 12]);
  });
});

describe("candidateLogProbs", () => {
  const promptLogits = new Float32Array([0, 1, 2, 3]);
  const first = firstToken(promptLogits, 0, 4, true);

  it("reads the first token from the prompt's last position and the rest from the run's logits", () => {
    const out = new Float32Array([3, 2, 1, 0, 9, 9, 9, 9]); // row 0: one fed position, then padding
    const lp = candidateLogProbs(ctx(), first, out, 0, 2, [2, 0]);
    expect(lp[0]).toBeCloseTo(logSoftmaxAt(promptLogits, 0, 4, 2), 12);
    expect(lp[1]).toBeCloseTo(logSoftmaxAt(out, 0, 4, 0), 12);
    expect(first.entropy).toBeGreaterThan(0);
  });

  it("reads log-probs directly from token_logprobs", () => {
    const lp = candidateLogProbs(ctx({ targets: true }), first, new Float32Array([-7, -8, -0.5, -1]), 1, 2, [1, 3, 3]);
    expect(lp.slice(1)).toEqual([-0.5, -1]);
  });
});

describe("feeds of a fan-out graph (model.sharedLayers)", () => {
  const fan = ctx({
    numLayers: 2,
    sharedLayers: 1,
    presentNames: ["present.0.key", "present.0.value", "present.1.key", "present.1.value"],
    pastNames: ["past_key_values.0.key", "past_key_values.0.value", "past_key_values.1.key", "past_key_values.1.value"],
  });

  it("feeds tokens per source, row_source per batch row, and empty pasts with source rows below the split", () => {
    const f = sequenceFeeds(fan, [[5, 6], [7]], 2, 1, undefined, [0, 0, 1]);
    expect(f.input_ids!.dims).toEqual([2, 2]);
    expect(ints(f.row_source!)).toEqual([0, 0, 1]);
    expect(f["past_key_values.0.key"]!.dims).toEqual([2, 1, 0, 1]);
    expect(f["past_key_values.1.value"]!.dims).toEqual([3, 1, 0, 1]);
    // Without row sources, each row is its own source.
    expect(ints(sequenceFeeds(fan, [[5], [6]], 1, 1).row_source!)).toEqual([0, 1]);
    const s = suffixFeeds(fan, [{ promptLength: 1, tokens: [3, 4] }], 1, 1, [0, 0]);
    expect(s.input_ids!.dims).toEqual([1, 1]);
    expect(ints(s.row_source!)).toEqual([0, 0]);
    // A graph without fan-out takes no row_source.
    expect(sequenceFeeds(ctx(), [[5]], 1, 1).row_source).toBeUndefined();
  });

  it("feeds the past of a layer range from the present of that range", () => {
    const present = [0, 1, 2, 3].map((i) => tensor("float32", new Float32Array([10 * i, 10 * i + 1]), [2, 1, 1, 1]));
    const cache = { present, width: 1 };
    const upper = pastFeeds(fan, [{ cache, row: 1, length: 1 }], 1, 1);
    expect(Object.keys(upper)).toEqual(["past_key_values.1.key", "past_key_values.1.value"]);
    expect(Array.from(upper["past_key_values.1.value"]!.data as Float32Array)).toEqual([31]);
    const lower = pastFeeds(
      fan,
      [
        { cache, row: 0, length: 1 },
        { cache, row: 1, length: 1 },
      ],
      1,
      0,
      1,
    );
    expect(Object.keys(lower)).toEqual(["past_key_values.0.key", "past_key_values.0.value"]);
    expect(lower["past_key_values.0.key"]).toBe(present[0]); // the whole present: a view
  });
});
