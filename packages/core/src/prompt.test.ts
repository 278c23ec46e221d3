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
  moveTrailingSpaces: false,
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

describe("moveTrailingSpaces", () => {
  const spaced: PromptSpec = { ...spec, itemPrefix: "- ", suffix: "> ", moveTrailingSpaces: true };

  it("gives a template piece's trailing spaces to the title after it", () => {
    expect(text(buildPrompt(encoder, spaced, ["ab", "cd"]).ids)).toBe("<1>P- ab;- cd;>");
    // the spaces are part of the title's piece: they count against maxTitleTokens
    expect(text(buildPrompt(encoder, spaced, ["abcdef"]).ids)).toBe("<1>P- ab;>");
  });

  it("moves the cue's trailing spaces into every candidate", () => {
    expect(text(buildCandidate(encoder, spaced, "xy"))).toBe(" xy<0>");
    expect(text(buildCandidate(encoder, { ...spaced, candidatePrefix: "= " }, "xy"))).toBe(" = xy<0>");
  });

  it("tokenizes pieces like the running text with a tokenizer that reads a space as the start of a word", () => {
    // A toy word-level tokenizer in the byte-level BPE manner: " word" is one token.
    const vocab = new Map<string, number>();
    const words = {
      encode: (t: string) => (t.match(/ ?[^ ]+| +/g) ?? []).map((w) => vocab.get(w) ?? vocab.set(w, vocab.size + 100).get(w)!),
    };
    const s: PromptSpec = {
      ...spec,
      prefix: "Seen:",
      itemPrefix: " - ",
      itemSuffix: " ;",
      suffix: " Next: ",
      maxTitleTokens: 8,
      maxHistoryTokens: 99,
      bosTokenId: null,
    };
    const history = ["Heat (1995)", "Ronin (1998)"];
    const running = "Seen: - Heat (1995) ; - Ronin (1998) ; Next: Babe (1995)";
    const moved = { ...s, moveTrailingSpaces: true };
    const pieces = [...buildPrompt(words, moved, history).ids, ...buildCandidate(words, moved, "Babe (1995)").slice(0, -1)];
    expect(pieces).toEqual(words.encode(running));
    const kept = [...buildPrompt(words, s, history).ids, ...buildCandidate(words, s, "Babe (1995)").slice(0, -1)];
    expect(kept).not.toEqual(words.encode(running));
  });
});

describe("the space rule agrees with training/molorec_train/prompt.py (test/fixtures/prompt-spaces.golden.json)", async () => {
  const { readFile } = await import("node:fs/promises");
  const { fileURLToPath } = await import("node:url");
  const { createTextEncoder } = await import("./tokenizer.js");
  const read = async (rel: string) => JSON.parse(await readFile(fileURLToPath(new URL(rel, import.meta.url)), "utf8"));
  const golden = await read("../../../test/fixtures/prompt-spaces.golden.json");
  const tok = createTextEncoder(await read("../../../test/fixtures/tiny-pack/tokenizer.json"));
  const goldenSpec = golden.spec as PromptSpec;

  it.each(golden.cases as Array<{ history: string[]; candidates: string[]; promptIds: number[]; candidateIds: number[][] }>)(
    "history $history",
    (c) => {
      expect(buildPrompt(tok, goldenSpec, c.history).ids).toEqual(c.promptIds);
      expect(c.candidates.map((t) => buildCandidate(tok, goldenSpec, t))).toEqual(c.candidateIds);
    },
  );
});
