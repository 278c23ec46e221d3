// The naive scorer as a user of a generic text-generation library writes it: one full forward
// pass per candidate over prompt + candidate, taking the logits of EVERY position (transformers'
// `model(input_ids).logits`, logits_to_keep = 0), then the log-softmax of each candidate token.
// core's `strategy: "naive"` is the same loop with the logits trimmed to the candidate's positions
// (num_logits_to_keep), which a generic user does not do; the benchmark reports both.
import { int64, logSoftmaxAt } from "../../packages/core/dist/internal.js";
import { aggregate, emptyPast } from "./packed.mjs";

/**
 * Scores `job` (one or more mixtures) on a graph with `num_logits_to_keep` and a concat KV cache,
 * asking for all positions' logits. Returns { scores, runs } as core's scorers do.
 */
export async function scoreNaiveFull(session, pack, mixer, job) {
  const V = pack.manifest.model.vocabSize;
  const P = job.promptIds.length;
  const past = emptyPast(pack, 1);
  const scores = [];
  let runs = 0;
  for (const mixture of job.mixtures) {
    const lora = mixer.feeds([mixture]);
    const row = [];
    for (const cand of job.candidateIds) {
      const seq = [...job.promptIds, ...cand.slice(0, -1)];
      const S = seq.length;
      const feeds = {
        input_ids: int64(seq, [1, S]),
        attention_mask: int64(new Array(S).fill(1), [1, S]),
        position_ids: int64(
          seq.map((_, i) => i),
          [1, S],
        ),
        num_logits_to_keep: int64([0], [1]),
        ...past,
        ...lora,
      };
      const out = await session.run(feeds, ["logits"]);
      runs++;
      const logits = out.logits.data;
      row.push(
        aggregate(
          pack,
          cand.map((tok, k) => logSoftmaxAt(logits, (P - 1 + k) * V, V, tok)),
        ),
      );
    }
    scores.push(row);
  }
  return { scores, runs };
}
