import type { InferenceSession } from "./backend.js";
import { MolorecError } from "./errors.js";
import { kvNames } from "./manifest.js";
import type { AdapterWeights, LoraMixer } from "./lora-mixture.js";
import { logSoftmaxAt } from "./math.js";
import type { ModelPack } from "./pack.js";
import { int64, tensor, type TensorLike } from "./tensor.js";

/** What to score: one prompt, its candidates, and the mixtures (one per row) to score them under. */
export interface ScoreJob {
  promptIds: readonly number[];
  candidateIds: ReadonlyArray<readonly number[]>;
  /** One entry per mixture; every candidate is scored under each. */
  mixtures: readonly AdapterWeights[];
}

/** Scores per mixture: `scores[m][c]` for mixture m, candidate c. */
export interface ScoreResult {
  scores: number[][];
  /** Per-token log-probabilities, `tokenLogProbs[m][c][k]`. */
  tokenLogProbs: number[][][];
  /** Model runs made (for tests and benchmarks). */
  runs: number;
}

/**
 * How candidates are scored. `prefix` (default) runs the prompt once per mixture and reuses its
 * KV cache for batched candidate suffixes. `naive` runs prompt + candidate in full, once per
 * candidate: the reference the prefix path is tested against, and the benchmark baseline.
 */
export type ScoringStrategy = "prefix" | "naive";

export interface ScoringOptions {
  strategy?: ScoringStrategy;
  /** Upper bound on batch rows of one candidate run (bounds memory). Default 64. */
  maxBatchRows?: number;
}

async function run(session: InferenceSession, feeds: Record<string, TensorLike>): Promise<Record<string, TensorLike>> {
  try {
    return await session.run(feeds);
  } catch (cause) {
    throw new MolorecError("INFERENCE_FAILED", `the model run failed: ${(cause as Error)?.message ?? cause}`, { cause });
  }
}

/**
 * Length of the past a prompt starts from: 0 (an empty past), or 1 for sessions that cannot take
 * zero-sized tensors: a dummy slot that attention_mask = 0 hides, so scores are unchanged.
 */
function pastPad(session: InferenceSession): number {
  return session.acceptsEmptyTensors === false ? 1 : 0;
}

function emptyPast(pack: ModelPack, batch: number, pad: number): Record<string, TensorLike> {
  const { numLayers, numKvHeads, headDim } = pack.manifest.model;
  const feeds: Record<string, TensorLike> = {};
  const empty = tensor("float32", new Float32Array(batch * numKvHeads * pad * headDim), [batch, numKvHeads, pad, headDim]);
  for (let i = 0; i < numLayers; i++) {
    feeds[kvNames.pastKey(i)] = empty;
    feeds[kvNames.pastValue(i)] = empty;
  }
  return feeds;
}

function aggregate(pack: ModelPack, logps: number[]): number {
  const sum = logps.reduce((a, b) => a + b, 0);
  return pack.manifest.prompt.scoreNormalization === "sum" ? sum : sum / logps.length;
}

function checkLengths(pack: ModelPack, job: ScoreJob): void {
  const longest = Math.max(...job.candidateIds.map((c) => c.length));
  if (job.promptIds.length + longest > pack.manifest.model.maxPositions) {
    throw new MolorecError(
      "HISTORY_TOO_LONG",
      `prompt (${job.promptIds.length} tokens) plus the longest candidate (${longest}) exceed the model's ${pack.manifest.model.maxPositions} positions; send a shorter history.`,
    );
  }
  if (job.candidateIds.some((c) => c.length === 0)) throw new MolorecError("INVALID_REQUEST", "a candidate has no tokens to score");
}

/**
 * Scores every candidate by the log-likelihood of its tokens after the prompt
 * (mean or sum per the pack's `scoreNormalization`), under each mixture of the job.
 */
export async function scoreCandidates(
  session: InferenceSession,
  pack: ModelPack,
  mixer: LoraMixer,
  job: ScoreJob,
  options: ScoringOptions = {},
): Promise<ScoreResult> {
  if (job.mixtures.length === 0 || job.candidateIds.length === 0) return { scores: [], tokenLogProbs: [], runs: 0 };
  checkLengths(pack, job);
  return options.strategy === "naive" ? scoreNaive(session, pack, mixer, job) : scorePrefix(session, pack, mixer, job, options.maxBatchRows ?? 64);
}

