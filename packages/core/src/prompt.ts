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

/** A title's ids, cut to `maxTitleTokens`. */
export function titleIds(encoder: TextEncoder, spec: PromptSpec, title: string): number[] {
  return enc(encoder, title).slice(0, spec.maxTitleTokens);
}

/**
 * The prompt for a history (oldest first): prefix, one line per title, the cue. Each piece is
 * tokenized alone and the ids concatenated (as training/molorec_train/prompt.py does), so title
 * caps are exact and Python and TypeScript agree token for token. The most recent title is
 * always kept; older ones are dropped once the budget is spent.
 */
export function buildPrompt(encoder: TextEncoder, spec: PromptSpec, history: readonly string[]): PromptTokens {
  const pre = enc(encoder, spec.itemPrefix);
  const suf = enc(encoder, spec.itemSuffix);
  const items: number[][] = [];
  let used = 0;
  for (let i = history.length - 1; i >= 0; i--) {
    const ids = [...pre, ...titleIds(encoder, spec, history[i]!), ...suf];
    if (items.length > 0 && used + ids.length > spec.maxHistoryTokens) break;
    items.push(ids);
    used += ids.length;
  }
  const out: number[] = spec.bosTokenId === null ? [] : [spec.bosTokenId];
  out.push(...enc(encoder, spec.prefix));
  for (let i = items.length - 1; i >= 0; i--) out.push(...items[i]!);
  out.push(...enc(encoder, spec.suffix));
  return { ids: out, droppedHistoryItems: history.length - items.length };
}

/** The scored continuation of a candidate: prefix, capped title, end token. */
export function buildCandidate(encoder: TextEncoder, spec: PromptSpec, title: string): number[] {
  return [...enc(encoder, spec.candidatePrefix), ...titleIds(encoder, spec, title), spec.endTokenId];
}
