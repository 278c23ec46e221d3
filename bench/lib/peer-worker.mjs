#!/usr/bin/env node
// One engine of bench/peers.mjs in its own process, so that its peak RSS is its own: molorec (a
// pack through @molorec/core + @molorec/runtime-node), transformers.js or node-llama-cpp.
// Driven over stdio as bench/py_worker.py is: one JSON command per stdin line, one JSON answer per
// stdout line; times are measured here around the work only (no IPC). Library chatter goes to
// stderr.
//
//   node bench/lib/peer-worker.mjs   (then {"cmd":"init","engine":"molorec",...} on stdin)
import { mkdtempSync, readFileSync, rmSync, writeSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const PEERS = join(REPO, "bench/peers/package.json");
const baselineRss = process.memoryUsage().rss; // the bare runtime, before any engine is imported
const send = (obj) => writeSync(1, `${JSON.stringify(obj)}\n`);
for (const k of ["log", "info", "debug", "warn"]) console[k] = console.error; // keep stdout for the protocol

/** A dependency's package.json (read from its folder: packages with `exports` may not expose it). */
function packageJson(req, name) {
  let dir = dirname(req.resolve(name));
  while (dir !== dirname(dir)) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, "package.json"), "utf8"));
      if (pkg.name === name) return pkg;
    } catch {}
    dir = dirname(dir);
  }
  return {};
}

/** log p(token) from one row of logits (float64 accumulation). */
function logProb(logits, offset, size, token) {
  let max = -Infinity;
  for (let i = 0; i < size; i++) if (logits[offset + i] > max) max = logits[offset + i];
  let sum = 0;
  for (let i = 0; i < size; i++) sum += Math.exp(logits[offset + i] - max);
  return logits[offset + token] - max - Math.log(sum);
}

/** Mean (or summed) log-probability of a candidate's tokens, as core scores it. */
const finish = (sum, len, spec) => (spec.scoreNormalization === "sum" ? sum : sum / len);

// ------------------------------------------------------------------------------------ molorec
async function molorecEngine({ pack, threads }) {
  const core = await import(join(REPO, "packages/core/dist/index.js"));
  const { nodeBackend, loadPackFromDir } = await import(join(REPO, "packages/runtime-node/dist/index.js"));
  const backend = nodeBackend({ executionProvider: "cpu", intraOpNumThreads: threads, log: () => {} });
  const rec = await core.createRecommender({ backend, pack: await loadPackFromDir(pack) });
  const ortVersion = createRequire(join(REPO, "packages/runtime-node/package.json"))("onnxruntime-node/package.json").version;
  return {
    versions: { "onnxruntime-node": ortVersion },
    rows: {
      async score(r) {
        const t0 = performance.now();
        const res = await rec.recommend({ history: r.history, candidates: r.candidates, mixture: "base" });
        const ms = performance.now() - t0;
        const scores = new Array(r.candidates.length).fill(null);
        for (const c of res.ranked) scores[c.index] = c.score;
        return { ms, scores, extra: { complete: res.ranked.length === r.candidates.length, promptTokens: res.promptTokens } };
      },
    },
    close: () => rec.close(),
  };
}

