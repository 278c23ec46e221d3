import type { InferenceSession } from "./backend.js";
import { MolorecError } from "./errors.js";
import type { LoraMixer } from "./lora-mixture.js";
import { kvNames } from "./manifest.js";
import { logSoftmaxAt, logSumExp } from "./math.js";
import type { ModelPack } from "./pack.js";
import {
  candidateEntropy,
  graphExtras,
  meanRowEntropy,
  planRuns,
  RUN_COST_TOKENS,
  runSession as run,
  type ScoreJob,
  type ScoreResult,
} from "./scoring.js";
import { int64, tensor, type TensorLike } from "./tensor.js";

/** Options of {@link scoreBatchedJobs}. */
export interface BatchScoringOptions {
  /** Upper bound on batch rows of one model run, prompt or candidate (bounds memory). Default 64. */
  maxBatchRows?: number;
  /**
   * Upper bound on the floats of logits one prompt run may return, for graphs without
   * `num_logits_to_keep` (which return `rows × prompt × vocab`). Default 4 M (16 MiB).
   */
  maxPromptLogits?: number;
  /**
   * A model run's fixed cost in padded prompt tokens: prompts are split into runs of similar
   * length when the padding saved is worth more than this per extra run. Default 32; 0 splits
   * whenever padding is saved, `Infinity` pads all prompts to the longest in as few runs as possible.
   */
  runCostTokens?: number;
  /**
   * Upper bound on the floats of logits one candidate run may return (`rows × suffix × vocab`), for
   * graphs without `token_logprobs`: past a few MiB, writing and reading them costs more than the
   * runs saved. Default 4 M (16 MiB).
   */
  maxCandidateLogits?: number;
  /** Also return each job's `tokenEntropies` (as `ScoringOptions.tokenEntropy`). */
  tokenEntropy?: boolean;
}

/**
 * Multiply-adds per fed token, apart from attention (projections, MLP as 8·h² wide, the LM head),
 * and per (token, attended key): a first-order cost model to plan runs with.
 */
function tokenCosts(pack: ModelPack): { token: number; key: number } {
  const { hiddenSize: h, vocabSize: V, numLayers: n, numHeads, headDim } = pack.manifest.model;
  return { token: n * 12 * h * h + h * V, key: n * 2 * numHeads * headDim };
}

/**
 * Cuts candidate rows (in the given order) into consecutive runs of at most `maxRows`, minimising
 * the estimated cost: per run, `runCost` plus rows × padded suffix × (token cost + key cost × keys),
 * keys being the run's longest prompt plus its suffix. Runs whose suffixes are all empty cost
 * nothing (no model run). Returns the runs and their total cost.
 */
function planCandidateRuns(
  fed: readonly number[],
  prompt: readonly number[],
  maxRows: number,
  runCost: number,
  costs: { token: number; key: number },
  maxLogits: number,
  vocab: number,
): { runs: Array<[number, number]>; cost: number } {
  const n = fed.length;
  const best = new Array<number>(n + 1).fill(Infinity);
  const from = new Array<number>(n + 1).fill(0);
  best[0] = 0;
  for (let i = 1; i <= n; i++) {
    let L = 0;
    let P = 0;
    for (let j = i - 1; j >= Math.max(0, i - maxRows); j--) {
      L = Math.max(L, fed[j]!);
      P = Math.max(P, prompt[j]!);
      if (j < i - 1 && (i - j) * L * vocab > maxLogits) break;
      const cost = best[j]! + (L === 0 ? 0 : runCost + (i - j) * L * (costs.token + costs.key * (P + L)));
      if (cost < best[i]!) {
        best[i] = cost;
        from[i] = j;
      }
    }
  }
  const runs: Array<[number, number]> = [];
  for (let i = n; i > 0; i = from[i]!) runs.unshift([from[i]!, i]);
  return { runs, cost: best[n]! };
}

/**
 * Runs for a grouped-cache graph: a run feeds the caches of some prompt rows once, each serving
 * the same number of consecutive candidate rows. Prompt rows are grouped by candidate count; each
 * row's candidates, longest first, are cut into `s` slices (the `s` of least estimated cost, as
 * {@link planCandidateRuns} estimates it), and slice k of several rows (longest prompts together)
 * forms a run of at most `maxRows` rows.
 */
