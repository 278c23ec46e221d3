import { MolorecError } from "./errors.js";
import type { AdapterWeights } from "./lora-mixture.js";
import { entropy, softmax } from "./math.js";
import { RankingMetrics, rankOf } from "./metrics.js";
import { chooseRow, type MixturePolicy, policyName, resolvePolicy } from "./policies.js";
import type { Recommender } from "./recommender.js";

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

/**
 * Evaluates several mixture policies on labelled cases. All the mixtures a case needs (every
 * policy's λ, and the adaptive grid) are scored as rows of one batch, so adding a policy costs
 * extra batch rows, not extra prompt passes. Policies resolve and choose their row as `recommend`
 * does (`policies.ts`): `adaptive` picks, per case, the λ of its grid with the least
 * {@link Recommender.entropyObjective}.
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
  const ctx = { manifest: rec.pack.manifest, domain: options.domain, adaptiveLambdas: rec.adaptiveLambdas };
  const plans = options.policies.map((policy) => {
    const resolved = resolvePolicy(ctx, policy);
    return { policy, resolved, rows: resolved.rows.map((r) => rowOf(r.weights)) };
  });
  const needsObjective = plans.some((p) => p.resolved.byObjective);
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
      const best = chooseRow(plan.resolved, (j) => objective![plan.rows[j]!]!);
      const chosen = scores[plan.rows[best]!]!;
      metrics[k]!.add(rankOf(chosen, c.label));
      entropySums[k]! += entropy(softmax(chosen));
      lambdaSums[k]! += plan.resolved.rows[best]!.lambda ?? 0;
    });
    options.onProgress?.(i + 1, cases.length);
  }
  return plans.map((plan, k) => ({
    policy: policyName(plan.policy),
    lambda: plan.resolved.rows[0]!.lambda === null ? null : lambdaSums[k]! / Math.max(cases.length, 1),
    ...metrics[k]!.summary(),
    entropy: entropySums[k]! / Math.max(cases.length, 1),
  }));
}