// ------------------------------------------------------------------------------ transformers.js
async function transformersEngine({ folder, threads, spec }) {
  const req = createRequire(PEERS);
  const tjs = await import(req.resolve("@huggingface/transformers"));
  const { AutoModelForCausalLM, DynamicCache, Tensor, env } = tjs;
  env.allowRemoteModels = false;
  env.localModelPath = `${dirname(resolve(folder))}/`;
  const model = await AutoModelForCausalLM.from_pretrained(resolve(folder).split("/").pop(), {
    dtype: "fp32",
    device: "cpu",
    session_options: { intraOpNumThreads: threads, interOpNumThreads: 1 },
  });
  const ids = (xs) => new Tensor("int64", BigInt64Array.from(xs, BigInt), [1, xs.length]);
  const ones = (n) => new Tensor("int64", new BigInt64Array(n).fill(1n), [1, n]);
  const V = model.config.vocab_size;
  return {
    versions: {
      "@huggingface/transformers": env.version,
      "its onnxruntime-node": packageJson(req, "@huggingface/transformers").dependencies?.["onnxruntime-node"],
    },
    rows: {
      // the generic loop: one forward per candidate over prompt + candidate, every position's logits
      async full(r) {
        const t0 = performance.now();
        const P = r.promptIds.length;
        const scores = [];
        for (const c of r.candidateIds) {
          const seq = [...r.promptIds, ...c.slice(0, -1)];
          const { logits } = await model({ input_ids: ids(seq), attention_mask: ones(seq.length) });
          let s = 0;
          for (let k = 0; k < c.length; k++) s += logProb(logits.data, (P - 1 + k) * V, V, c[k]);
          scores.push(finish(s, c.length, spec));
        }
        return { ms: performance.now() - t0, scores };
      },
      // the library's own KV cache: the prompt once, its DynamicCache fed with each candidate in turn
      async cache(r) {
        const t0 = performance.now();
        const P = r.promptIds.length;
        const out = await model({ input_ids: ids(r.promptIds), attention_mask: ones(P) });
        const entries = {};
        for (const [name, t] of Object.entries(out))
          if (name.startsWith("present")) entries[name.replace("present", "past_key_values")] = t;
        const past = new DynamicCache(entries);
        const lastRow = (P - 1) * V;
        const scores = [];
        for (const c of r.candidateIds) {
          let s = logProb(out.logits.data, lastRow, V, c[0]);
          if (c.length > 1) {
            const L = c.length - 1;
            const { logits } = await model({ input_ids: ids(c.slice(0, -1)), attention_mask: ones(P + L), past_key_values: past });
            for (let k = 1; k < c.length; k++) s += logProb(logits.data, (k - 1) * V, V, c[k]);
          }
          scores.push(finish(s, c.length, spec));
        }
        return { ms: performance.now() - t0, scores };
      },
    },
    close: () => model.dispose(),
  };
}

