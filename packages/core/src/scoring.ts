import type { InferenceSession } from "./backend.js";
import { MolorecError } from "./errors.js";
import { kvNames } from "./manifest.js";
import type { AdapterWeights, LoraMixer } from "./lora-mixture.js";
import { logitsEntropy, logSoftmaxAt, logSumExp } from "./math.js";
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
  /**
   * With {@link ScoringOptions.tokenEntropy}: `tokenEntropies[m][c]`, the mean entropy (nats) of
   * the model's next-token distributions over candidate c's positions under mixture m.
   */
  tokenEntropies?: number[][];
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
  /**
   * Split candidate rows into batches of similar length when the padding saved is worth an extra
   * run (candidates are padded to the longest one of their batch; a run costs about
   * {@link RUN_COST_TOKENS} padded tokens). On by default: titles vary in length, and one batch
   * padded to the longest title measured 1.3–1.7× slower on CPU and WASM (docs/performance.md).
   * `false`: a job of at most `maxBatchRows` rows is always one candidate run. Rows are sorted by
   * length either way.
   */
  bucketByLength?: boolean;
  /** A candidate run's fixed cost in padded tokens, for `bucketByLength`. Default {@link RUN_COST_TOKENS}. */
  runCostTokens?: number;
  /**
   * Also return {@link ScoreResult.tokenEntropies} (the token-level entropy objective of the
   * `tokens` mixing criterion). Needs the graph's full `logits`, so packs exported with
   * `token_logprobs` fetch logits instead on these runs.
   */
  tokenEntropy?: boolean;
}

/** A candidate run's fixed cost in padded tokens, for {@link ScoringOptions.bucketByLength}. */
export const RUN_COST_TOKENS = 32;

/**
 * Splits rows sorted longest first into consecutive runs of at most `maxRows` rows. With a finite
 * `runCost`, the split minimises padded tokens (`rows × longest` per run) plus `runCost` per run;
 * with `Infinity`, runs are simply filled in order.
 */
export function planRuns(lengths: readonly number[], maxRows: number, runCost: number): Array<[number, number]> {
  const n = lengths.length;
  const out: Array<[number, number]> = [];
  if (!Number.isFinite(runCost)) {
    for (let s = 0; s < n; s += maxRows) out.push([s, Math.min(n, s + maxRows)]);
    return out;
  }
  const best = new Array<number>(n + 1).fill(Infinity);
  const from = new Array<number>(n + 1).fill(0);
  best[0] = 0;
  for (let i = 1; i <= n; i++) {
    for (let j = Math.max(0, i - maxRows); j < i; j++) {
      const cost = best[j]! + runCost + (i - j) * lengths[j]!;
      if (cost < best[i]!) {
        best[i] = cost;
        from[i] = j;
      }
    }
  }
  for (let i = n; i > 0; i = from[i]!) out.unshift([from[i]!, i]);
  return out;
}