function planGroupedRuns(
  promptRows: ReadonlyArray<{ length: number; fed: readonly number[] }>,
  maxRows: number,
  runCost: number,
  costs: { token: number; key: number },
  maxLogits: number,
  vocab: number,
): { runs: Array<{ pairs: Array<[number, number]>; past: number[] }>; cost: number } {
  const byCount = new Map<number, number[]>();
  promptRows.forEach((r, i) => {
    if (r.fed.length > 0) byCount.set(r.fed.length, [...(byCount.get(r.fed.length) ?? []), i]);
  });
  const out: Array<{ pairs: Array<[number, number]>; past: number[] }> = [];
  let total = 0;
  for (const [n, members] of byCount) {
    members.sort((a, b) => promptRows[b]!.length - promptRows[a]!.length);
    const order = new Map(
      members.map((r) => [r, promptRows[r]!.fed.map((_, c) => c).sort((a, b) => promptRows[r]!.fed[b]! - promptRows[r]!.fed[a]!)]),
    );
    let best: { cost: number; runs: Array<{ pairs: Array<[number, number]>; past: number[] }> } | null = null;
    const minSlices = Math.ceil(n / maxRows);
    for (let s = minSlices; s <= Math.min(n, minSlices + 3); s++) {
      const g = Math.ceil(n / s);
      const runs: Array<{ pairs: Array<[number, number]>; past: number[] }> = [];
      let cost = 0;
      for (let k = 0; k * g < n; k++) {
        const sliceL = Math.max(...members.map((r) => promptRows[r]!.fed[order.get(r)![k * g]!]!));
        const perRun = Math.max(1, Math.min(Math.floor(maxRows / g), sliceL > 0 ? Math.floor(maxLogits / (g * sliceL * vocab)) : Infinity));
        for (let j = 0; j < members.length; j += perRun) {
          const past = members.slice(j, j + perRun);
          const pairs = past.flatMap((r) =>
            order
              .get(r)!
              .slice(k * g, (k + 1) * g)
              .map((c): [number, number] => [r, c]),
          );
          const L = Math.max(...pairs.map(([r, c]) => promptRows[r]!.fed[c]!));
          if (L > 0) cost += runCost + pairs.length * L * (costs.token + costs.key * (promptRows[past[0]!]!.length + L));
          runs.push({ pairs, past });
        }
      }
      if (best === null || cost < best.cost) best = { cost, runs };
    }
    out.push(...best!.runs);
    total += best!.cost;
  }
  return { runs: out, cost: total };
}

/**
 * A grouped plan is kept unless the per-row plan is estimated this much cheaper: the estimate
 * counts padded tokens and runs, not the per-row cache copies the grouped plan saves.
 */
const GROUPED_PREFERENCE = 0.85;

/** The answer of {@link scoreBatchedJobs}: one {@link ScoreResult} per job, in job order. */
export interface BatchScoreResult {
  /** `results[j]` scores `jobs[j]`; its `runs` is the model runs of the whole batch, shared by all jobs. */
  results: ScoreResult[];
  /** Model runs made for the whole batch. */
  runs: number;
}

/**
 * Checks that a job can be scored: every candidate has tokens and the prompt plus the longest
 * candidate fit the model's positions. Throws the same coded errors as `scoreCandidates`.
 * Call it per request before batching, so one bad request cannot fail the others of its batch.
 */
export function checkScoreJob(pack: ModelPack, job: ScoreJob): void {
  if (job.candidateIds.some((c) => c.length === 0)) throw new MolorecError("INVALID_REQUEST", "a candidate has no tokens to score");
  const longest = job.candidateIds.reduce((n, c) => Math.max(n, c.length), 0);
  if (job.promptIds.length + longest > pack.manifest.model.maxPositions) {
    throw new MolorecError(
      "HISTORY_TOO_LONG",
      `prompt (${job.promptIds.length} tokens) plus the longest candidate (${longest}) exceed the model's ${pack.manifest.model.maxPositions} positions; send a shorter history.`,
    );
  }
  if (job.promptIds.length === 0) throw new MolorecError("INVALID_REQUEST", "a prompt has no tokens");
}

/** One prompt row of the batch: a job's prompt under one of its mixtures. */
interface PromptRow {
  job: number;
  mixture: number;
  /** Valid prompt tokens; the row was left-padded to the longest prompt of its run. */
  length: number;
  /** Present KV of its prompt run, one array per (layer, key|value), `[rows, kvHeads, width, headDim]`. */
  kv: Float32Array[];
  /** Its row in the prompt run, and that run's KV length (past slots + padded prompt). */
  kvRow: number;
  kvWidth: number;
  /** Logits of its last prompt position (`vocab` floats from `logitsOffset`), which score every first candidate token. */
  logits: Float32Array;
  logitsOffset: number;
  lse: { max: number; logSum: number };
  /** Entropy of that first next-token distribution (0 unless token entropies are wanted). */
  firstEntropy: number;
}

