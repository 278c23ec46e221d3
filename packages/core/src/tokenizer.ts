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
