/**
 * Feeds and outputs of the scoring engine's model runs, over named rows. A pack's graph takes
 * `input_ids`, `attention_mask` (past + new positions), `position_ids`, a past key and value per
 * layer and the LoRA inputs, and returns `logits` and a present key and value per layer.
 */
import type { InferenceSession } from "./backend.js";
import { MolorecError } from "./errors.js";
import { kvNames } from "./manifest.js";
import { logitsEntropy, logSoftmaxAt, logSumExp } from "./math.js";
import type { ModelPack } from "./pack.js";
import { int64, tensor, type TensorLike } from "./tensor.js";

/**
 * What feeds are built against: the cache shape, and the optional graph inputs that spare the
 * scorer work (packs without them score the same way, only slower). `num_logits_to_keep` (int64
 * [1], 0 = all): logits of the last k positions only, so a prompt run returns one row of logits,
 * not P. `target_ids` [batch, seq] with output `token_logprobs` [batch, kept]: the graph returns
 * log p(target) per position, so candidate runs fetch one float per token instead of a
 * vocabulary-sized row (training: export_onnx options).
 */
export interface FeedContext {
  numLayers: number;
  numKvHeads: number;
  headDim: number;
  vocab: number;
  /** Token of padded positions (masked out). */
  padId: number;
  /**
   * Past slots a prompt run starts from: 0 (an empty past), or 1 for sessions that cannot take
   * zero-sized tensors, a dummy slot that `attention_mask` = 0 hides, so scores are unchanged.
   */
  pastPad: number;
  /** The graph takes `num_logits_to_keep`. */
  keep: boolean;
  /** The graph takes `target_ids` (they must be fed). */
  targetInput: boolean;
  /** Candidate runs fetch `token_logprobs` rather than `logits`. */
  targets: boolean;
  /**
   * Token entropies come from the graph's `token_entropy` output (one float per position) rather
   * than from vocabulary-sized logits.
   */
  entropyOutput: boolean;
  /** Present outputs, one key and one value per layer, in that order; past inputs likewise. */
  presentNames: string[];
  pastNames: string[];
  /**
   * `model.sharedLayers`: layers whose inputs, past and present have one row per source (the graph
   * takes `row_source`); 0 when the graph does not fan out.
   */
  sharedLayers: number;
}

/**
 * `wantEntropy`: the caller needs token entropies: from the graph's `token_entropy` output when it
 * has one (and `graphEntropy`), else from full next-token distributions (logits).
 */
export function feedContext(session: InferenceSession, pack: ModelPack, wantEntropy: boolean, graphEntropy = true): FeedContext {
  const { numLayers, numKvHeads, headDim, vocabSize } = pack.manifest.model;
  const targetInput = session.inputNames.includes("target_ids") && session.outputNames.includes("token_logprobs");
  const entropyOutput = wantEntropy && graphEntropy && targetInput && session.outputNames.includes("token_entropy");
  const presentNames: string[] = [];
  const pastNames: string[] = [];
  for (let i = 0; i < numLayers; i++) {
    presentNames.push(kvNames.presentKey(i), kvNames.presentValue(i));
    pastNames.push(kvNames.pastKey(i), kvNames.pastValue(i));
  }
  return {
    numLayers,
    numKvHeads,
    headDim,
    vocab: vocabSize,
    padId: pack.manifest.prompt.endTokenId,
    pastPad: session.acceptsEmptyTensors === false ? 1 : 0,
    keep: session.inputNames.includes("num_logits_to_keep"),
    targetInput,
    targets: targetInput && (!wantEntropy || entropyOutput),
    entropyOutput,
    presentNames,
    pastNames,
    sharedLayers: pack.manifest.model.sharedLayers,
  };
}

/** A past of `rows` rows and `pastPad` slots (none, or the masked dummy slot). */
function emptyPast(ctx: FeedContext, rows: number): TensorLike {
  const D = ctx.pastPad;
  return tensor("float32", new Float32Array(rows * ctx.numKvHeads * D * ctx.headDim), [rows, ctx.numKvHeads, D, ctx.headDim]);
}

/**
 * The `row_source` feed of a fan-out graph (`rowSource`, or each of `sources` rows its own source);
 * returns the batch size. Other graphs take no row sources (callers pass them only for fan-out).
 */
function rowSourceFeed(ctx: FeedContext, feeds: Record<string, TensorLike>, sources: number, rowSource?: readonly number[]): number {
  if (ctx.sharedLayers === 0) return sources;
  let src = rowSource;
  if (!src) {
    const identity: number[] = [];
    for (let b = 0; b < sources; b++) identity.push(b);
    src = identity;
  }
  feeds.row_source = int64(src, [src.length]);
  return src.length;
}

