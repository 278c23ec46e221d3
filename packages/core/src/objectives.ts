/**
 * The label-free objectives that choose a mixture: entropy objectives per request (the `adaptive`
 * policy, calibration) and the information objective over groups of requests (calibration).
 */
import { MolorecError } from "./errors.js";
import { entropy, softmax } from "./math.js";
import type { ScoreResult } from "./scoring-job.js";

/**
 * What the entropy-guided policies (`adaptive`, calibration) minimise, on unlabeled requests.
 * `tokens` (default): the mean entropy of the model's next-token distributions along the request's
 * candidate titles (the paper's token-level entropy, teacher-forced on the candidates rather than
 * on greedy generations). `answer`: the same entropy along the one candidate the mixture ranks
 * first — the model's own answer, as the paper measures entropy on what the model generates, so
 * that an adapter trained to reject wrong titles is not penalised for its surprise on them.
 * `candidates`: the entropy of the softmax over the candidates' scores. On the demo pack,
 * `candidates` prefers an adapter that is confidently wrong (docs/results.md).
 */
export type EntropyObjective = "tokens" | "answer" | "candidates";

/** The objectives {@link EntropyObjective} allows. */
export const ENTROPY_OBJECTIVES: readonly EntropyObjective[] = ["tokens", "answer", "candidates"];

/**
 * What `Recommender.calibrate` optimises over unlabeled requests: one of the
 * {@link EntropyObjective}s (their mean is minimised), or `information`: the mutual information
 * between a request's history and the candidate it picks, maximised — the entropy of the mean
 * candidate distribution minus the mean entropy (information maximisation, as in test-time
 * adaptation's SHOT), measured on candidate sets shared by groups of requests so that the two
 * entropies are over the same items. Plain entropy minimisation rewards a mixture that is
 * confident about the same candidates whatever the history (a prior, e.g. an adapter that never saw
 * the domain); the marginal term penalises exactly that. Not per request: `adaptive` keeps its
 * entropy objective.
 */
export type CalibrationObjective = EntropyObjective | "information";

/** The objectives {@link CalibrationObjective} allows. */
export const CALIBRATION_OBJECTIVES: readonly CalibrationObjective[] = [...ENTROPY_OBJECTIVES, "information"];

/** Throws `INVALID_REQUEST` unless `kind` is one of `allowed`; `what` names the option in the message. */
export function checkObjective<T extends string>(kind: T, allowed: readonly T[], what: string): T {
  if (!allowed.includes(kind))
    throw new MolorecError("INVALID_REQUEST", `${what} must be one of ${allowed.join(", ")}, got ${JSON.stringify(kind)}`);
  return kind;
}

/** Whether scoring must return token entropies for `kind` (all but `candidates` read them). */
export function needsTokenEntropies(kind: EntropyObjective): boolean {
  return kind !== "candidates";
}

/** The objective of each mixture of one scored request (scored with token entropies when {@link needsTokenEntropies}). */
export function objectiveValues(kind: EntropyObjective, result: ScoreResult): number[] {
  if (kind === "candidates") return result.scores.map((s) => entropy(softmax(s)));
  const entropies = result.tokenEntropies;
  if (!entropies) throw new MolorecError("INVALID_REQUEST", `the ${kind} objective needs scores with token entropies`);
  if (kind === "answer") {
    return entropies.map((row, m) => {
      const s = result.scores[m]!;
      return row[s.indexOf(Math.max(...s))]!;
    });
  }
  return entropies.map((row) => row.reduce((a, b) => a + b, 0) / row.length);
}

/** Requests that share one candidate set for the information objective. */
export interface InformationGroup {
  candidates: string[];
  histories: string[][];
}

/**
 * Groups of requests for the `information` objective: round-robin into ⌊n / size⌋ groups (at
 * least one), each scored on the candidates of its first request with ≥ 2 candidates.
 */
export function informationGroups(requests: ReadonlyArray<{ history: string[]; candidates: string[] }>, size: number): InformationGroup[] {
  if (!(Number.isInteger(size) && size >= 2)) throw new MolorecError("INVALID_REQUEST", `groupSize must be an integer ≥ 2, got ${size}`);
  if (requests.length < 2)
    throw new MolorecError(
      "INVALID_REQUEST",
      `the information objective needs at least 2 unlabeled requests (it compares histories), got ${requests.length}`,
    );
  const n = Math.max(1, Math.floor(requests.length / size));
  const groups = Array.from({ length: n }, () => [] as Array<{ history: string[]; candidates: string[] }>);
  requests.forEach((r, i) => groups[i % n]!.push(r));
  return groups.map((members) => {
    const shared = members.find((r) => Array.isArray(r.candidates) && r.candidates.length >= 2);
    if (!shared) throw new MolorecError("INVALID_REQUEST", "the information objective needs requests with at least 2 candidates");
    return { candidates: shared.candidates, histories: members.map((r) => r.history) };
  });
}

/**
 * Minus the mutual information between history and pick in one group, under one mixture:
 * `scores[h]` are the shared candidates' scores after history h. The entropy of the mean candidate
 * distribution minus the mean entropy, negated so that it is minimised like the entropies.
 */
export function negativeInformation(scores: ReadonlyArray<readonly number[]>): number {
  const probs = scores.map((s) => softmax(s));
  const mean = probs[0]!.map((_, k) => probs.reduce((a, p) => a + p[k]!, 0) / probs.length);
  const meanEntropy = probs.reduce((a, p) => a + entropy(p), 0) / probs.length;
  return meanEntropy - entropy(mean);
}