async function scorePrefix(session: InferenceSession, pack: ModelPack, mixer: LoraMixer, job: ScoreJob, maxBatchRows: number): Promise<ScoreResult> {
  const { numLayers, numKvHeads, headDim, vocabSize: V } = pack.manifest.model;
  const P = job.promptIds.length;
  const M = job.mixtures.length;
  const D = pastPad(session);
  let runs = 0;

  // 1. The prompt, once per mixture (rows differ only in their LoRA scale).
  const promptIds = new Array<number>(M * P);
  const positions = new Array<number>(M * P);
  for (let m = 0; m < M; m++) {
    for (let t = 0; t < P; t++) {
      promptIds[m * P + t] = job.promptIds[t]!;
      positions[m * P + t] = t;
    }
  }
  const promptMask = new Array<number>(M * (D + P)).fill(1);
  for (let m = 0; m < M; m++) promptMask.fill(0, m * (D + P), m * (D + P) + D);
  const prompt = await run(session, {
    input_ids: int64(promptIds, [M, P]),
    attention_mask: int64(promptMask, [M, D + P]),
    position_ids: int64(positions, [M, P]),
    ...emptyPast(pack, M, D),
    ...mixer.feeds(job.mixtures),
  });
  runs++;
  const promptLogits = prompt.logits!.data as Float32Array;
  const present: Float32Array[] = [];
  for (let i = 0; i < numLayers; i++) {
    present.push(prompt[kvNames.presentKey(i)]!.data as Float32Array, prompt[kvNames.presentValue(i)]!.data as Float32Array);
  }

  // 2. Candidate suffixes in batches of (mixture, candidate) rows, on the prompt's cache.
  const N = job.candidateIds.length;
  const tokenLogProbs: number[][][] = Array.from({ length: M }, () => new Array<number[]>(N));
  const pairs: Array<[number, number]> = [];
  for (let m = 0; m < M; m++) for (let c = 0; c < N; c++) pairs.push([m, c]);
  const rowKv = numKvHeads * (D + P) * headDim;

  for (let start = 0; start < pairs.length; start += maxBatchRows) {
    const chunk = pairs.slice(start, start + maxBatchRows);
    const B = chunk.length;
    // The last candidate token is only scored, never fed.
    const L = Math.max(...chunk.map(([, c]) => job.candidateIds[c]!.length - 1));
    let logits: Float32Array | null = null;
    if (L > 0) {
      const ids = new Array<number>(B * L).fill(pack.manifest.prompt.endTokenId);
      const W = D + P + L;
      const mask = new Array<number>(B * W).fill(0);
      const pos = new Array<number>(B * L);
      chunk.forEach(([, c], b) => {
        const cand = job.candidateIds[c]!;
        for (let k = 0; k < L; k++) {
          if (k < cand.length - 1) {
            ids[b * L + k] = cand[k]!;
            mask[b * W + D + P + k] = 1;
          }
          pos[b * L + k] = P + k;
        }
        for (let t = 0; t < P; t++) mask[b * W + D + t] = 1;
      });
      const past: Record<string, TensorLike> = {};
      for (let i = 0; i < 2 * numLayers; i++) {
        const src = present[i]!;
        const dst = new Float32Array(B * rowKv);
        chunk.forEach(([m], b) => dst.set(src.subarray(m * rowKv, (m + 1) * rowKv), b * rowKv));
        const name = i % 2 === 0 ? kvNames.pastKey(i >> 1) : kvNames.pastValue(i >> 1);
        past[name] = tensor("float32", dst, [B, numKvHeads, D + P, headDim]);
      }
      const out = await run(session, {
        input_ids: int64(ids, [B, L]),
        attention_mask: int64(mask, [B, W]),
        position_ids: int64(pos, [B, L]),
        ...past,
        ...mixer.feeds(chunk.map(([m]) => job.mixtures[m]!)),
      });
      runs++;
      logits = out.logits!.data as Float32Array;
    }
    chunk.forEach(([m, c], b) => {
      const cand = job.candidateIds[c]!;
      const lp: number[] = [logSoftmaxAt(promptLogits, (m * P + P - 1) * V, V, cand[0]!)];
      for (let k = 1; k < cand.length; k++) lp.push(logSoftmaxAt(logits!, (b * L + k - 1) * V, V, cand[k]!));
      tokenLogProbs[m]![c] = lp;
    });
  }
  return { scores: tokenLogProbs.map((row) => row.map((lp) => aggregate(pack, lp))), tokenLogProbs, runs };
}

async function scoreNaive(session: InferenceSession, pack: ModelPack, mixer: LoraMixer, job: ScoreJob): Promise<ScoreResult> {
  const V = pack.manifest.model.vocabSize;
  const P = job.promptIds.length;
  const D = pastPad(session);
  let runs = 0;
  const tokenLogProbs: number[][][] = [];
  for (const mixture of job.mixtures) {
    const lora = mixer.feeds([mixture]);
    const perCandidate: number[][] = [];
    for (const cand of job.candidateIds) {
      const seq = [...job.promptIds, ...cand.slice(0, -1)];
      const S = seq.length;
      const out = await run(session, {
        input_ids: int64(seq, [1, S]),
        attention_mask: int64(new Array(D + S).fill(1).fill(0, 0, D), [1, D + S]),
        position_ids: int64(seq.map((_, i) => i), [1, S]),
        ...emptyPast(pack, 1, D),
        ...lora,
      });
      runs++;
      const logits = out.logits!.data as Float32Array;
      perCandidate.push(cand.map((tok, k) => logSoftmaxAt(logits, (P - 1 + k) * V, V, tok)));
    }
    tokenLogProbs.push(perCandidate);
  }
  return { scores: tokenLogProbs.map((row) => row.map((lp) => aggregate(pack, lp))), tokenLogProbs, runs };
}
