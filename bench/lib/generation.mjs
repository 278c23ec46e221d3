// The paper's generation path, engine-independent parts: the listwise prompt (history, then the
// candidates, then the cue) and reading titles back out of generated text, matched to the
// candidates exactly or after normalisation. Used by bench/peers.mjs; tested in generation.test.mjs.

/**
 * The listwise prompt as token ids: the pack's prefix, one line per history title, `Candidates:`,
 * one line per candidate, the cue — the layout of bench/py_worker.py `listwise_prompt`, built from
 * core's `buildPrompt` so titles are tokenized exactly as in scoring (no history budget: every
 * title is listed).
 */
export function listwisePromptIds(core, encoder, spec, history, candidates) {
  const open = { ...spec, maxHistoryTokens: Number.POSITIVE_INFINITY, suffix: "Candidates:\n" };
  const close = { ...spec, maxHistoryTokens: Number.POSITIVE_INFINITY, prefix: "", bosTokenId: null };
  return [...core.buildPrompt(encoder, open, history).ids, ...core.buildPrompt(encoder, close, candidates).ids];
}

const ARTICLES = ["the", "a", "an", "les", "la", "le", "il", "el", "das", "der", "die"];

/**
 * A title reduced to what a reader would call the same title: Unicode-normalised, lower case, an
 * article moved back from MovieLens' trailing form ("Godfather, The (1972)" = "The Godfather
 * (1972)"), punctuation dropped, spaces collapsed. The year in brackets is kept (`year: false`
 * drops it).
 */
export function normaliseTitle(title, { year = true } = {}) {
  let t = String(title).normalize("NFKC").toLowerCase().trim();
  let y = "";
  const m = t.match(/\s*\((\d{4})\)\s*$/);
  if (m) {
    y = m[1];
    t = t.slice(0, m.index);
  }
  // "godfather, the" → "the godfather"; also "city of lost children, the"
  const trailing = t.match(new RegExp(`^(.*),\\s*(${ARTICLES.join("|")})$`));
  if (trailing) t = `${trailing[2]} ${trailing[1]}`;
  t = t
    .replace(/&/g, " and ")
    .replace(/[^\p{L}\p{N}]+/gu, " ")
    .trim()
    .replace(/\s+/g, " ");
  return year && y ? `${t} (${y})` : t;
}

/**
 * Titles in generated text, in order: one per line, list markers ("- ", "1. ", "* ") and quotes
 * removed, header lines ("Candidates:", "History:") and a leading "Next item:" cue skipped. When
 * generation stopped on its token limit (`truncated`), the last line is cut mid-title and is
 * dropped unless it is the only one.
 */
export function parseGeneratedTitles(text, { truncated = false } = {}) {
  const lines = String(text).split("\n");
  if (truncated && lines.length > 1) lines.pop();
  const titles = [];
  for (let line of lines) {
    line = line.trim().replace(/^next item:\s*/i, "");
    if (!line || /^[\p{L} ]+:$/u.test(line)) continue;
    line = line
      .replace(/^(?:[-*•]|\d+[.)])\s*/u, "")
      .replace(/\.$/, "")
      .replace(/^["'“”]+|["'“”]+$/gu, "")
      .trim();
    if (line) titles.push(line);
  }
  return titles;
}

/**
 * Which candidate a generated title names: `{ index, how }` with `how` "exact" (the same string,
 * trimmed), "normalised" ({@link normaliseTitle}), "title-only" (the same title with another or no
 * year: not a match, counted to show invented years), or `{ index: -1, how: null }`.
 */
export function matchTitle(title, candidates) {
  const t = String(title).trim();
  let i = candidates.findIndex((c) => c.trim() === t);
  if (i >= 0) return { index: i, how: "exact" };
  const n = normaliseTitle(t);
  i = candidates.findIndex((c) => normaliseTitle(c) === n);
  if (i >= 0) return { index: i, how: "normalised" };
  const bare = normaliseTitle(t, { year: false });
  i = candidates.findIndex((c) => normaliseTitle(c, { year: false }) === bare);
  if (i >= 0) return { index: i, how: "title-only" };
  return { index: -1, how: null };
}

/**
 * What one generation produced, for the table: the first title (the recommendation), whether it
 * matches a candidate (exactly, after normalisation) or repeats a history title, and how many of
 * all the titles it listed match no candidate.
 */
export function judgeGeneration(text, { history, candidates, truncated = false }) {
  const titles = parseGeneratedTitles(text, { truncated });
  const first = titles[0] ?? null;
  const m = first === null ? { index: -1, how: null } : matchTitle(first, candidates);
  const h = first === null ? null : matchTitle(first, history).how;
  const matched = (t) => {
    const how = matchTitle(t, candidates).how;
    return how === "exact" || how === "normalised";
  };
  return {
    titles: titles.length,
    first,
    exact: m.how === "exact",
    normalised: m.how === "exact" || m.how === "normalised",
    titleOnly: m.how === "title-only",
    inHistory: h === "exact" || h === "normalised",
    unmatchedTitles: titles.filter((t) => !matched(t)).length,
  };
}
