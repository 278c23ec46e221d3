import { MolorecError } from "./errors.js";
import type { AdapterWeights } from "./lora-mixture.js";
import type { ModelPack } from "./pack.js";

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
   * With `tokenEntropy`: `tokenEntropies[m][c]`, the mean entropy (nats) of the model's next-token
   * distributions over candidate c's positions under mixture m.
   */
  tokenEntropies?: number[][];
  /** Model runs made (for tests and benchmarks). */
  runs: number;
}

/**
 * Checks that a job can be scored: every candidate and the prompt have tokens, and the prompt plus
 * the longest candidate fit the model's positions. Throws `INVALID_REQUEST` or `HISTORY_TOO_LONG`.
 * Call it per request before batching, so one bad request cannot fail the others of its batch.
 */
export function checkScoreJob(pack: ModelPack, job: ScoreJob): void {
  let longest = 0;
  for (const c of job.candidateIds) {
    if (c.length === 0) throw new MolorecError("INVALID_REQUEST", "a candidate has no tokens to score");
    longest = Math.max(longest, c.length);
  }
  if (job.promptIds.length === 0) throw new MolorecError("INVALID_REQUEST", "a prompt has no tokens");
  if (job.promptIds.length + longest > pack.manifest.model.maxPositions) {
    throw new MolorecError(
      "HISTORY_TOO_LONG",
      `prompt (${job.promptIds.length} tokens) plus the longest candidate (${longest}) exceed the model's ${pack.manifest.model.maxPositions} positions; send a shorter history.`,
    );
  }
}

/** A job with nothing to score (no candidates or no mixtures) gets empty scores and no runs of its own. */
export function isEmptyJob(job: ScoreJob): boolean {
  return job.candidateIds.length === 0 || job.mixtures.length === 0;
}

/**
 * A job's {@link ScoreResult} from its token log-probabilities: a candidate's score is their mean
 * or sum, per the pack's `scoreNormalization`.
 */
export function scoreResult(
  pack: ModelPack,
  tokenLogProbs: number[][][],
  tokenEntropies: number[][] | undefined,
  runs: number,
): ScoreResult {
  const sum = pack.manifest.prompt.scoreNormalization === "sum";
  return {
    scores: tokenLogProbs.map((m) => aggregateAll(m, sum)),
    tokenLogProbs,
    ...(tokenEntropies ? { tokenEntropies } : {}),
    runs,
  };
}

/** Candidates' scores from their token log-probabilities: their sums, or their means. */
function aggregateAll(candidates: readonly number[][], sum: boolean): number[] {
  const scores: number[] = [];
  for (const logProbs of candidates) {
    let total = 0;
    for (const lp of logProbs) total += lp;
    scores.push(sum ? total : total / logProbs.length);
  }
  return scores;
}