/**
 * Scores several jobs (e.g. the requests that arrived together at a server) in shared model runs,
 * with the results of scoring each job alone (`scoreCandidates`, prefix strategy) up to float
 * rounding (≤ 1e-5 on the fixture pack):
 *
 * 1. **Prompts**: every (job, mixture) is one row of a prompt run. Prompts differ in length, so
 *    rows are left-padded to the longest of their run: padding tokens are hidden by
 *    `attention_mask`, and `position_ids` count each row's own tokens from 0, so each row computes
 *    what it would alone; left padding puts every row's last token at the same position. Rows are
 *    sorted by length and split into runs of similar length when that saves more padded tokens
 *    than `runCostTokens` per extra run.
 * 2. **Candidates**: every (job, mixture, candidate) is one row of a candidate run on the prompt
 *    KV caches, each re-aligned to end at the run's longest prompt; a row's `attention_mask`
 *    covers its own prompt's valid positions and its own suffix, its positions continue from its
 *    own prompt's length. Rows are sorted by length and cut into runs of at most `maxBatchRows`,
 *    whatever job they come from.
 *
 * Each row carries its own LoRA scales, so jobs of different domains and mixtures share runs.
 * Call {@link checkScoreJob} on each job first: a bad job here fails the whole batch.
 *
 * @example
 * ```ts
 * const { results } = await scoreBatchedJobs(session, pack, new LoraMixer(pack), [jobA, jobB]);
 * results[1].scores[0]; // jobB's candidate scores under its first mixture
 * ```
 */