/** Runs the session, reporting any runtime failure as `INFERENCE_FAILED`. */
export async function runModel(
  session: InferenceSession,
  feeds: Record<string, TensorLike>,
  outputNames?: readonly string[],
): Promise<Record<string, TensorLike>> {
  try {
    return await session.run(feeds, outputNames);
  } catch (cause) {
    throw new MolorecError("INFERENCE_FAILED", `the model run failed: ${(cause as Error)?.message ?? cause}`, { cause });
  }
}

/**
 * Feeds of a run from an empty past: each row's tokens left-padded to `width` (padding hidden by
 * `attention_mask`, positions counted from the row's own first token, so each row computes what
 * it would alone and every row's last token sits at the same position). `keep`: positions whose
 * logits come back (0 = all); `targets`: per row, the token each position predicts. On a fan-out
 * graph, `rows` are sources and `rowSource[b]` the source of batch row b (default: one row each).
 */
export function sequenceFeeds(
  ctx: FeedContext,
  rows: ReadonlyArray<readonly number[]>,
  width: number,
  keep: number,
  targets?: ReadonlyArray<readonly number[]>,
  rowSource?: readonly number[],
): Record<string, TensorLike> {
  const B = rows.length;
  const D = ctx.pastPad;
  const ids = new Array<number>(B * width).fill(ctx.padId);
  const pos = new Array<number>(B * width).fill(0);
  const mask = new Array<number>(B * (D + width)).fill(0);
  const tgt = new Array<number>(B * width).fill(0);
  for (const [b, row] of rows.entries()) {
    const pad = width - row.length;
    for (let t = 0; t < row.length; t++) {
      ids[b * width + pad + t] = row[t]!;
      pos[b * width + pad + t] = t;
      mask[b * (D + width) + D + pad + t] = 1;
      if (targets) tgt[b * width + pad + t] = targets[b]![t]!;
    }
  }
  const feeds: Record<string, TensorLike> = {
    input_ids: int64(ids, [B, width]),
    attention_mask: int64(mask, [B, D + width]),
    position_ids: int64(pos, [B, width]),
  };
  const batch = rowSourceFeed(ctx, feeds, B, rowSource);
  // Loops, not per-call closures (see batch-scoring.ts): this runs once per prompt run.
  const empty = emptyPast(ctx, batch);
  const emptyShared = batch === B ? empty : emptyPast(ctx, B);
  for (let i = 0; i < ctx.pastNames.length; i++) feeds[ctx.pastNames[i]!] = i < 2 * ctx.sharedLayers ? emptyShared : empty;
  if (ctx.keep) feeds.num_logits_to_keep = int64([keep], [1]);
  if (ctx.targetInput) feeds.target_ids = int64(tgt, [B, width]);
  return feeds;
}

/** One row of a candidate run: a candidate after its prompt's cache. */
export interface SuffixRow {
  /** Valid tokens of the prompt whose cache the row attends; its positions continue from there. */
  promptLength: number;
  /** The candidate's tokens: all but the last are fed, each one the target of the one before. */
  tokens: readonly number[];
}

/** Longest fed suffix of a run (0: nothing to feed, no model run). */
export function suffixLength(rows: readonly SuffixRow[]): number {
  let L = 0;
  for (const r of rows) L = Math.max(L, r.tokens.length - 1);
  return L;
}

/**
 * Feeds of a candidate run, apart from its past: suffixes right-padded to `L`, after a past of
 * `width` positions whose last `promptLength` are each row's prompt. On a fan-out graph, `rows`
 * are sources and `rowSource[b]` the source of batch row b (default: one row each).
 */
export function suffixFeeds(
  ctx: FeedContext,
  rows: readonly SuffixRow[],
  width: number,
  L: number,
  rowSource?: readonly number[],
): Record<string, TensorLike> {
  const B = rows.length;
  const W = width + L;
  const ids = new Array<number>(B * L).fill(ctx.padId);
  const pos = new Array<number>(B * L).fill(0);
  const mask = new Array<number>(B * W).fill(0);
  const tgt = new Array<number>(B * L).fill(0);
  for (const [b, { promptLength, tokens }] of rows.entries()) {
    mask.fill(1, b * W + width - promptLength, b * W + width);
    for (let k = 0; k < L; k++) {
      pos[b * L + k] = promptLength + k;
      if (k < tokens.length - 1) {
        ids[b * L + k] = tokens[k]!;
        mask[b * W + width + k] = 1;
        tgt[b * L + k] = tokens[k + 1]!;
      }
    }
  }
  const feeds: Record<string, TensorLike> = {
    input_ids: int64(ids, [B, L]),
    attention_mask: int64(mask, [B, W]),
    position_ids: int64(pos, [B, L]),
  };
  if (ctx.keep) feeds.num_logits_to_keep = int64([0], [1]);
  if (ctx.targetInput) feeds.target_ids = int64(tgt, [B, L]);
  rowSourceFeed(ctx, feeds, B, rowSource);
  return feeds;
}

