// node --test bench/lib/generation.test.mjs (run by scripts/test-all.sh)
import assert from "node:assert/strict";
import { test } from "node:test";
import { judgeGeneration, matchTitle, normaliseTitle, parseGeneratedTitles } from "./generation.mjs";

const candidates = ["Godfather, The (1972)", "Fargo (1996)", "Star Wars (1977)", "Lion King, The (1994)", "Sense and Sensibility (1995)"];

test("normaliseTitle moves MovieLens' trailing article and drops punctuation and case", () => {
  assert.equal(normaliseTitle("Godfather, The (1972)"), "the godfather (1972)");
  assert.equal(normaliseTitle("The Godfather (1972)"), "the godfather (1972)");
  assert.equal(normaliseTitle("  STAR WARS:  (1977) "), "star wars (1977)");
  assert.equal(normaliseTitle("Sense & Sensibility (1995)"), "sense and sensibility (1995)");
  assert.equal(normaliseTitle("Fargo (1996)", { year: false }), "fargo");
});

test("matchTitle: exact, normalised, same title with another year, none", () => {
  assert.deepEqual(matchTitle("Fargo (1996)", candidates), { index: 1, how: "exact" });
  assert.deepEqual(matchTitle("The Godfather (1972)", candidates), { index: 0, how: "normalised" });
  assert.deepEqual(matchTitle("The Lion King (1993)", candidates), { index: 3, how: "title-only" });
  assert.deepEqual(matchTitle("Titanic (1997)", candidates), { index: -1, how: null });
});

test("parseGeneratedTitles reads list lines, skips headers, drops a line cut by the token limit", () => {
  const text = "Star Wars (1977)\n- Fargo (1996)\nCandidates:\n2. Babe (1995)\n- Toy Sto";
  assert.deepEqual(parseGeneratedTitles(text, { truncated: true }), ["Star Wars (1977)", "Fargo (1996)", "Babe (1995)"]);
  assert.deepEqual(parseGeneratedTitles(text).at(-1), "Toy Sto");
  // a single line cut by the limit is still the answer
  assert.deepEqual(parseGeneratedTitles(" Return of the Je", { truncated: true }), ["Return of the Je"]);
  assert.deepEqual(parseGeneratedTitles('Next item: "Fargo (1996)".'), ["Fargo (1996)"]);
  assert.deepEqual(parseGeneratedTitles("\n\n"), []);
});

test("judgeGeneration: the first title decides; history repeats and invented years are counted", () => {
  const history = ["Toy Story (1995)", "Babe (1995)"];
  const j = judgeGeneration("Toy Story (1995)\n- The Lion King (1993)\n- Fargo (1996)", { history, candidates });
  assert.deepEqual(j, {
    titles: 3,
    first: "Toy Story (1995)",
    exact: false,
    normalised: false,
    titleOnly: false,
    inHistory: true,
    unmatchedTitles: 2,
  });
  const k = judgeGeneration("The Godfather (1972)\n", { history, candidates });
  assert.equal(k.normalised, true);
  assert.equal(k.exact, false);
  assert.equal(judgeGeneration("", { history, candidates }).first, null);
});