export async function scoreBatchedJobs(
  session: InferenceSession,
  pack: ModelPack,
  mixer: LoraMixer,
  jobs: readonly ScoreJob[],
  options: BatchScoringOptions = {},
): Promise<BatchScoreResult> {
  for (const job of jobs) checkScoreJob(pack, job);
  const { numLayers, numKvHeads, headDim, vocabSize: V } = pack.manifest.model;
  const maxRows = Math.max(1, options.maxBatchRows ?? 64);
  const endId = pack.manifest.prompt.endTokenId;
  const wantEntropy = options.tokenEntropy ?? false;
  const { keep, targets, targetInput } = graphExtras(session, wantEntropy);
  // Sessions that cannot take zero-sized tensors start from a 1-slot past that the mask hides.
  const D = session.acceptsEmptyTensors === false ? 1 : 0;
  const grouped = pack.manifest.model.kvCache === "grouped";
  let runs = 0;

  const specs: Array<{ job: number; mixture: number }> = [];
  jobs.forEach((job, j) => {
    if (job.candidateIds.length > 0) job.mixtures.forEach((_, m) => specs.push({ job: j, mixture: m }));
  });
  const tokenLogProbs: number[][][][] = jobs.map((job) => job.mixtures.map(() => new Array<number[]>(job.candidateIds.length)));
  const tokenEntropies: number[][][] = jobs.map((job) => job.mixtures.map(() => new Array<number>(job.candidateIds.length)));
  if (specs.length === 0) return { results: jobs.map(() => ({ scores: [], tokenLogProbs: [], runs: 0 })), runs: 0 };

  const presentNames: string[] = [];
  for (let i = 0; i < numLayers; i++) presentNames.push(kvNames.presentKey(i), kvNames.presentValue(i));
  const promptLength = (x: { job: number }) => jobs[x.job]!.promptIds.length;
  specs.sort((a, b) => promptLength(b) - promptLength(a));

  // 1. Prompt runs, each left-padded to its longest prompt.
  const longestPrompt = promptLength(specs[0]!);
  const promptRows = Math.max(
    1,
    Math.min(maxRows, keep ? maxRows : Math.floor((options.maxPromptLogits ?? 4 * 1024 * 1024) / (longestPrompt * V))),
  );
  const rows: PromptRow[] = [];
  for (const [start, end] of planRuns(specs.map(promptLength), promptRows, options.runCostTokens ?? RUN_COST_TOKENS)) {
    const chunk = specs.slice(start, end);
    const B = chunk.length;
    const P = promptLength(chunk[0]!);
    const W0 = D + P;
    const ids = new Array<number>(B * P).fill(endId);
    const pos = new Array<number>(B * P).fill(0);
    const mask = new Array<number>(B * W0).fill(0);
    chunk.forEach(({ job }, b) => {
      const prompt = jobs[job]!.promptIds;
      const pad = P - prompt.length;
      for (let t = 0; t < prompt.length; t++) {
        ids[b * P + pad + t] = prompt[t]!;
        pos[b * P + pad + t] = t;
        mask[b * W0 + D + pad + t] = 1;
      }
    });
    const empty = tensor("float32", new Float32Array(B * numKvHeads * D * headDim), [B, numKvHeads, D, headDim]);
    const feeds: Record<string, TensorLike> = {
      input_ids: int64(ids, [B, P]),
      attention_mask: int64(mask, [B, W0]),
      position_ids: int64(pos, [B, P]),
      ...mixer.feeds(chunk.map(({ job, mixture }) => jobs[job]!.mixtures[mixture]!)),
    };
    for (let i = 0; i < numLayers; i++) {
      feeds[kvNames.pastKey(i)] = empty;
      feeds[kvNames.pastValue(i)] = empty;
    }
    if (keep) feeds.num_logits_to_keep = int64([1], [1]);
    if (targetInput) feeds.target_ids = int64(new Array<number>(B * P).fill(0), [B, P]);
    const out = await run(session, feeds, ["logits", ...presentNames]);
    runs++;
    const logits = out.logits!.data as Float32Array;
    const kv = presentNames.map((name) => out[name]!.data as Float32Array);
    // A grouped-cache graph returns this run's keys only; a concat graph the past slots too.
    const kvWidth = grouped ? P : W0;
    chunk.forEach(({ job, mixture }, b) => {
      const logitsOffset = (keep ? b : b * P + P - 1) * V;
      const firstEntropy = wantEntropy ? meanRowEntropy(logits, logitsOffset / V, 1, V) : 0;
      rows.push({
        job,
        mixture,
        length: promptLength({ job }),
        kv,
        kvRow: b,
        kvWidth,
        logits,
        logitsOffset,
        lse: logSumExp(logits, logitsOffset, V),
        firstEntropy,
      });
    });
  }

  // 2. Candidate runs on the prompt caches: (prompt row, candidate) pairs. A grouped-cache graph
  // gets each prompt row's cache once per run (planGroupedRuns). Otherwise every row gets its own
  // copy, and two orders are planned, longest suffix first (least suffix padding) and longest
  // prompt first (fewest attended keys); the cheaper plan runs.
  const all: Array<[row: number, candidate: number]> = [];
  rows.forEach((r, i) => jobs[r.job]!.candidateIds.forEach((_, c) => all.push([i, c])));
  // The last candidate token is only scored, never fed.
  const fed = ([r, c]: [number, number]) => jobs[rows[r]!.job]!.candidateIds[c]!.length - 1;
  const plen = ([r]: [number, number]) => rows[r]!.length;
  const costs = tokenCosts(pack);
  const runCost = (options.runCostTokens ?? RUN_COST_TOKENS) * costs.token;
  // A run: its (prompt row, candidate) rows and, on a grouped-cache graph, the prompt rows whose
  // caches it is fed (each serving the same number of consecutive rows); else one cache per row.
  // Requests with different candidate counts cannot share a grouped run; when that costs clearly
  // more than copying each row's cache (the estimates below), the grouped graph takes copies too.
  const maxLogits = targets ? Infinity : (options.maxCandidateLogits ?? 4 * 1024 * 1024);
  const plans = [
    [...all].sort((a, b) => fed(b) - fed(a) || plen(b) - plen(a)),
    [...all].sort((a, b) => plen(b) - plen(a) || fed(b) - fed(a)),
  ].map((order) => ({
    order,
    ...planCandidateRuns(
      order.map(fed),
      order.map(plen),
      maxRows,
      Number.isFinite(runCost) ? runCost : Number.MAX_VALUE / 1e6,
      costs,
      maxLogits,
      V,
    ),
  }));
  const perRow = plans[0]!.cost <= plans[1]!.cost ? plans[0]! : plans[1]!;
  let chunks: Array<{ pairs: Array<[number, number]>; past: number[] | null }> = perRow.runs.map(([start, end]) => ({
    pairs: perRow.order.slice(start, end),
    past: null,
  }));
  if (grouped) {
    const plan = planGroupedRuns(
      rows.map((r) => ({ length: r.length, fed: jobs[r.job]!.candidateIds.map((c) => c.length - 1) })),
      maxRows,
      runCost,
      costs,
      maxLogits,
      V,
    );
    if (perRow.cost >= GROUPED_PREFERENCE * plan.cost) chunks = plan.runs;
  }

  for (const { pairs: chunk, past: pastRows } of chunks) {
    const B = chunk.length;
    const L = Math.max(...chunk.map(fed));
    let out: Float32Array | null = null;
    if (L > 0) {
      // The run's past: every row's prompt KV, re-aligned to end at the longest prompt of the run.
      const P = Math.max(...chunk.map(([r]) => rows[r]!.length));
      const W0 = D + P;
      const W = W0 + L;
      const ids = new Array<number>(B * L).fill(endId);
      const pos = new Array<number>(B * L).fill(0);
      const mask = new Array<number>(B * W).fill(0);
      const tgt = targetInput ? new Array<number>(B * L).fill(0) : null;
      chunk.forEach(([r, c], b) => {
        const row = rows[r]!;
        const cand = jobs[row.job]!.candidateIds[c]!;
        mask.fill(1, b * W + W0 - row.length, b * W + W0);
        for (let k = 0; k < L; k++) {
          pos[b * L + k] = row.length + k;
          if (k < cand.length - 1) {
            ids[b * L + k] = cand[k]!;
            mask[b * W + W0 + k] = 1;
            if (tgt) tgt[b * L + k] = cand[k + 1]!;
          }
        }
      });
      const feeds: Record<string, TensorLike> = {
        input_ids: int64(ids, [B, L]),
        attention_mask: int64(mask, [B, W]),
        position_ids: int64(pos, [B, L]),
        ...mixer.feeds(chunk.map(([r]) => jobs[rows[r]!.job]!.mixtures[rows[r]!.mixture]!)),
      };
      for (let i = 0; i < 2 * numLayers; i++) {
        const cacheRows = pastRows ?? chunk.map(([r]) => r);
        const dst = new Float32Array(cacheRows.length * numKvHeads * W0 * headDim);
        cacheRows.forEach((r, b) => {
          const row = rows[r]!;
          const src = row.kv[i]!;
          const n = row.length * headDim;
          for (let h = 0; h < numKvHeads; h++) {
            // The row's valid prompt positions are the last `length` of its own KV width.
            const from = ((row.kvRow * numKvHeads + h) * row.kvWidth + row.kvWidth - row.length) * headDim;
            dst.set(src.subarray(from, from + n), ((b * numKvHeads + h) * W0 + W0 - row.length) * headDim);
          }
        });
        feeds[i % 2 === 0 ? kvNames.pastKey(i >> 1) : kvNames.pastValue(i >> 1)] = tensor("float32", dst, [
          cacheRows.length,
          numKvHeads,
          W0,
          headDim,
        ]);
      }
      if (keep) feeds.num_logits_to_keep = int64([0], [1]);
      if (tgt) feeds.target_ids = int64(tgt, [B, L]);
      const res = await run(session, feeds, [targets ? "token_logprobs" : "logits"]);
      runs++;
      out = (targets ? res.token_logprobs! : res.logits!).data as Float32Array;
    }
    chunk.forEach(([r, c], b) => {
      const row = rows[r]!;
      const cand = jobs[row.job]!.candidateIds[c]!;
      const lp: number[] = [row.logits[row.logitsOffset + cand[0]!]! - row.lse.max - row.lse.logSum];
      for (let k = 1; k < cand.length; k++) lp.push(targets ? out![b * L + k - 1]! : logSoftmaxAt(out!, (b * L + k - 1) * V, V, cand[k]!));
      tokenLogProbs[row.job]![row.mixture]![c] = lp;
      if (wantEntropy) tokenEntropies[row.job]![row.mixture]![c] = candidateEntropy(row.firstEntropy, out, b * L, cand.length - 1, V);
    });
  }

  const sum = pack.manifest.prompt.scoreNormalization === "sum";
  const aggregate = (lp: number[]) => {
    const total = lp.reduce((a, b) => a + b, 0);
    return sum ? total : total / lp.length;
  };
  return {
    results: jobs.map((job, j) => {
      if (job.candidateIds.length === 0 || job.mixtures.length === 0) return { scores: [], tokenLogProbs: [], runs };
      const tlp = tokenLogProbs[j]!;
      return {
        scores: tlp.map((m) => m.map(aggregate)),
        tokenLogProbs: tlp,
        ...(wantEntropy ? { tokenEntropies: tokenEntropies[j]! } : {}),
        runs,
      };
    }),
    runs,
  };
}
