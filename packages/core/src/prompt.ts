import type { PromptSpec } from "./manifest.js";
import type { TextEncoder } from "./tokenizer.js";

/** Token ids of a request's prompt, and what the history budget dropped. */
export interface PromptTokens {
  ids: number[];
  /** Number of oldest history titles left out to fit `maxHistoryTokens`. */
  droppedHistoryItems: number;
}

function enc(encoder: TextEncoder, text: string): number[] {
  return text ? encoder.encode(text) : [];
}

/** A title's ids, cut to `maxTitleTokens`; `lead`: spaces moved in from the piece before it. */
export function titleIds(encoder: TextEncoder, spec: PromptSpec, title: string, lead = ""): number[] {
  return enc(encoder, lead + title).slice(0, spec.maxTitleTokens);
}

/**
 * A template piece that a title follows, as `[what is tokenized as the piece, what the title takes]`.
 * With `moveTrailingSpaces`, the piece's trailing spaces go to the title: byte-level BPE tokenizers
 * read a space as the start of the next word (`" Heat"` is one token), so `"- "` + `"Heat"` tokenized
 * apart would give a lone space and a title without its space, unlike running text.
 */
function beforeTitle(spec: PromptSpec, text: string): [string, string] {
  if (!spec.moveTrailingSpaces) return [text, ""];
  const body = text.replace(/ +$/, "");
  return [body, text.slice(body.length)];
}

/**
 * The prompt for a history (oldest first): prefix, one line per title, the cue. Each piece is
 * tokenized alone and the ids concatenated (as training/molorec_train/prompt.py does), so title
 * caps are exact and Python and TypeScript agree token for token; `moveTrailingSpaces` decides where
 * spaces between a template piece and a title go (docs/pack-format.md). The most recent title is
 * always kept; older ones are dropped once the budget is spent.
 */
export function buildPrompt(encoder: TextEncoder, spec: PromptSpec, history: readonly string[]): PromptTokens {
  const [preText, lead] = beforeTitle(spec, spec.itemPrefix);
  const pre = enc(encoder, preText);
  const suf = enc(encoder, spec.itemSuffix);
  const items: number[][] = [];
  let used = 0;
  for (let i = history.length - 1; i >= 0; i--) {
    const ids = [...pre, ...titleIds(encoder, spec, history[i]!, lead), ...suf];
    if (items.length > 0 && used + ids.length > spec.maxHistoryTokens) break;
    items.push(ids);
    used += ids.length;
  }
  const out: number[] = spec.bosTokenId === null ? [] : [spec.bosTokenId];
  out.push(...enc(encoder, spec.prefix));
  for (let i = items.length - 1; i >= 0; i--) out.push(...items[i]!);
  out.push(...enc(encoder, beforeTitle(spec, spec.suffix)[0]));
  return { ids: out, droppedHistoryItems: history.length - items.length };
}

/** The scored continuation of a candidate: prefix, capped title, end token (spaces the prompt's cue gave away come first). */
export function buildCandidate(encoder: TextEncoder, spec: PromptSpec, title: string): number[] {
  const [preText, lead] = beforeTitle(spec, beforeTitle(spec, spec.suffix)[1] + spec.candidatePrefix);
  return [...enc(encoder, preText), ...titleIds(encoder, spec, title, lead), spec.endTokenId];
}