/** Runs the session, reporting any runtime failure as `INFERENCE_FAILED`. */
export async function runSession(
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
 * Optional graph inputs that spare the scorer work; packs without them score the same way, only
 * slower. `num_logits_to_keep` (int64 [1], 0 = all): logits of the last k positions only, so a
 * prompt run returns one row of logits, not P. `target_ids` [batch, seq] with output
 * `token_logprobs` [batch, kept]: the graph returns log p(target) per position, so candidate runs
 * fetch one float per token instead of a vocabulary-sized row (training: export_onnx options).
 */
interface GraphExtras {
  keep: boolean;
  /** The graph takes `target_ids` (they must be fed). */
  targetInput: boolean;
  /** Candidate runs fetch `token_logprobs` rather than `logits`. */
  targets: boolean;
}

/** `needLogits`: the caller needs full next-token distributions (token entropies). */
export function graphExtras(session: InferenceSession, needLogits = false): GraphExtras {
  const targetInput = session.inputNames.includes("target_ids") && session.outputNames.includes("token_logprobs");
  return { keep: session.inputNames.includes("num_logits_to_keep"), targetInput, targets: targetInput && !needLogits };
}

/**
 * Mean next-token entropy along one candidate: `first` (the prompt's last position, which predicts
 * its first token) and the `fed` rows of `logits` from `row` that predict the rest.
 */
export function candidateEntropy(first: number, logits: Float32Array | null, row: number, fed: number, V: number): number {
  return (first + (fed > 0 ? fed * meanRowEntropy(logits!, row, fed, V) : 0)) / (fed + 1);
}

/** Mean of {@link logitsEntropy} over `count` consecutive rows of width `V` from `row`. */
export function meanRowEntropy(logits: Float32Array, row: number, count: number, V: number): number {
  let h = 0;
  for (let k = 0; k < count; k++) h += logitsEntropy(logits, (row + k) * V, V);
  return h / count;
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
  return options.strategy === "naive"
    ? scoreNaive(session, pack, mixer, job, options.tokenEntropy ?? false)
    : scorePrefix(session, pack, mixer, job, options);
}

async function scorePrefix(
  session: InferenceSession,
  pack: ModelPack,
  mixer: LoraMixer,
  job: ScoreJob,
  options: ScoringOptions,
): Promise<ScoreResult> {
  const maxBatchRows = options.maxBatchRows ?? 64;
  const bucket = options.bucketByLength ?? true;
  const wantEntropy = options.tokenEntropy ?? false;
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
  const extras = graphExtras(session, wantEntropy);
  const presentNames: string[] = [];
  for (let i = 0; i < numLayers; i++) presentNames.push(kvNames.presentKey(i), kvNames.presentValue(i));
  const prompt = await runSession(
    session,
    {
      input_ids: int64(promptIds, [M, P]),
      attention_mask: int64(promptMask, [M, D + P]),
      position_ids: int64(positions, [M, P]),
      ...emptyPast(pack, M, D),
      ...mixer.feeds(job.mixtures),
      ...(extras.keep ? { num_logits_to_keep: int64([1], [1]) } : {}),
      ...(extras.targetInput ? { target_ids: int64(new Array<number>(M * P).fill(0), [M, P]) } : {}),
    },
    ["logits", ...presentNames],
  );
  runs++;
  const promptLogits = prompt.logits!.data as Float32Array;
  // The prompt's last position scores every candidate's first token: normalise it once per mixture.
  const firstRow = (m: number) => (extras.keep ? m : m * P + P - 1) * V;
  const firstLse = Array.from({ length: M }, (_, m) => logSumExp(promptLogits, firstRow(m), V));

  // 2. Candidate suffixes in batches of (mixture, candidate) rows, on the prompt's cache.
  const N = job.candidateIds.length;
  const tokenLogProbs: number[][][] = Array.from({ length: M }, () => new Array<number[]>(N));
  const tokenEntropies: number[][] = Array.from({ length: M }, () => new Array<number>(N));
  const firstEntropy = wantEntropy ? Array.from({ length: M }, (_, m) => meanRowEntropy(promptLogits, firstRow(m) / V, 1, V)) : [];
  // The last candidate token is only scored, never fed.
  const fedOf = (c: number) => job.candidateIds[c]!.length - 1;
  const runCost = bucket ? (options.runCostTokens ?? RUN_COST_TOKENS) : Infinity;
  // A grouped-cache graph takes the prompt run's cache as it is (one past row per mixture) for
  // runs of M × n rows, mixture-major; a concat graph needs a copy of it per row.
  const grouped = pack.manifest.model.kvCache === "grouped";
  const kvLen = grouped ? P : D + P;
  const chunks: Array<Array<[number, number]>> = [];
  if (grouped) {
    // Longest first, so that each run pads its rows to a similar length.
    const order = Array.from({ length: N }, (_, c) => c).sort((a, b) => fedOf(b) - fedOf(a));
    for (const [start, end] of planRuns(order.map(fedOf), Math.max(1, Math.floor(maxBatchRows / M)), runCost)) {
      const cs = order.slice(start, end);
      chunks.push(job.mixtures.flatMap((_, m) => cs.map((c): [number, number] => [m, c])));
    }
  } else {
    const pairs: Array<[number, number]> = [];
    for (let m = 0; m < M; m++) for (let c = 0; c < N; c++) pairs.push([m, c]);
    pairs.sort((a, b) => fedOf(b[1]) - fedOf(a[1]));
    for (const [start, end] of planRuns(
      pairs.map((p) => fedOf(p[1])),
      maxBatchRows,
      runCost,
    ))
      chunks.push(pairs.slice(start, end));
  }
  const rowKv = numKvHeads * kvLen * headDim;

  for (const chunk of chunks) {
    const B = chunk.length;
    const L = Math.max(...chunk.map(([, c]) => fedOf(c)));
    let logits: Float32Array | null = null;
    if (L > 0) {
      const ids = new Array<number>(B * L).fill(pack.manifest.prompt.endTokenId);
      const W = kvLen + L;
      const mask = new Array<number>(B * W).fill(0);
      const pos = new Array<number>(B * L);
      chunk.forEach(([, c], b) => {
        const cand = job.candidateIds[c]!;
        for (let k = 0; k < L; k++) {
          if (k < cand.length - 1) {
            ids[b * L + k] = cand[k]!;
            mask[b * W + kvLen + k] = 1;
          }
          pos[b * L + k] = P + k;
        }
        mask.fill(1, b * W + kvLen - P, b * W + kvLen);
      });
      const past: Record<string, TensorLike> = {};
      for (let i = 0; i < 2 * numLayers; i++) {
        const name = i % 2 === 0 ? kvNames.pastKey(i >> 1) : kvNames.pastValue(i >> 1);
        if (grouped) {
          past[name] = prompt[presentNames[i]!]!;
          continue;
        }
        const src = prompt[presentNames[i]!]!.data as Float32Array;
        const dst = new Float32Array(B * rowKv);
        chunk.forEach(([m], b) => dst.set(src.subarray(m * rowKv, (m + 1) * rowKv), b * rowKv));
        past[name] = tensor("float32", dst, [B, numKvHeads, kvLen, headDim]);
      }
      const feeds: Record<string, TensorLike> = {
        input_ids: int64(ids, [B, L]),
        attention_mask: int64(mask, [B, W]),
        position_ids: int64(pos, [B, L]),
        ...past,
        ...mixer.feeds(chunk.map(([m]) => job.mixtures[m]!)),
      };
      if (extras.keep) feeds.num_logits_to_keep = int64([0], [1]);
      if (extras.targetInput) {
        const targets = ids.slice();
        chunk.forEach(([, c], b) => {
          const cand = job.candidateIds[c]!;
          for (let k = 0; k + 1 < cand.length; k++) targets[b * L + k] = cand[k + 1]!;
        });
        feeds.target_ids = int64(targets, [B, L]);
      }
      // Only what is read: the candidates' own KV cache is never needed again.
      const out = await runSession(session, feeds, [extras.targets ? "token_logprobs" : "logits"]);
      runs++;
      logits = (extras.targets ? out.token_logprobs! : out.logits!).data as Float32Array;
    }
    chunk.forEach(([m, c], b) => {
      const cand = job.candidateIds[c]!;
      const f = firstLse[m]!;
      const lp: number[] = [promptLogits[firstRow(m) + cand[0]!]! - f.max - f.logSum];
      for (let k = 1; k < cand.length; k++) {
        lp.push(extras.targets ? logits![b * L + k - 1]! : logSoftmaxAt(logits!, (b * L + k - 1) * V, V, cand[k]!));
      }
      tokenLogProbs[m]![c] = lp;
      if (wantEntropy) tokenEntropies[m]![c] = candidateEntropy(firstEntropy[m]!, logits, b * L, cand.length - 1, V);
    });
  }
  return {
    scores: tokenLogProbs.map((row) => row.map((lp) => aggregate(pack, lp))),
    tokenLogProbs,
    ...(wantEntropy ? { tokenEntropies } : {}),
    runs,
  };
}

async function scoreNaive(
  session: InferenceSession,
  pack: ModelPack,
  mixer: LoraMixer,
  job: ScoreJob,
  wantEntropy: boolean,
): Promise<ScoreResult> {
  const V = pack.manifest.model.vocabSize;
  const P = job.promptIds.length;
  const D = pastPad(session);
  const extras = graphExtras(session, wantEntropy);
  let runs = 0;
  const tokenLogProbs: number[][][] = [];
  const tokenEntropies: number[][] = [];
  for (const mixture of job.mixtures) {
    const lora = mixer.feeds([mixture]);
    const perCandidate: number[][] = [];
    const entropies: number[] = [];
    for (const cand of job.candidateIds) {
      const seq = [...job.promptIds, ...cand.slice(0, -1)];
      const S = seq.length;
      const feeds: Record<string, TensorLike> = {
        input_ids: int64(seq, [1, S]),
        attention_mask: int64(new Array(D + S).fill(1).fill(0, 0, D), [1, D + S]),
        position_ids: int64(
          seq.map((_, i) => i),
          [1, S],
        ),
        ...emptyPast(pack, 1, D),
        ...lora,
      };
      // Positions P-1 .. S-1 score the candidate: with num_logits_to_keep only they come back.
      if (extras.keep) feeds.num_logits_to_keep = int64([cand.length], [1]);
      if (extras.targetInput) feeds.target_ids = int64([...seq.slice(1), cand[cand.length - 1]!], [1, S]);
      const out = await runSession(session, feeds, [extras.targets ? "token_logprobs" : "logits"]);
      runs++;
      const first = extras.keep ? 0 : P - 1;
      if (extras.targets) {
        const lps = out.token_logprobs!.data as Float32Array;
        perCandidate.push(cand.map((_, k) => lps[first + k]!));
      } else {
        const logits = out.logits!.data as Float32Array;
        perCandidate.push(cand.map((tok, k) => logSoftmaxAt(logits, (first + k) * V, V, tok)));
        if (wantEntropy) entropies.push(meanRowEntropy(logits, first, cand.length, V));
      }
    }
    tokenLogProbs.push(perCandidate);
    tokenEntropies.push(entropies);
  }
  return {
    scores: tokenLogProbs.map((row) => row.map((lp) => aggregate(pack, lp))),
    tokenLogProbs,
    ...(wantEntropy ? { tokenEntropies } : {}),
    runs,
  };
}
