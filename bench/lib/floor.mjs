// The arithmetic floor of a request: the FLOPs its forward passes need, divided by the MatMul
// throughput this machine reaches with onnxruntime-node on the same threads.
import { readFileSync } from "node:fs";
import { median } from "./util.mjs";

/**
 * FLOPs a shared-prefix request needs, split by where they go. `weights` are the pack's
 * constant MatMul shapes in graph order (bench/prepare.py: [K, N] and whether it is the LM head).
 * Only what the scores need is counted: the body for the prompt and for each candidate's fed
 * tokens, the LM head for the last prompt position and each fed candidate token, LoRA terms
 * at the mixture's rank, attention over the true context (no padding). The prompt's last
 * layer needs keys and values at every position (the cache) but queries, attention, output
 * projection and MLP only at the last one: its output elsewhere feeds no score.
 */
export function requestFlops(manifest, weights, loraRank, promptLen, candidateIds) {
  const { numLayers, numHeads, numKvHeads, headDim, hiddenSize } = manifest.model;
  const body = weights.filter((w) => !w.lmHead);
  const head = weights.filter((w) => w.lmHead);
  // The last layer's weights are the last body MatMuls; its K and V projections are the two
  // [hidden, kvHeads·headDim] ones (with equal shapes any two of them: the same FLOPs).
  const perLayer = body.length / numLayers;
  const kvWidth = numKvHeads * headDim;
  let kvLeft = 2;
  const promptTokens = body.map((w, i) => {
    if (i < body.length - perLayer) return promptLen;
    if (kvLeft > 0 && w.K === hiddenSize && w.N === kvWidth) {
      kvLeft -= 1;
      return promptLen;
    }
    return 1;
  });
  const lastLayer = `layers.${numLayers - 1}.`;
  const isKv = (m) => /(^|\.)(k_proj|v_proj)$/.test(m);
  const loraPerToken = (t) => 2 * loraRank * (t.inFeatures + t.outFeatures);
  const loraPrompt = manifest.lora.targets.reduce(
    (s, t) => s + loraPerToken(t) * (t.module.includes(lastLayer) && !isKv(t.module) ? 1 : promptLen),
    0,
  );
  const perTokenLora = manifest.lora.targets.reduce((s, t) => s + loraPerToken(t), 0);
  const perTokenHead = head.reduce((s, w) => s + 2 * w.K * w.N, 0);
  const candTokens = candidateIds.reduce((s, c) => s + c.length - 1, 0);
  const attnPerCtx = numHeads * headDim * 4; // QKᵀ and PV per layer, 2 FLOPs per MAC
  let ctx = (numLayers - 1) * ((promptLen * (promptLen + 1)) / 2) + promptLen;
  for (const c of candidateIds) for (let k = 0; k < c.length - 1; k++) ctx += numLayers * (promptLen + k + 1);
  return {
    promptTokens: promptLen,
    candTokens,
    shapes: [
      ...body.map((w, i) => ({ ...w, tokensPrompt: promptTokens[i], tokensCand: candTokens })),
      ...head.map((w) => ({ ...w, tokensPrompt: 0, tokensCand: candTokens + 1 })),
    ],
    body: body.reduce((s, w, i) => s + 2 * w.K * w.N * (promptTokens[i] + candTokens), 0),
    head: (candTokens + 1) * perTokenHead,
    lora: loraPrompt + candTokens * perTokenLora,
    attention: ctx * attnPerCtx,
  };
}

/**
 * One MatMul micro-graph of bench/prepare.py (R MatMuls X[T, K]·W[K, N] per run), opened once:
 * `run(T)` times one run at T tokens and returns its throughput entry `{ K, N, T, gflops }`.
 */
export async function openMatmul(backend, g) {
  const session = await backend.createSession(new Uint8Array(readFileSync(g.path)));
  const feeds = new Map();
  const feedsOf = (T) => {
    if (!feeds.has(T))
      feeds.set(T, { X: { type: "float32", data: new Float32Array(T * g.K).map((_, i) => Math.sin(i) * 0.5), dims: [T, g.K] } });
    return feeds.get(T);
  };
  const entry = (T, runMs) => ({ K: g.K, N: g.N, T, gflops: (2 * T * g.K * g.N) / ((runMs / g.R) * 1e6) });
  return {
    async run(T) {
      const f = feedsOf(T);
      const t0 = performance.now();
      await session.run(f);
      return entry(T, performance.now() - t0);
    },
    /** The median of at least `minRuns` runs and `minMs` of running, after 2 untimed. */
    async measure(T, { minMs = 40, minRuns = 5 } = {}) {
      const f = feedsOf(T);
      for (let i = 0; i < 2; i++) await session.run(f);
      const times = [];
      const start = performance.now();
      while (times.length < minRuns || performance.now() - start < minMs) {
        const t0 = performance.now();
        await session.run(f);
        times.push(performance.now() - t0);
        if (times.length >= 200) break;
      }
      return entry(T, median(times));
    },
    release: () => session.release(),
  };
}

/** Measures GFLOP/s of X[T, K]·W[K, N] for each micro-graph of bench/prepare.py and each T. */
export async function matmulThroughput(backend, graphs, tokenCounts, options = {}) {
  const out = [];
  for (const g of graphs) {
    const mm = await openMatmul(backend, g);
    for (const T of tokenCounts) out.push(await mm.measure(T, options));
    await mm.release();
  }
  return out;
}

/**
 * Floor time (ms): every weight MatMul at the throughput measured for its own shape and token
 * count; LoRA and attention FLOPs at the best throughput measured (an optimistic floor).
 */
export function floorMs(flops, throughput) {
  const gf = (K, N, T) => {
    const same = throughput.filter((t) => t.K === K && t.N === N);
    if (same.length === 0 || T === 0) return Math.max(...throughput.map((t) => t.gflops));
    return same.reduce((best, t) => (Math.abs(t.T - T) < Math.abs(best.T - T) ? t : best)).gflops;
  };
  const peak = Math.max(...throughput.map((t) => t.gflops));
  let ms = 0;
  for (const s of flops.shapes) {
    if (s.tokensPrompt) ms += (2 * s.K * s.N * s.tokensPrompt) / (gf(s.K, s.N, s.tokensPrompt) * 1e6);
    if (s.tokensCand) ms += (2 * s.K * s.N * s.tokensCand) / (gf(s.K, s.N, s.tokensCand) * 1e6);
  }
  ms += (flops.lora + flops.attention) / (peak * 1e6);
  return ms;
}
