/**
 * Untrusted recommend requests → score jobs → responses, one at a time or in batches of requests
 * that share adapters. The recommender supplies the scoring.
 */
import { checkFiniteScores } from "./finite-scores.js";
import type { AdapterWeights } from "./lora-mixture.js";
import { entropy, rankByScore, softmax } from "./math.js";
import { type EntropyObjective, objectiveValues } from "./objectives.js";
import type { ModelPack } from "./pack.js";
import { chooseRow, resolveDomain, resolvePolicy } from "./policies.js";
import { buildCandidate, buildPrompt } from "./prompt.js";
import type { RecommendResponse } from "./recommender.js";
import { parseRecommendRequest, type RequestLimits } from "./request.js";
import { checkScoreJob, type ScoreJob, type ScoreResult } from "./scoring-job.js";

/** What a request is prepared against. */
export interface RequestEnv {
  pack: ModelPack;
  limits: RequestLimits;
  adaptiveLambdas: readonly number[];
  entropyObjective: EntropyObjective;
}

/** A validated, tokenized request: its score job and how its scores become the response. */
export interface Prepared {
  job: ScoreJob;
  /** The answer is chosen by the entropy objective (the `adaptive` policy). */
  needsObjective: boolean;
  finish(result: ScoreResult): RecommendResponse;
}

/** Validates an untrusted request, resolves its domain and policy, and tokenizes it. */
export function prepareRequest(env: RequestEnv, body: unknown): Prepared {
  const m = env.pack.manifest;
  const req = parseRecommendRequest(body, env.limits);
  const domain = resolveDomain(m, req.domain);
  const policy = resolvePolicy({ manifest: m, domain, adaptiveLambdas: env.adaptiveLambdas }, req.mixture);
  const prompt = buildPrompt(env.pack.encoder, m.prompt, req.history);
  const candidateIds = req.candidates.map((c) => buildCandidate(env.pack.encoder, m.prompt, c));
  const finish = (result: ScoreResult): RecommendResponse => {
    const objective = policy.byObjective ? objectiveValues(env.entropyObjective, result) : [];
    const chosen = chooseRow(policy, (i) => objective[i]!);
    const scores = result.scores[chosen]!;
    const { lambda, source } = policy.rows[chosen]!;
    checkFiniteScores(scores);
    const probs = softmax(scores);
    const order = rankByScore(scores).slice(0, req.topK ?? scores.length);
    return {
      domain,
      mixture: { policy: typeof req.mixture === "object" ? "lambda" : req.mixture, lambda, source },
      ranked: order.map((i) => ({ index: i, title: req.candidates[i]!, score: scores[i]!, probability: probs[i]! })),
      entropy: entropy(probs),
      promptTokens: prompt.ids.length,
      droppedHistoryItems: prompt.droppedHistoryItems,
    };
  };
  return {
    job: { promptIds: prompt.ids, candidateIds, mixtures: policy.rows.map((r) => r.weights) },
    needsObjective: policy.byObjective,
    finish,
  };
}

/**
 * The adapters a job's rows use, as a key: a run pays for every adapter any of its rows uses (the
 * mixer concatenates them), so requests are batched only with requests of the same key.
 */
export function adapterSetKey(mixtures: readonly AdapterWeights[]): string {
  return [...new Set(mixtures.flatMap((w) => w.filter(([, x]) => x !== 0).map(([name]) => name)))].sort().join("|");
}

/**
 * Answers several untrusted requests, each with its own response or coded error: requests of the
 * same adapter set are scored together by `many` (alone by `one` when there is no `many`, or
 * when a group has one request).
 */
export async function recommendMany(
  env: RequestEnv,
  bodies: readonly unknown[],
  score: { one: (p: Prepared) => Promise<ScoreResult>; many: ((ps: Prepared[]) => Promise<ScoreResult[]>) | null },
): Promise<Array<PromiseSettledResult<RecommendResponse>>> {
  const out = new Array<PromiseSettledResult<RecommendResponse>>(bodies.length);
  const groups = new Map<string, Array<{ at: number; prepared: Prepared }>>();
  bodies.forEach((body, at) => {
    try {
      const prepared = prepareRequest(env, body);
      checkScoreJob(env.pack, prepared.job);
      const key = adapterSetKey(prepared.job.mixtures);
      const group = groups.get(key);
      if (group) group.push({ at, prepared });
      else groups.set(key, [{ at, prepared }]);
    } catch (reason) {
      out[at] = { status: "rejected", reason };
    }
  });
  for (const group of groups.values()) {
    for (const batch of score.many && group.length > 1 ? [group] : group.map((g) => [g])) {
      try {
        const results = batch.length > 1 ? await score.many!(batch.map((g) => g.prepared)) : [await score.one(batch[0]!.prepared)];
        for (const [i, { at, prepared }] of batch.entries()) {
          try {
            out[at] = { status: "fulfilled", value: prepared.finish(results[i]!) };
          } catch (reason) {
            out[at] = { status: "rejected", reason };
          }
        }
      } catch (reason) {
        for (const { at } of batch) out[at] = { status: "rejected", reason };
      }
    }
  }
  return out;
}
