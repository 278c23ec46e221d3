import type { InferenceSession } from "./backend.js";
import { scoreBatchedJobs, type BatchScoringOptions } from "./batch-scoring.js";
import type { LoraMixer } from "./lora-mixture.js";
import { scoreNaive } from "./naive-scoring.js";
import type { ModelPack } from "./pack.js";
import { isEmptyJob, type ScoreJob, type ScoreResult } from "./scoring-job.js";

export type { ScoreJob, ScoreResult } from "./scoring-job.js";

/**
 * How candidates are scored. `prefix` (default) runs the prompt once per mixture and reuses its
 * KV cache for batched candidate suffixes (`scoreBatchedJobs` with one job). `naive` runs prompt +
 * candidate in full, once per candidate: the reference the prefix path is tested against, and the
 * benchmark baseline.
 */
export type ScoringStrategy = "prefix" | "naive";

/** Options of {@link scoreCandidates}: the engine's ({@link BatchScoringOptions}), the strategy, and `bucketByLength`. */
export interface ScoringOptions extends BatchScoringOptions {
  strategy?: ScoringStrategy;
  /**
   * Split candidate rows into runs of similar length when the padding saved is worth an extra run
   * (`runCostTokens`). On by default: titles vary in length, and one batch padded to the longest
   * title measured 1.3–1.7× slower on CPU and WASM (docs/performance.md). `false` is
   * `runCostTokens: Infinity`: as few runs as `maxBatchRows` and `maxCandidateLogits` allow.
   */
  bucketByLength?: boolean;
  /**
   * Also return {@link ScoreResult.tokenEntropies} (the token-level entropy objective of the
   * `tokens` mixing criterion). Needs the graph's full `logits`, so packs exported with
   * `token_logprobs` fetch logits instead on these runs.
   */
  tokenEntropy?: boolean;
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
  if (isEmptyJob(job)) return { scores: [], tokenLogProbs: [], runs: 0 };
  const { strategy = "prefix", bucketByLength = true, ...engine } = options;
  if (strategy === "naive") return scoreNaive(session, pack, mixer, job, engine.tokenEntropy ?? false);
  if (!bucketByLength) engine.runCostTokens = Infinity;
  return (await scoreBatchedJobs(session, pack, mixer, [job], engine)).results[0]!;
}