/** The present outputs of one prompt run, one tensor per {@link FeedContext.presentNames}, `[rows, kvHeads, width, headDim]`. */
export interface PromptCache {
  present: readonly TensorLike[];
  /** KV positions per row: past slots (a concat graph returns them too) + the run's padded width. */
  width: number;
}

/** Where one prompt row's cache lies: its row of a {@link PromptCache}, whose last `length` positions are valid. */
export interface CacheSlot {
  cache: PromptCache;
  row: number;
  length: number;
}

/**
 * Past feeds of a candidate run for layers `[from, to)` (default: all): each slot's valid
 * positions, re-aligned to end at `width`. Slots that are consecutive unpadded rows of one prompt
 * run are fed from its present outputs as they are (a view, no copy): on a grouped-cache graph,
 * that is every run of a lone request.
 */
export function pastFeeds(
  ctx: FeedContext,
  slots: readonly CacheSlot[],
  width: number,
  from = 0,
  to = ctx.numLayers,
): Record<string, TensorLike> {
  const feeds: Record<string, TensorLike> = {};
  const { numKvHeads: H, headDim } = ctx;
  const B = slots.length;
  const { cache, row: first } = slots[0]!;
  const names = ctx.pastNames.slice(2 * from, 2 * to);
  if (cache.width === width && slots.every((s, i) => s.cache === cache && s.row === first + i && s.length === width)) {
    const size = H * width * headDim;
    names.forEach((name, k) => {
      const present = cache.present[2 * from + k]!;
      feeds[name] =
        B === present.dims[0]
          ? present
          : tensor("float32", (present.data as Float32Array).subarray(first * size, (first + B) * size), [B, H, width, headDim]);
    });
    return feeds;
  }
  names.forEach((name, k) => {
    const i = 2 * from + k;
    const dst = new Float32Array(B * H * width * headDim);
    slots.forEach(({ cache, row, length }, b) => {
      const src = cache.present[i]!.data as Float32Array;
      for (let h = 0; h < H; h++) {
        const from = ((row * H + h) * cache.width + cache.width - length) * headDim;
        dst.set(src.subarray(from, from + length * headDim), ((b * H + h) * width + width - length) * headDim);
      }
    });
    feeds[name] = tensor("float32", dst, [B, H, width, headDim]);
  });
  return feeds;
}

/** The distribution a prompt row's last position gives every candidate's first token. */
export interface FirstToken {
  logits: Float32Array;
  offset: number;
  lse: { max: number; logSum: number };
  /** Its entropy (0 unless token entropies are wanted). */
  entropy: number;
}

/** The {@link FirstToken} at row `row` of `logits` (rows of `vocab` floats). */
export function firstToken(logits: Float32Array, row: number, vocab: number, withEntropy: boolean): FirstToken {
  const offset = row * vocab;
  return { logits, offset, lse: logSumExp(logits, offset, vocab), entropy: withEntropy ? logitsEntropy(logits, offset, vocab) : 0 };
}

/**
 * Log-probabilities of a candidate's tokens: the first from its prompt's last position, the rest
 * from row `b` of a candidate run's output (`L` positions per row): log-probs when the run fetched
 * `token_logprobs`, else logits.
 */
export function candidateLogProbs(
  ctx: FeedContext,
  first: FirstToken,
  out: Float32Array | null,
  b: number,
  L: number,
  tokens: readonly number[],
): number[] {
  const lp: number[] = [first.logits[first.offset + tokens[0]!]! - first.lse.max - first.lse.logSum];
  for (let k = 1; k < tokens.length; k++) {
    const at = b * L + k - 1;
    lp.push(ctx.targets ? out![at]! : logSoftmaxAt(out!, at * ctx.vocab, ctx.vocab, tokens[k]!));
  }
  return lp;
}

/**
 * Mean next-token entropy along a candidate from the graph's `token_entropy` output: its first
 * token's (from the prompt) and `fed` entries of `entropies` from `at`.
 */
export function candidateEntropyOf(first: FirstToken, entropies: Float32Array, at: number, fed: number): number {
  let h = first.entropy;
  for (let k = 0; k < fed; k++) h += entropies[at + k]!;
  return h / (fed + 1);
}

/** Mean of {@link logitsEntropy} over `count` consecutive rows of width `V` from `row`. */
export function meanRowEntropy(logits: Float32Array, row: number, count: number, V: number): number {
  let h = 0;
  for (let k = 0; k < count; k++) h += logitsEntropy(logits, (row + k) * V, V);
  return h / count;
}

/** Mean next-token entropy along a candidate: its first token's, and the `fed` rows of `out` from `row` that predict the rest. */
export function candidateEntropy(first: FirstToken, out: Float32Array | null, row: number, fed: number, V: number): number {
  return (first.entropy + (fed > 0 ? fed * meanRowEntropy(out!, row, fed, V) : 0)) / (fed + 1);
}
