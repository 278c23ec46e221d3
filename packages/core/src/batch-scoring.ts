import type { InferenceSession } from "./backend.js";
import type { AdapterWeights, LoraMixer } from "./lora-mixture.js";
import type { ModelPack } from "./pack.js";
import type { TensorLike } from "./tensor.js";
import {
  candidateEntropy,
  candidateEntropyOf,
  candidateLogProbs,
  type CacheSlot,
  type FeedContext,
  feedContext,
  type FirstToken,
  firstToken,
  pastFeeds,
  runModel,
  sequenceFeeds,
  type SuffixRow,
  suffixFeeds,
  suffixLength,
} from "./scoring-feeds.js";
import { checkScoreJob, isEmptyJob, type ScoreJob, type ScoreResult, scoreResult } from "./scoring-job.js";
import { type CandidateRun, type PlanLimits, type PromptRun, planScoring, RUN_COST_TOKENS, tokenCosts } from "./scoring-plan.js";

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
   * A model run's fixed cost in padded tokens: prompts and candidates are split into runs of
   * similar length when the padding saved is worth more than this per extra run. Default 32; 0
   * splits whenever padding is saved, `Infinity` pads rows to the longest in as few runs as possible.
   */
  runCostTokens?: number;
  /**
   * Upper bound on the floats of logits one candidate run computes (`rows × suffix × vocab`): past a
   * few MiB, writing and reading them costs more than the runs saved, and with a large vocabulary
   * they dominate memory. Default 4 M (16 MiB). On a fan-out graph a job's mixtures stay in one run
   * (their shared layers run once), so one candidate under all of them may exceed it.
   */
  maxCandidateLogits?: number;
  /** Also return each job's `tokenEntropies` (as `ScoringOptions.tokenEntropy`). */
  tokenEntropy?: boolean;
}

/** The answer of {@link scoreBatchedJobs}: one {@link ScoreResult} per job, in job order. */
export interface BatchScoreResult {
  /** `results[j]` scores `jobs[j]`; its `runs` is the model runs of the whole batch, shared by all jobs. */
  results: ScoreResult[];
  /** Model runs made for the whole batch. */
  runs: number;
}

const DEFAULT_MAX_LOGITS = 4 * 1024 * 1024;

/** One prompt row of the batch: a job's prompt under one of its mixtures. */
interface PromptRow {
  job: number;
  mixture: number;
  promptIds: readonly number[];
  candidateIds: ReadonlyArray<readonly number[]>;
  weights: AdapterWeights;
}

/**
 * What a prompt run leaves for each of its rows: where its cache is (on a fan-out graph, `shared`:
 * where its job's cache of the shared layers is), and its first-token distribution.
 */
interface PromptState {
  slot: CacheSlot;
  shared: CacheSlot | null;
  first: FirstToken;
}

/** The executor's state: what every run reads, and where candidate log-probs go. */
interface Batch {
  session: InferenceSession;
  mixer: LoraMixer;
  ctx: FeedContext;
  grouped: boolean;
  wantEntropy: boolean;
  rows: PromptRow[];
  states: PromptState[];
  /** `tokenLogProbs[job][mixture][candidate]`, and the entropies likewise. */
  tokenLogProbs: number[][][][];
  tokenEntropies: number[][][];
}