// -------------------------------------------------------------------------------- node-llama-cpp
async function llamaEngine({ gguf, threads, spec, contextSize, genTokens }) {
  const req = createRequire(PEERS);
  const { getLlama, LlamaLogLevel } = await import(req.resolve("node-llama-cpp"));
  // build: "never": the prebuilt binary from the npm registry (@node-llama-cpp/<platform>), no download
  const llama = await getLlama({
    gpu: false,
    build: "never",
    maxThreads: threads,
    logLevel: LlamaLogLevel.error,
    logger: (level, message) => process.stderr.write(`[llama ${level}] ${message}\n`),
  });
  const model = await llama.loadModel({ modelPath: gguf, gpuLayers: 0 });
  const context = await model.createContext({ contextSize, sequences: 1, threads });
  const seq = context.getSequence();
  // the batched alternative: a context of `batchSequences` sequences, each given the prompt's state
  // (saved to a file once, loaded into the others: the public API has no KV copy), then every
  // sequence's candidate in one decode
  const batchSequences = 20;
  const batchContext = await model.createContext({ contextSize: 512, sequences: batchSequences, threads });
  const batchSeqs = Array.from({ length: batchSequences }, () => batchContext.getSequence());
  const stateFile = join(mkdtempSync(join(tmpdir(), "molorec-peers-")), "prompt.state");
  const stops = new Set([spec.endTokenId, model.tokens.eos, model.tokens.eot].filter((t) => t !== null && t !== undefined));
  const version = packageJson(req, "node-llama-cpp").version;
  return {
    versions: { "node-llama-cpp": version, "llama.cpp": llama.llamaCppRelease?.release ?? "?", "llama threads": context.currentThreads },
    rows: {
      // the engine's cost alone: the prompt once, then each candidate's tokens on its cache (no
      // distributions built), erased before the next; the public API has no KV copy between sequences
      async engine(r) {
        const t0 = performance.now();
        await seq.clearHistory();
        await seq.evaluateWithoutGeneratingNewTokens(r.promptIds);
        const P = seq.nextTokenIndex;
        for (const c of r.candidateIds) {
          if (c.length > 1) await seq.evaluateWithoutGeneratingNewTokens(c.slice(0, -1));
          await seq.eraseContextTokenRanges([{ start: P, end: seq.nextTokenIndex }]);
        }
        return { ms: performance.now() - t0 };
      },
      async "engine-batched"(r) {
        const t0 = performance.now();
        const [first, ...rest] = batchSeqs;
        await first.clearHistory();
        await first.evaluateWithoutGeneratingNewTokens(r.promptIds);
        await first.saveStateToFile(stateFile);
        const P = first.nextTokenIndex;
        for (let start = 0; start < r.candidateIds.length; start += batchSequences) {
          const chunk = r.candidateIds.slice(start, start + batchSequences);
          if (start > 0) await first.eraseContextTokenRanges([{ start: P, end: first.nextTokenIndex }]);
          await Promise.all(rest.slice(0, chunk.length - 1).map((s) => s.loadStateFromFile(stateFile, { acceptRisk: true })));
          await Promise.all(chunk.map((c, i) => (c.length > 1 ? batchSeqs[i].evaluateWithoutGeneratingNewTokens(c.slice(0, -1)) : null)));
        }
        return { ms: performance.now() - t0 };
      },
      // exact scores through the public API: the full next-token distribution at each scored position
      async exact(r) {
        const t0 = performance.now();
        await seq.clearHistory();
        const P = r.promptIds.length;
        const want = { generateNext: { probabilities: true } };
        const head = await seq.controlledEvaluate([...r.promptIds.slice(0, -1), [r.promptIds[P - 1], want]]);
        const first = head[P - 1].next.probabilities;
        const scores = [];
        let zeros = 0;
        const lp = (p) => {
          if (!(p > 0)) zeros++;
          return Math.log(p ?? 0);
        };
        for (const c of r.candidateIds) {
          let s = lp(first.get(c[0]));
          if (c.length > 1) {
            const outs = await seq.controlledEvaluate(c.slice(0, -1).map((t) => [t, want]));
            for (let k = 1; k < c.length; k++) s += lp(outs[k - 1].next.probabilities.get(c[k]));
          }
          scores.push(finish(s, c.length, spec));
          await seq.eraseContextTokenRanges([{ start: P, end: seq.nextTokenIndex }]);
        }
        return { ms: performance.now() - t0, scores, extra: { zeroProbabilities: zeros } };
      },
      // the paper's path: the listwise prompt, then up to genTokens greedy tokens
      async generate(r) {
        const t0 = performance.now();
        await seq.clearHistory();
        const out = [];
        let stopped = false;
        for await (const t of seq.evaluate(r.listwiseIds, { temperature: 0 })) {
          if (stops.has(t)) {
            stopped = true;
            break;
          }
          out.push(t);
          if (out.length >= genTokens) break;
        }
        const ms = performance.now() - t0;
        return {
          ms,
          extra: { text: model.detokenize(out), newTokens: out.length, truncated: !stopped, promptTokens: r.listwiseIds.length },
        };
      },
    },
    close: async () => {
      rmSync(dirname(stateFile), { recursive: true, force: true });
      await batchContext.dispose();
      await context.dispose();
      await model.dispose();
      await llama.dispose();
    },
  };
}

// ------------------------------------------------------------------------------------ protocol
const ENGINES = { molorec: molorecEngine, transformers: transformersEngine, llama: llamaEngine };
let engine = null;
const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  const cmd = JSON.parse(line);
  let ans;
  try {
    if (cmd.cmd === "init") {
      const t0 = performance.now();
      engine = await ENGINES[cmd.engine](cmd);
      ans = { ok: true, versions: engine.versions, loadMs: performance.now() - t0, loadedRss: process.memoryUsage().rss };
    } else if (cmd.cmd === "run") {
      globalThis.gc?.(); // the previous run's garbage, collected untimed (--expose-gc)
      ans = { ok: true, ...(await engine.rows[cmd.row](cmd.request)) };
    } else if (cmd.cmd === "stats") {
      ans = { ok: true, peakRss: process.resourceUsage().maxRSS * 1024, baselineRss, rss: process.memoryUsage().rss };
    } else if (cmd.cmd === "quit") {
      await engine?.close();
      send({ ok: true });
      break;
    } else {
      ans = { ok: false, error: `unknown command ${cmd.cmd}` };
    }
  } catch (e) {
    ans = { ok: false, error: `${e?.name ?? "Error"}: ${e?.message ?? e}` };
  }
  send(ans);
}
process.exit(0);
