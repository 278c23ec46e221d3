import { describe, expect, it } from "vitest";
import type { PromptSpec } from "./manifest.js";
import { buildCandidate, buildPrompt } from "./prompt.js";

// One id per character: makes budgets easy to reason about.
const encoder = { encode: (t: string) => Array.from(t, (c) => c.charCodeAt(0)) };
const spec: PromptSpec = {
  prefix: "P",
  itemPrefix: "-",
  itemSuffix: ";",
  suffix: ">",
  candidatePrefix: "",
  maxTitleTokens: 3,
  maxHistoryTokens: 10,
  bosTokenId: 1,
  endTokenId: 0,
  scoreNormalization: "mean",
};
const text = (ids: number[]) => ids.map((i) => (i < 32 ? `<${i}>` : String.fromCharCode(i))).join("");

describe("buildPrompt", () => {
  it("renders bos, prefix, capped titles oldest first, and the cue", () => {
    expect(text(buildPrompt(encoder, spec, ["abcdef", "xy"]).ids)).toBe("<1>P-abc;-xy;>");
  });

  it("drops the oldest titles to fit the budget but always keeps the newest", () => {
    const p = buildPrompt(encoder, spec, ["aaa", "bbb", "ccc"]); // 5 tokens per item, budget 10
    expect(text(p.ids)).toBe("<1>P-bbb;-ccc;>");
    expect(p.droppedHistoryItems).toBe(1);
    const tight = buildPrompt(encoder, { ...spec, maxHistoryTokens: 2 }, ["aaa", "bbb"]);
    expect(text(tight.ids)).toBe("<1>P-bbb;>");
  });
});

describe("buildCandidate", () => {
  it("caps the title and appends the end token", () => {
    expect(text(buildCandidate(encoder, { ...spec, candidatePrefix: " " }, "abcdef"))).toBe(" abc<0>");
  });
});
