// The naive scorer as a user of a generic text-generation library writes it: one full forward
// pass per candidate over prompt + candidate, taking the logits of EVERY position (transformers'
// `model(input_ids).logits`, logits_to_keep = 0), then the log-softmax of each candidate token.
// core's `strategy: "naive"` is the same loop with the logits trimmed to the candidate's positions
// (num_logits_to_keep), which a generic user does not do; the benchmark reports both.
import { kvNames, logSoftmaxAt, tensor } from "../../packages/core/dist/index.js";

function i64(values) {
  const out = new BigInt64Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = BigInt(values[i]);
  return out;
}

/**
 * Scores `job` (one or more mixtures) on a graph with `num_logits_to_keep` and a concat KV cache,
 * asking for all positions' logits. Returns { scores, runs } as core's scorers do.
 */
export async function scoreNaiveFull(session, pack, mixer, job) {
  const { vocabSize: V, numLayers, numKvHeads, headDim } = pack.manifest.model;
  const P = job.promptIds.length;
  const empty = tensor("float32", new Float32Array(0), [1, numKvHeads, 0, headDim]);
  const scores = [];
  let runs = 0;
  for (const mixture of job.mixtures) {
    const lora = mixer.feeds([mixture]);
    const row = [];
    for (const cand of job.candidateIds) {
      const seq = [...job.promptIds, ...cand.slice(0, -1)];
      const S = seq.length;
      const feeds = {
        input_ids: tensor("int64", i64(seq), [1, S]),
        attention_mask: tensor("int64", i64(new Array(S).fill(1)), [1, S]),
        position_ids: tensor("int64", i64(seq.map((_, i) => i)), [1, S]),
        num_logits_to_keep: tensor("int64", i64([0]), [1]),
        ...lora,
      };
      for (let i = 0; i < numLayers; i++) {
        feeds[kvNames.pastKey(i)] = empty;
        feeds[kvNames.pastValue(i)] = empty;
      }
      const out = await session.run(feeds, ["logits"]);
      runs++;
      const logits = out.logits.data;
      let sum = 0;
      for (let k = 0; k < cand.length; k++) sum += logSoftmaxAt(logits, (P - 1 + k) * V, V, cand[k]);
      row.push(pack.manifest.prompt.scoreNormalization === "sum" ? sum : sum / cand.length);
    }
    scores.push(row);
  }
  return { scores, runs };
}
