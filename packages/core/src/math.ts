/** log-softmax of `logits[offset .. offset+n)` evaluated at one index, in float64. */
export function logSoftmaxAt(logits: Float32Array, offset: number, n: number, index: number): number {
  const { max, logSum } = logSumExp(logits, offset, n);
  return logits[offset + index]! - max - logSum;
}

/**
 * log Σ exp over `logits[offset .. offset+n)` as its two parts, `max` and `logSum`, so that
 * `logits[offset + i] - max - logSum` equals {@link logSoftmaxAt} bit for bit.
 */
export function logSumExp(logits: Float32Array, offset: number, n: number): { max: number; logSum: number } {
  let max = -Infinity;
  for (let i = 0; i < n; i++) {
    const v = logits[offset + i]!;
    if (v > max) max = v;
  }
  let sum = 0;
  for (let i = 0; i < n; i++) sum += Math.exp(logits[offset + i]! - max);
  return { max, logSum: Math.log(sum) };
}

/**
 * Shannon entropy (nats) of the softmax of `logits[offset .. offset+n)`: the uncertainty of one
 * next-token distribution. Computed as max + log Σ exp(x − max) − Σ p·x, without a probability array.
 */
export function logitsEntropy(logits: Float32Array, offset: number, n: number): number {
  let max = -Infinity;
  for (let i = 0; i < n; i++) {
    const v = logits[offset + i]!;
    if (v > max) max = v;
  }
  let sum = 0;
  let weighted = 0;
  for (let i = 0; i < n; i++) {
    const v = logits[offset + i]!;
    const e = Math.exp(v - max);
    sum += e;
    weighted += e * (v - max);
  }
  return Math.log(sum) - weighted / sum;
}

/** Softmax of scores (temperature 1), stable. */
export function softmax(scores: ArrayLike<number>): number[] {
  let max = -Infinity;
  for (let i = 0; i < scores.length; i++) max = Math.max(max, scores[i]!);
  const exps = Array.from(scores, (s) => Math.exp(s - max));
  const sum = exps.reduce((a, b) => a + b, 0);
  return exps.map((e) => e / sum);
}

/** Shannon entropy in nats of a probability vector. */
export function entropy(probs: ArrayLike<number>): number {
  let h = 0;
  for (let i = 0; i < probs.length; i++) {
    const p = probs[i]!;
    if (p > 0) h -= p * Math.log(p);
  }
  return h;
}

/** Indices sorted by descending score; ties keep the input order. */
export function rankByScore(scores: ArrayLike<number>): number[] {
  return Array.from(scores, (_, i) => i).sort((a, b) => scores[b]! - scores[a]! || a - b);
}
