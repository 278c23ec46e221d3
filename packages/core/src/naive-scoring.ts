import type { InferenceSession } from "./backend.js";
import type { LoraMixer } from "./lora-mixture.js";
import { logSoftmaxAt } from "./math.js";
import type { ModelPack } from "./pack.js";
import { feedContext, meanRowEntropy, runModel, sequenceFeeds } from "./scoring-feeds.js";
import { checkScoreJob, type ScoreJob, type ScoreResult, scoreResult } from "./scoring-job.js";

/**
 * The reference scorer: prompt + candidate in one full pass, once per (mixture, candidate), with no
 * cache and no batching. The engine (`scoreBatchedJobs`) is tested against it, and the benchmark
 * measures it as the baseline.
 */
export async function scoreNaive(
  session: InferenceSession,
  pack: ModelPack,
  mixer: LoraMixer,
  job: ScoreJob,
  wantEntropy: boolean,
): Promise<ScoreResult> {
  checkScoreJob(pack, job);
  // The reference: entropies from full logits, never from the graph's token_entropy output.
  const ctx = feedContext(session, pack, wantEntropy, false);
  const P = job.promptIds.length;
  let runs = 0;
  const tokenLogProbs: number[][][] = [];
  const tokenEntropies: number[][] = [];
  for (const mixture of job.mixtures) {
    const lora = mixer.feeds([mixture]);
    const perCandidate: number[][] = [];
    const entropies: number[] = [];
    for (const cand of job.candidateIds) {
      const seq = [...job.promptIds, ...cand.slice(0, -1)];
      const targets = [...seq.slice(1), cand[cand.length - 1]!];
      // Positions P-1 .. S-1 score the candidate: with num_logits_to_keep only they come back.
      const feeds = Object.assign(sequenceFeeds(ctx, [seq], seq.length, cand.length, [targets]), lora);
      const out = await runModel(session, feeds, [ctx.targets ? "token_logprobs" : "logits"]);
      runs++;
      const first = ctx.keep ? 0 : P - 1;
      if (ctx.targets) {
        const lps = out.token_logprobs!.data as Float32Array;
        perCandidate.push(cand.map((_, k) => lps[first + k]!));
      } else {
        const logits = out.logits!.data as Float32Array;
        perCandidate.push(cand.map((tok, k) => logSoftmaxAt(logits, (first + k) * ctx.vocab, ctx.vocab, tok)));
        if (wantEntropy) entropies.push(meanRowEntropy(logits, first, cand.length, ctx.vocab));
      }
    }
    tokenLogProbs.push(perCandidate);
    tokenEntropies.push(entropies);
  }
  return scoreResult(pack, tokenLogProbs, wantEntropy ? tokenEntropies : undefined, runs);
}
