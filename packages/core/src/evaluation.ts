import { MolorecError } from "./errors.js";
import type { AdapterWeights } from "./lora-mixture.js";
import { entropy, softmax } from "./math.js";
import { RankingMetrics, rankOf } from "./metrics.js";
import type { Recommender } from "./recommender.js";
import type { MixturePolicy } from "./request.js";

/** A labelled test case: `label` is the index of the positive among the candidates. */
export interface EvalCase {
  history: string[];
  candidates: string[];
  label: number;
}

/** Metrics of one policy over a test set. */
export interface PolicyMetrics {
  policy: string;
  /** λ used (mean λ chosen, for `adaptive`); null for `base`. */
  lambda: number | null;
  count: number;
  ndcg1: number;
  ndcg3: number;
  hr3: number;
  mrr: number;
  /** Mean entropy of the candidate distribution (of the chosen mixture, for `adaptive`). */
  entropy: number;
}

export function policyName(p: MixturePolicy): string {
  return typeof p === "object" ? `lambda=${p.lambda}` : p;
}

/**
 * Evaluates several mixture policies on labelled cases. All the mixtures a case needs (every
 * policy's λ, and the adaptive grid) are scored as rows of one batch, so adding a policy costs
 * extra batch rows, not extra prompt passes. `adaptive` picks, per case, the λ of its grid with the
 * least {@link Recommender.entropyObjective}, as `recommend` does.
 */
export async function evaluatePolicies(
  rec: Recommender,
  cases: readonly EvalCase[],
  options: { domain: string | null; policies: readonly MixturePolicy[]; onProgress?: (done: number, total: number) => void },
): Promise<PolicyMetrics[]> {
  const rows: AdapterWeights[] = [];
  const rowKey: string[] = [];
  const rowOf = (w: AdapterWeights): number => {
    const key = JSON.stringify(w);
    let i = rowKey.indexOf(key);
    if (i < 0) {
      i = rows.push(w) - 1;
      rowKey.push(key);
    }
    return i;
  };
  const plans = options.policies.map((p) => {
    if (p === "adaptive") {
      const grid = rec.adaptiveLambdas.map((l) => rec.resolveMixture(options.domain, { lambda: l }));
      return { policy: p, rows: grid.map((g) => rowOf(g.weights)), lambdas: grid.map((g) => g.lambda!) };
    }
    const r = rec.resolveMixture(options.domain, p);
    return { policy: p, rows: [rowOf(r.weights)], lambdas: [r.lambda] };
  });
  const needsObjective = plans.some((p) => p.rows.length > 1);
  const metrics = plans.map(() => new RankingMetrics());
  const entropySums = plans.map(() => 0);
  const lambdaSums = plans.map(() => 0);

  for (let i = 0; i < cases.length; i++) {
    const c = cases[i]!;
    if (!Number.isInteger(c.label) || c.label < 0 || c.label >= c.candidates.length) {
      throw new MolorecError("INVALID_REQUEST", `case ${i}: label ${c.label} is not an index into its ${c.candidates.length} candidates`);
    }
    const input = { history: c.history, candidates: c.candidates, mixtures: rows };
    const { scores, objective } = needsObjective
      ? await rec.scoreWithEntropy(input)
      : { scores: await rec.scoreMixtures(input), objective: null };
    plans.forEach((plan, k) => {
      let best = 0;
      if (objective) plan.rows.forEach((r, j) => (objective[r]! < objective[plan.rows[best]!]! ? (best = j) : 0));
      const chosen = scores[plan.rows[best]!]!;
      metrics[k]!.add(rankOf(chosen, c.label));
      entropySums[k]! += entropy(softmax(chosen));
      lambdaSums[k]! += plan.lambdas[best] ?? 0;
    });
    options.onProgress?.(i + 1, cases.length);
  }
  return plans.map((plan, k) => ({
    policy: policyName(plan.policy),
    lambda: plan.lambdas[0] === null ? null : lambdaSums[k]! / Math.max(cases.length, 1),
    ...metrics[k]!.summary(),
    entropy: entropySums[k]! / Math.max(cases.length, 1),
  }));
}
