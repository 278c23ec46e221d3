import { Tokenizer } from "@huggingface/tokenizers";
import { MolorecError } from "./errors.js";

/** The only thing core needs from a tokenizer: text to ids, without special tokens. */
export interface TextEncoder {
  encode(text: string): number[];
}

/**
 * Wraps a Hugging Face `tokenizer.json` (and optional `tokenizer_config.json`) with
 * `@huggingface/tokenizers`, which runs unchanged in Node, browsers and workerd.
 * Encodings are memoised: history and candidate titles repeat across requests.
 */
export function createTextEncoder(tokenizerJson: unknown, tokenizerConfig: unknown = {}, cacheSize = 4096): TextEncoder {
  let tok: Tokenizer;
  try {
    tok = new Tokenizer(tokenizerJson as object, (tokenizerConfig ?? {}) as object);
  } catch (cause) {
    throw new MolorecError("MALFORMED_PACK", `tokenizer.json could not be loaded: ${(cause as Error).message}`, { cause });
  }
  const cache = new Map<string, number[]>();
  return {
    encode(text: string): number[] {
      const hit = cache.get(text);
      if (hit) return hit;
      const ids = tok.encode(text, { add_special_tokens: false }).ids;
      if (cache.size >= cacheSize) cache.delete(cache.keys().next().value as string);
      cache.set(text, ids);
      return ids;
    },
  };
}

/**
 * The largest token id a `tokenizer.json` can produce: the ids of its model's vocabulary (an
 * object of ids for BPE, WordPiece and WordLevel; a list, indexed by position, for Unigram) and of
 * its added tokens. Null when the file lists none it can read. Ids the model has no logits for
 * would fail every request that meets them, so {@link loadPack} compares this with the model's
 * vocabulary size.
 */
export function maxTokenId(tokenizerJson: unknown): number | null {
  let max = -1;
  const see = (id: unknown) => {
    if (typeof id === "number" && Number.isInteger(id) && id > max) max = id;
  };
  const json = (typeof tokenizerJson === "object" && tokenizerJson !== null ? tokenizerJson : {}) as {
    model?: { vocab?: unknown };
    added_tokens?: unknown;
  };
  const vocab = json.model?.vocab;
  if (Array.isArray(vocab)) max = Math.max(max, vocab.length - 1);
  else if (typeof vocab === "object" && vocab !== null) for (const id of Object.values(vocab)) see(id);
  if (Array.isArray(json.added_tokens)) for (const t of json.added_tokens) see((t as { id?: unknown } | null)?.id);
  return max < 0 ? null : max;
}