/**
 * Scores several jobs (e.g. the requests that arrived together at a server) in shared model runs;
 * scoring one job is the same with a batch of one. Scores equal those of one full pass per
 * candidate (`scoreCandidates`, naive strategy) up to float rounding (≤ 1e-5 on the fixture pack):
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
 *    own prompt's length. Rows are planned into runs of at most `maxBatchRows` by estimated cost
 *    (`scoring-plan.ts`), whatever job they come from; a grouped-cache graph is fed each prompt
 *    row's cache once per run.
 *
 * Each row carries its own LoRA scales, so jobs of different domains and mixtures share runs. On
 * a fan-out graph (`model.sharedLayers` K > 0), the layers below K run once per job (prompt runs)
 * and once per (job, candidate) (candidate runs), however many mixtures the job has: only the
 * layers with LoRA inputs run per mixture.
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
  const wantEntropy = options.tokenEntropy ?? false;
  const ctx = feedContext(session, pack, wantEntropy);
  const rows: PromptRow[] = [];
  const prompts: number[] = [];
  const fed: number[][] = [];
  for (const [j, job] of jobs.entries()) {
    if (job.candidateIds.length === 0) continue;
    const suffixes = job.candidateIds.map(fedLength);
    for (const [m, weights] of job.mixtures.entries()) {
      rows.push({ job: j, mixture: m, promptIds: job.promptIds, candidateIds: job.candidateIds, weights });
      prompts.push(job.promptIds.length);
      fed.push(suffixes);
    }
  }
  const batch: Batch = {
    session,
    mixer,
    ctx,
    grouped: pack.manifest.model.kvCache === "grouped",
    wantEntropy,
    rows,
    states: new Array<PromptState>(rows.length),
    tokenLogProbs: jobs.map((job) => job.mixtures.map(() => new Array<number[]>(job.candidateIds.length))),
    tokenEntropies: jobs.map((job) => job.mixtures.map(() => new Array<number>(job.candidateIds.length))),
  };
  const units = ctx.sharedLayers > 0 ? rows.map((r) => r.job) : undefined;
  const plan = planScoring({ prompts, fed, grouped: batch.grouped, ...(units ? { units } : {}) }, planLimits(pack, ctx, options));
  let runs = 0;
  for (const run of plan.promptRuns) {
    await runPrompts(batch, run);
    runs++;
  }
  for (const run of plan.candidateRuns) if (await runCandidates(batch, run)) runs++;
  return {
    results: jobs.map((job, j) =>
      isEmptyJob(job)
        ? { scores: [], tokenLogProbs: [], runs }
        : scoreResult(pack, batch.tokenLogProbs[j]!, wantEntropy ? batch.tokenEntropies[j]! : undefined, runs),
    ),
    runs,
  };
}

function planLimits(pack: ModelPack, ctx: FeedContext, options: BatchScoringOptions): PlanLimits {
  return {
    maxRows: Math.max(1, options.maxBatchRows ?? 64),
    runCostTokens: options.runCostTokens ?? RUN_COST_TOKENS,
    maxPromptLogits: ctx.keep ? Infinity : (options.maxPromptLogits ?? DEFAULT_MAX_LOGITS),
    // Also with token_logprobs: the graph still holds every position's vocabulary-wide logits and
    // log-softmax while it runs (SmolLM2-135M, 100 candidates: peak RSS 1.91x the weights without
    // the bound, 1.38x with it, +7 % CPU).
    maxCandidateLogits: options.maxCandidateLogits ?? DEFAULT_MAX_LOGITS,
    vocab: ctx.vocab,
    costs: tokenCosts(pack.manifest.model),
  };
}

/** Runs prompt rows from an empty past and keeps, per row, its cache and first-token distribution. */
async function runPrompts(batch: Batch, run: PromptRun): Promise<void> {
  const { ctx } = batch;
  const rows = run.rows.map((r) => batch.rows[r]!);
  // Fan-out: one source per job (its mixtures' rows share the layers without LoRA).
  const sources: (readonly number[])[] = [];
  const rowSource: number[] = [];
  if (ctx.sharedLayers > 0) {
    const byJob = new Map<number, number>();
    for (const r of rows) {
      let s = byJob.get(r.job);
      if (s === undefined) {
        s = sources.length;
        byJob.set(r.job, s);
        sources.push(r.promptIds);
      }
      rowSource.push(s);
    }
  } else for (const r of rows) sources.push(r.promptIds);
  // Object.assign, not `{ ...a(), ...b() }`: V8 spreads such objects (about 70 properties with the
  // LoRA inputs) on a slow path whose garbage cost ~0.3 ms per request on the demo pack.
  const feeds = Object.assign(
    sequenceFeeds(ctx, sources, run.width, 1, undefined, ctx.sharedLayers > 0 ? rowSource : undefined),
    batch.mixer.feeds(rows.map((r) => r.weights)),
  );
  const out = await runModel(batch.session, feeds, ["logits", ...ctx.presentNames]);
  const logits = out.logits!.data as Float32Array;
  // A grouped-cache graph returns this run's keys only; a concat graph the past slots too.
  const cache = { present: ctx.presentNames.map((name) => out[name]!), width: out[ctx.presentNames[0]!]!.dims[2]! };
  run.rows.forEach((r, b) => {
    const lastRow = ctx.keep ? b : b * run.width + run.width - 1;
    const length = batch.rows[r]!.promptIds.length;
    batch.states[r] = {
      slot: { cache, row: b, length },
      shared: ctx.sharedLayers > 0 ? { cache, row: rowSource[b]!, length } : null,
      first: firstToken(logits, lastRow, ctx.vocab, batch.wantEntropy),
    };
  });
}

/** Tokens of a candidate that are fed: all but the last, which is only scored. */
function fedLength(candidate: readonly number[]): number {
  return candidate.length - 1;
}

