// Packed scoring on the block-causal graph variant (training: export_onnx(attention="block")),
// where attention_mask is [batch, seq, total] and says which key each query may see.
//
// - scorePacked: prompt + every candidate in ONE sequence, one run. Candidate tokens see the
//   prompt and their own earlier tokens, never another candidate; positions restart at P for
//   each candidate, so each candidate sees exactly what it sees in a run of its own.
// - scorePackedCached: the prompt once (its KV cache kept), then all candidates packed in one
//   row over that cache: no per-candidate copies of the prompt's KV cache.
// Both score one mixture (row) per batch row; the benchmark uses one.
import { kvNames, logSoftmaxAt, tensor } from "../../packages/core/dist/internal.js";

function i64(values) {
  const out = new BigInt64Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = BigInt(values[i]);
  return out;
}

export function emptyPast(pack, batch) {
  const { numLayers, numKvHeads, headDim } = pack.manifest.model;
  const feeds = {};
  const empty = tensor("float32", new Float32Array(0), [batch, numKvHeads, 0, headDim]);
  for (let i = 0; i < numLayers; i++) {
    feeds[kvNames.pastKey(i)] = empty;
    feeds[kvNames.pastValue(i)] = empty;
  }
  return feeds;
}

export function aggregate(pack, lps) {
  const s = lps.reduce((a, b) => a + b, 0);
  return pack.manifest.prompt.scoreNormalization === "sum" ? s : s / lps.length;
}

/** Lays candidates (all but their last token) after `offset` tokens; returns ids, positions, starts. */
function layOut(candidateIds, P) {
  const ids = [];
  const pos = [];
  const starts = [];
  for (const cand of candidateIds) {
    starts.push(ids.length);
    for (let k = 0; k < cand.length - 1; k++) {
      ids.push(cand[k]);
      pos.push(P + k);
    }
  }
  return { ids, pos, starts };
}

export async function scorePacked(session, pack, mixer, job) {
  const V = pack.manifest.model.vocabSize;
  const P = job.promptIds.length;
  const M = job.mixtures.length;
  const lay = layOut(job.candidateIds, P);
  const S = P + lay.ids.length;
  const ids = [...job.promptIds, ...lay.ids];
  const pos = [...job.promptIds.map((_, t) => t), ...lay.pos];
  const mask = new BigInt64Array(M * S * S);
  for (let m = 0; m < M; m++) {
    const base = m * S * S;
    for (let q = 0; q < P; q++) mask.fill(1n, base + q * S, base + q * S + q + 1);
    job.candidateIds.forEach((cand, c) => {
      const s = P + lay.starts[c];
      for (let k = 0; k < cand.length - 1; k++) {
        const row = base + (s + k) * S;
        mask.fill(1n, row, row + P);
        mask.fill(1n, row + s, row + s + k + 1);
      }
    });
  }
  const rep = (xs) => {
    const out = new BigInt64Array(M * xs.length);
    const one = i64(xs);
    for (let m = 0; m < M; m++) out.set(one, m * xs.length);
    return out;
  };
  const out = await session.run(
    {
      input_ids: tensor("int64", rep(ids), [M, S]),
      attention_mask: tensor("int64", mask, [M, S, S]),
      position_ids: tensor("int64", rep(pos), [M, S]),
      ...emptyPast(pack, M),
      ...mixer.feeds(job.mixtures),
    },
    ["logits"],
  );
  const logits = out.logits.data;
  const scores = job.mixtures.map((_, m) =>
    job.candidateIds.map((cand, c) => {
      const lps = cand.map((tok, k) => logSoftmaxAt(logits, (m * S + (k === 0 ? P - 1 : P + lay.starts[c] + k - 1)) * V, V, tok));
      return aggregate(pack, lps);
    }),
  );
  return { scores, runs: 1 };
}

export async function scorePackedCached(session, pack, mixer, job) {
  const { numLayers, vocabSize: V } = pack.manifest.model;
  const P = job.promptIds.length;
  if (job.mixtures.length !== 1) throw new Error("scorePackedCached scores one mixture");
  const lora = mixer.feeds(job.mixtures);
  const promptMask = new BigInt64Array(P * P);
  for (let q = 0; q < P; q++) promptMask.fill(1n, q * P, q * P + q + 1);
  const prompt = await session.run({
    input_ids: tensor("int64", i64(job.promptIds), [1, P]),
    attention_mask: tensor("int64", promptMask, [1, P, P]),
    position_ids: tensor("int64", i64(job.promptIds.map((_, t) => t)), [1, P]),
    ...emptyPast(pack, 1),
    ...lora,
  });
  const promptLogits = prompt.logits.data;
  const lay = layOut(job.candidateIds, P);
  const T = lay.ids.length;
  let logits = null;
  if (T > 0) {
    const W = P + T;
    const mask = new BigInt64Array(T * W);
    job.candidateIds.forEach((cand, c) => {
      const s = lay.starts[c];
      for (let k = 0; k < cand.length - 1; k++) {
        const row = (s + k) * W;
        mask.fill(1n, row, row + P);
        mask.fill(1n, row + P + s, row + P + s + k + 1);
      }
    });
    const past = {};
    for (let i = 0; i < numLayers; i++) {
      past[kvNames.pastKey(i)] = prompt[kvNames.presentKey(i)];
      past[kvNames.pastValue(i)] = prompt[kvNames.presentValue(i)];
    }
    const out = await session.run(
      {
        input_ids: tensor("int64", i64(lay.ids), [1, T]),
        attention_mask: tensor("int64", mask, [1, T, W]),
        position_ids: tensor("int64", i64(lay.pos), [1, T]),
        ...past,
        ...lora,
      },
      ["logits"],
    );
    logits = out.logits.data;
  }
  const firstLse = new Map();
  const scores = [
    job.candidateIds.map((cand, c) => {
      const lps = cand.map((tok, k) => {
        if (k > 0) return logSoftmaxAt(logits, (lay.starts[c] + k - 1) * V, V, tok);
        if (!firstLse.has(tok)) firstLse.set(tok, logSoftmaxAt(promptLogits, (P - 1) * V, V, tok));
        return firstLse.get(tok);
      });
      return aggregate(pack, lps);
    }),
  ];
  return { scores, runs: T > 0 ? 2 : 1 };
}
