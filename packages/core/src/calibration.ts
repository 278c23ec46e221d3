import { MolorecError } from "./errors.js";
import { searchLambda, type LambdaSearchOptions, type LambdaSearchResult } from "./lambda-search.js";
import type { AdapterWeights } from "./lora-mixture.js";
import {
  CALIBRATION_OBJECTIVES,
  type CalibrationObjective,
  checkObjective,
  type EntropyObjective,
  informationGroups,
  negativeInformation,
} from "./objectives.js";
import type { MixturePolicy, ResolvedMixture } from "./policies.js";

/** Options of {@link calibrateLambda} (and `Recommender.calibrate`): the λ search's, and the objective. */
export interface CalibrationOptions extends LambdaSearchOptions {
  /** Default: the recommender's `entropyObjective`. */
  objective?: CalibrationObjective;
  /**
   * `information` only: requests per shared candidate set (each group is scored on the candidates
   * of its first request). Default 16; fewer than 2 requests per group is refused.
   */
  groupSize?: number;
  /**
   * Called after each request (or, for `information`, each group) is scored at a batch of λ
   * values: a large model takes minutes to calibrate, and a caller wants to show that it moves.
   */
  onProgress?: (progress: CalibrationProgress) => void;
}

/** What {@link CalibrationOptions.onProgress} reports: requests scored so far, at how many λ values. */
export interface CalibrationProgress {
  /** λ values scored so far (the search's grid, then its refinements). */
  lambdasDone: number;
  /** λ values in the batch being scored. */
  lambdas: number;
  /** Requests scored at this batch's λ values, of `requests` (for `information`: those in a group). */
  scored: number;
  requests: number;
}

/**
 * A calibration result. `objective` (and each `evaluated[].objective`) is the value minimised: the
 * mean entropy in nats, or, for `information`, minus the mutual information in nats.
 */
export interface CalibrationResult extends LambdaSearchResult {
  objectiveKind: CalibrationObjective;
}

/** An unlabeled request: what calibration scores. */
export interface UnlabeledRequest {
  history: string[];
  candidates: string[];
}

/** What calibration needs of a recommender: resolving λ to adapter weights and scoring mixtures. */
export interface MixtureScorer {
  /** The recommender's objective, the default of {@link CalibrationOptions.objective}. */
  readonly entropyObjective: EntropyObjective;
  resolveMixture(domain: string | null, policy: MixturePolicy): ResolvedMixture;
  scoreMixtures(input: { history: string[]; candidates: string[]; mixtures: AdapterWeights[] }): Promise<number[][]>;
  scoreWithEntropy(
    input: { history: string[]; candidates: string[]; mixtures: AdapterWeights[] },
    objective?: EntropyObjective,
  ): Promise<{ scores: number[][]; objective: number[] }>;
}

/**
 * Finds a domain's λ on unlabeled requests (labels are never needed): minimising the mean
 * {@link EntropyObjective}, or maximising the history–pick mutual information (`information`).
 * Each λ the search tries is one batch row; every request is scored once per search round.
 *
 * @example
 * ```ts
 * const { lambda } = await calibrateLambda(rec, "movies", unlabeled, { objective: "information" });
 * ```
 */
export async function calibrateLambda(
  scorer: MixtureScorer,
  domain: string,
  requests: readonly UnlabeledRequest[],
  options: CalibrationOptions = {},
): Promise<CalibrationResult> {
  scorer.resolveMixture(domain, "base"); // UNKNOWN_DOMAIN before anything else
  const { objective = scorer.entropyObjective, groupSize = 16, onProgress, ...search } = options;
  const kind = checkObjective(objective, CALIBRATION_OBJECTIVES, "calibration objective");
  const weights = (lambdas: number[]) => lambdas.map((lambda) => scorer.resolveMixture(domain, { lambda }).weights);
  if (requests.length === 0) throw new MolorecError("INVALID_REQUEST", "calibration needs at least one unlabeled request");
  let lambdasDone = 0;
  const progress = (lambdas: number, scored: number, total: number) => {
    if (scored === total) lambdasDone += lambdas;
    onProgress?.({ lambdasDone, lambdas, scored, requests: total });
  };
  if (kind === "information") {
    const groups = informationGroups(requests, groupSize);
    const grouped = groups.reduce((n, g) => n + g.histories.length, 0);
    const result = await searchLambda(async (lambdas) => {
      const mixtures = weights(lambdas);
      const total = new Array<number>(lambdas.length).fill(0);
      let scored = 0;
      for (const { candidates, histories } of groups) {
        const scores: number[][][] = [];
        for (const history of histories) scores.push(await scorer.scoreMixtures({ history, candidates, mixtures }));
        // Minus the group's mutual information, weighted by its share of the requests.
        lambdas.forEach((_, i) => {
          total[i]! += (negativeInformation(scores.map((s) => s[i]!)) * histories.length) / requests.length;
        });
        scored += histories.length;
        progress(lambdas.length, scored, grouped);
      }
      return total;
    }, search);
    return { ...result, objectiveKind: kind };
  }
  const result = await searchLambda(async (lambdas) => {
    const sums = new Array<number>(lambdas.length).fill(0);
    for (const [n, r] of requests.entries()) {
      const { objective: values } = await scorer.scoreWithEntropy({ ...r, mixtures: weights(lambdas) }, kind);
      values.forEach((h, i) => (sums[i]! += h));
      progress(lambdas.length, n + 1, requests.length);
    }
    return sums.map((s) => s / requests.length);
  }, search);
  return { ...result, objectiveKind: kind };
}