/** Runs candidate suffixes on their prompts' caches and records their log-probs; false when no suffix needed a run. */
async function runCandidates(batch: Batch, run: CandidateRun): Promise<boolean> {
  const { ctx } = batch;
  // Loops, not per-row callbacks: closures made per run were re-optimised by V8 on every request.
  const suffixes: SuffixRow[] = [];
  const weights: AdapterWeights[] = [];
  for (const { prompt, candidate } of run.rows) {
    const row = batch.rows[prompt]!;
    suffixes.push({ promptLength: row.promptIds.length, tokens: row.candidateIds[candidate]! });
    weights.push(row.weights);
  }
  const L = suffixLength(suffixes);
  let out: Float32Array | null = null;
  let entropies: Float32Array | null = null;
  if (L > 0) {
    let width = 0;
    for (const s of suffixes) width = Math.max(width, s.promptLength);
    const slots: CacheSlot[] = [];
    if (run.caches) for (const r of run.caches) slots.push(batch.states[r]!.slot);
    else for (const r of run.rows) slots.push(batch.states[r.prompt]!.slot);
    const K = ctx.sharedLayers;
    let feeds: Record<string, TensorLike>;
    if (K > 0) {
      const fan = fanOut(batch, run, suffixes);
      feeds = Object.assign(
        suffixFeeds(ctx, fan.sources, width, L, fan.rowSource),
        pastFeeds(ctx, fan.slots, width, 0, K),
        pastFeeds(ctx, slots, width, K),
        batch.mixer.feeds(weights),
      );
    } else feeds = Object.assign(suffixFeeds(ctx, suffixes, width, L), pastFeeds(ctx, slots, width), batch.mixer.feeds(weights));
    // Only what is read: the candidates' own KV cache is never needed again.
    const res = await runModel(
      batch.session,
      feeds,
      ctx.entropyOutput ? ["token_logprobs", "token_entropy"] : [ctx.targets ? "token_logprobs" : "logits"],
    );
    out = (ctx.targets ? res.token_logprobs! : res.logits!).data as Float32Array;
    if (ctx.entropyOutput) entropies = res.token_entropy!.data as Float32Array;
  }
  for (const [b, { prompt, candidate }] of run.rows.entries()) {
    const { job, mixture } = batch.rows[prompt]!;
    const { first } = batch.states[prompt]!;
    const tokens = suffixes[b]!.tokens;
    batch.tokenLogProbs[job]![mixture]![candidate] = candidateLogProbs(ctx, first, out, b, L, tokens);
    if (batch.wantEntropy)
      batch.tokenEntropies[job]![mixture]![candidate] = ctx.entropyOutput
        ? candidateEntropyOf(first, entropies ?? new Float32Array(0), b * L, tokens.length - 1)
        : candidateEntropy(first, out, b * L, tokens.length - 1, ctx.vocab);
  }
  return L > 0;
}

/**
 * A candidate run's sources on a fan-out graph: one per (job, candidate), in order of first use,
 * each row's source, and the shared layers' cache slots. A grouped run feeds each job's shared
 * cache once when its sources are consecutive and equally many per job (every grouped plan: the
 * mixtures of a job share one slice of its candidates); otherwise one slot per source.
 */
function fanOut(
  batch: Batch,
  run: CandidateRun,
  suffixes: readonly SuffixRow[],
): { sources: SuffixRow[]; rowSource: number[]; slots: CacheSlot[] } {
  const sources: SuffixRow[] = [];
  const rowSource: number[] = [];
  const sourceJob: number[] = [];
  const sourceSlot: CacheSlot[] = [];
  const byJob = new Map<number, Map<number, number>>();
  for (const [b, { prompt, candidate }] of run.rows.entries()) {
    const job = batch.rows[prompt]!.job;
    let ofJob = byJob.get(job);
    if (!ofJob) byJob.set(job, (ofJob = new Map()));
    let s = ofJob.get(candidate);
    if (s === undefined) {
      s = sources.length;
      ofJob.set(candidate, s);
      sources.push(suffixes[b]!);
      sourceJob.push(job);
      sourceSlot.push(batch.states[prompt]!.shared!);
    }
    rowSource.push(s);
  }
  if (run.caches && batch.grouped) {
    const per = sources.length / byJob.size;
    let consecutive = Number.isInteger(per);
    for (let s = 0; consecutive && s < sources.length; s++) if (sourceJob[s] !== sourceJob[s - (s % per)]) consecutive = false;
    if (consecutive) {
      const slots: CacheSlot[] = [];
      for (let s = 0; s < sources.length; s += per) slots.push(sourceSlot[s]!);
      return { sources, rowSource, slots };
    }
  }
  return { sources, rowSource, slots: sourceSlot };
}
