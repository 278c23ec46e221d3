#!/usr/bin/env node
// Peers on the same model, the same requests, one run: molorec (fp32, int8, int4 packs of
// SmolLM2-135M-Instruct) against transformers.js (a generic per-candidate loop), node-llama-cpp on
// the original Q4_1 GGUF (the engine's cost alone, exact scores through its public API, and the
// paper's generation path) and PyTorch (transformers, KV cache; and its generation path). Every
// engine runs in its own process (its peak RSS is its own); the rows take turns request by
// request, in a shuffled order. See docs/performance.md, "Peers on SmolLM2-135M".
//
//   scripts/smollm2-packs.sh                                  # the packs, the checkpoint, the GGUF
//   pnpm --dir bench/peers install --frozen-lockfile          # transformers.js, node-llama-cpp
//   pnpm build
//   node --expose-gc bench/peers.mjs --model-dir artifacts/smollm2 \
//     --gguf artifacts/gguf/SmolLM2-135M-Instruct.Q4_1.gguf --candidates 20,50,100 --threads 2
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import os from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { judgeGeneration, listwisePromptIds } from "./lib/generation.mjs";
import { startWorkerProcess } from "./lib/python.mjs";
import { argmax, fmtMs, fmtRatio, kendallTau, markdownTable, maxAbsDiff, median, parseCli, rng, writeReport } from "./lib/util.mjs";

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = resolve(HERE, "..");

const USAGE = `node --expose-gc bench/peers.mjs [options]

  --model-dir DIR    the SmolLM2 folder of scripts/smollm2-packs.sh: fp32/, int8/, int4/ packs and
                     checkpoint/ (default artifacts/smollm2)
  --gguf FILE        the original GGUF for node-llama-cpp
                     (default artifacts/gguf/SmolLM2-135M-Instruct.Q4_1.gguf)
  --tjs-dir DIR      transformers.js model folder, exported from checkpoint/ by
                     bench/export_transformersjs.py when missing (default artifacts/peers/transformersjs/smollm2)
  --candidates LIST  candidate counts (default 20,50,100)
  --threads N        CPU threads of every engine: onnxruntime intra-op (molorec, transformers.js),
                     llama.cpp, torch (default 1: on a loaded 2-core machine two threads' spinning
                     pools turn others' load into 3–15× outliers, llama.cpp's most of all)
  --rows LIST        only these rows (ids in the table's first column)
  --quick            fewer repeats and requests, shorter cells (run P3's full run took 40 min on 2 loaded cores)
  --per-size N       distinct requests per size, cycled (default 3; --quick 2); the first at 20
                     candidates is examples/request.json, the others are drawn from
                     examples/catalogue-movies.json (10 history titles, seeded)
  --repeats N        timed runs per row and size, at most (default 10; --quick 4)
  --warmup N         untimed runs first (default 1)
  --cell-seconds S   stop repeating a row at a size after S seconds of it, once it has 3 runs
                     (default 30; --quick 8)
  --gen-tokens N     tokens the generation rows generate at most (default 50)
  --max-minutes M    stop repeating anything after M minutes (default 60; --quick 20)
  --python FILE      Python for the PyTorch rows (default .venv/bin/python)
  --json FILE        all samples and results (default bench/results/peers.json)
  --md FILE          also write the report as Markdown`;

const opt = parseCli(
  {
    "model-dir": { type: "string", default: "artifacts/smollm2" },
    gguf: { type: "string", default: "artifacts/gguf/SmolLM2-135M-Instruct.Q4_1.gguf" },
    "tjs-dir": { type: "string", default: "artifacts/peers/transformersjs/smollm2" },
    candidates: { type: "string", default: "20,50,100" },
    threads: { type: "string", default: "1" },
    rows: { type: "string" },
    quick: { type: "boolean", default: false },
    "per-size": { type: "string" },
    repeats: { type: "string" },
    warmup: { type: "string", default: "1" },
    "cell-seconds": { type: "string" },
    "gen-tokens": { type: "string", default: "50" },
    "max-minutes": { type: "string" },
    python: { type: "string", default: join(REPO, ".venv/bin/python") },
    json: { type: "string", default: join(HERE, "results/peers.json") },
    md: { type: "string" },
  },
  USAGE,
);
const quick = opt.quick;
const cfg = {
  sizes: opt.candidates.split(",").map(Number),
  threads: Number(opt.threads),
  perSize: Number(opt["per-size"] ?? (quick ? 2 : 3)),
  repeats: Number(opt.repeats ?? (quick ? 4 : 10)),
  warmup: Number(opt.warmup),
  cellSeconds: Number(opt["cell-seconds"] ?? (quick ? 8 : 30)),
  genTokens: Number(opt["gen-tokens"]),
  maxMinutes: Number(opt["max-minutes"] ?? (quick ? 20 : 60)),
  minSamples: 3,
  history: 10,
};
const atLeast = { threads: 1, perSize: 1, repeats: 1, warmup: 0, cellSeconds: 0, genTokens: 1, maxMinutes: 0, minSamples: 1, history: 1 };
for (const [k, v] of Object.entries(cfg)) {
  if (k === "sizes" ? !v.every((n) => Number.isInteger(n) && n >= 2) : !(Number.isFinite(v) && v >= atLeast[k])) {
    const flag = k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`).replace("sizes", "candidates");
    console.error(`bench/peers: bad --${flag}: ${JSON.stringify(opt[flag] ?? v)}\n\n${USAGE}`);
    process.exit(2);
  }
}
const log = (line) => process.stderr.write(`${line}\n`);
const started = performance.now();

// -------------------------------------------------------------------------------------- rows
const modelDir = resolve(REPO, opt["model-dir"]);
const gguf = resolve(REPO, opt.gguf);
const tjsDir = resolve(REPO, opt["tjs-dir"]);
const PACKS = ["fp32", "int8", "int4"];
const PROCS = {
  ...Object.fromEntries(PACKS.map((p) => [`molorec-${p}`, { kind: "node", engine: "molorec", pack: join(modelDir, p) }])),
  tjs: { kind: "node", engine: "transformers", folder: tjsDir },
  llama: { kind: "node", engine: "llama", gguf },
  torch: { kind: "python", checkpoint: join(modelDir, "checkpoint") },
};
const GEN = `listwise prompt (history, candidates, cue) + ≤ ${cfg.genTokens} greedy tokens; titles parsed and matched`;
const ALL_ROWS = [
  ...PACKS.map((p) => ({
    id: `molorec-${p}`,
    proc: `molorec-${p}`,
    row: "score",
    engine: `molorec, ${p} pack (onnxruntime-node)`,
    computes: "exact scores, complete ranking: `recommend` (mixture base), shared prompt, candidates batched on its KV cache",
    exact: true,
  })),
  {
    id: "tjs-full",
    proc: "tjs",
    row: "full",
    engine: "transformers.js (onnxruntime-node), float32",
    computes: "exact scores: one forward per candidate over prompt + candidate (generic loop)",
    exact: true,
  },
  {
    id: "tjs-cache",
    proc: "tjs",
    row: "cache",
    engine: "transformers.js (onnxruntime-node), float32",
    computes: "exact scores: the prompt once, its DynamicCache fed with each candidate in turn",
    exact: true,
  },
  {
    id: "llama-engine",
    proc: "llama",
    row: "engine",
    engine: "node-llama-cpp on the Q4_1 GGUF",
    computes: "engine-only cost: the prompt once, each candidate's tokens on its cache, no distributions (no scores)",
  },
  {
    id: "llama-engine-batched",
    proc: "llama",
    row: "engine-batched",
    engine: "node-llama-cpp on the Q4_1 GGUF",
    computes:
      "engine-only cost, batched: the prompt's state saved to a file and loaded into up to 20 sequences, their candidates in one decode (no scores)",
  },
  {
    id: "llama-exact",
    proc: "llama",
    row: "exact",
    engine: "node-llama-cpp on the Q4_1 GGUF",
    computes: "exact scores via `controlledEvaluate` (the full 49,152-entry distribution per scored token)",
    exact: true,
  },
  {
    id: "llama-generate",
    proc: "llama",
    row: "generate",
    engine: "node-llama-cpp on the Q4_1 GGUF",
    computes: `generation: ${GEN}`,
    gen: true,
  },
  {
    id: "torch-kv",
    proc: "torch",
    row: "kv",
    engine: "PyTorch (transformers), float32",
    computes: "exact scores: the prompt once, candidates batched on its KV cache",
    exact: true,
  },
  {
    id: "torch-generate",
    proc: "torch",
    row: "generate",
    engine: "PyTorch (transformers), float32",
    computes: `generation: ${GEN}`,
    gen: true,
  },
];
const only = opt.rows ? new Set(opt.rows.split(",")) : null;
if (only) {
  const unknown = [...only].filter((id) => !ALL_ROWS.some((r) => r.id === id));
  if (unknown.length) {
    console.error(`bench/peers: unknown rows ${unknown.join(", ")}; rows: ${ALL_ROWS.map((r) => r.id).join(", ")}`);
    process.exit(2);
  }
}
const rows = ALL_ROWS.filter((r) => !only || only.has(r.id)).map((r) => ({ ...r, samples: {}, spent: {}, scores: {}, extra: {} }));
const usedProcs = new Set(rows.map((r) => r.proc));
const rel = (p) => (p.startsWith(`${REPO}/`) ? relative(REPO, p) : p);

// ------------------------------------------------------------------- what must exist, and who builds it
const missing = new Set();
const need = (file, how) => existsSync(file) || missing.add(`${rel(file)}: ${how}`);
need(join(REPO, "packages/core/dist/index.js"), "run `pnpm build`");
need(join(REPO, "packages/runtime-node/dist/index.js"), "run `pnpm build`");
const packsCmd = `run \`scripts/smollm2-packs.sh${opt["model-dir"] === "artifacts/smollm2" ? "" : ` ${opt["model-dir"]}`}\``;
need(join(modelDir, "fp32/molorec.json"), packsCmd); // the driver tokenizes with the fp32 pack's tokenizer
for (const p of PACKS) if (usedProcs.has(`molorec-${p}`)) need(join(modelDir, p, "molorec.json"), packsCmd);
if (usedProcs.has("tjs") || usedProcs.has("llama"))
  need(join(HERE, "peers/node_modules/.modules.yaml"), "run `pnpm --dir bench/peers install --frozen-lockfile`");
if (usedProcs.has("llama")) need(gguf, `run \`scripts/smollm2-packs.sh\` (its import-gguf step caches the GGUF in artifacts/gguf)`);
if (usedProcs.has("torch") || (usedProcs.has("tjs") && !existsSync(join(tjsDir, "onnx/model.onnx")))) {
  need(join(modelDir, "checkpoint/config.json"), packsCmd);
  need(opt.python, "run `scripts/setup.sh` (the Python environment)");
}
if (missing.size) {
  console.error(`bench/peers: missing files:\n${[...missing].map((m) => `  - ${m}`).join("\n")}`);
  process.exit(2);
}
if (usedProcs.has("tjs") && !existsSync(join(tjsDir, "onnx/model.onnx"))) {
  log(`bench/peers: exporting the transformers.js model to ${rel(tjsDir)} (bench/export_transformersjs.py, about a minute)`);
  const r = spawnSync(opt.python, [join(HERE, "export_transformersjs.py"), "--checkpoint", join(modelDir, "checkpoint"), "--out", tjsDir], {
    stdio: ["ignore", "ignore", "inherit"],
    env: { ...process.env, PYTHONPATH: join(REPO, "training") },
  });
  if (r.status !== 0) {
    console.error(`bench/peers: bench/export_transformersjs.py failed (${r.error?.message ?? `exit ${r.status}`})`);
    process.exit(2);
  }
}

// ------------------------------------------------------------------------------------ requests
const core = await import(join(REPO, "packages/core/dist/index.js"));
const fp32 = join(modelDir, "fp32");
const manifest = core.parseManifest(JSON.parse(readFileSync(join(fp32, "molorec.json"), "utf8")));
const spec = manifest.prompt;
const encoder = core.createTextEncoder(
  JSON.parse(readFileSync(join(fp32, manifest.files.tokenizer), "utf8")),
  manifest.files.tokenizerConfig ? JSON.parse(readFileSync(join(fp32, manifest.files.tokenizerConfig), "utf8")) : {},
);
const example = JSON.parse(readFileSync(join(REPO, "examples/request.json"), "utf8"));
const catalogue = [...new Set(JSON.parse(readFileSync(join(REPO, "examples/catalogue-movies.json"), "utf8")).items.map((i) => i.title))];
const draw = rng(18);
const requests = {};
for (const n of cfg.sizes) {
  if (n + cfg.history > catalogue.length) {
    console.error(`bench/peers: ${n} candidates + ${cfg.history} history titles exceed the catalogue's ${catalogue.length} titles`);
    process.exit(2);
  }
  requests[n] = [];
  for (let i = 0; i < cfg.perSize; i++) {
    let history;
    let candidates;
    if (i === 0 && n === example.candidates.length) ({ history, candidates } = example);
    else {
      const idx = new Set();
      while (idx.size < n + cfg.history) idx.add(Math.floor(draw() * catalogue.length));
      const titles = [...idx].map((k) => catalogue[k]);
      history = titles.slice(0, cfg.history);
      candidates = titles.slice(cfg.history);
    }
    requests[n].push({
      history,
      candidates,
      promptIds: core.buildPrompt(encoder, spec, history).ids,
      candidateIds: candidates.map((c) => core.buildCandidate(encoder, spec, c)),
      listwiseIds: listwisePromptIds(core, encoder, spec, history, candidates),
    });
  }
}

// ----------------------------------------------------------------------------------- processes
const procs = {};
const versions = {};
const rowsOf = (p) => rows.filter((r) => r.proc === p);
for (const name of usedProcs) {
  const p = PROCS[name];
  const t0 = performance.now();
  log(`bench/peers: starting ${name}`);
  const worker =
    p.kind === "python"
      ? startWorkerProcess(opt.python, [join(HERE, "peers_torch.py")], { name })
      : startWorkerProcess(process.execPath, ["--expose-gc", join(HERE, "lib/peer-worker.mjs")], { name });
  procs[name] = { worker };
  try {
    const ans = await worker.call({
      cmd: "init",
      engine: p.engine,
      pack: p.pack,
      folder: p.folder,
      gguf: p.gguf,
      checkpoint: p.checkpoint,
      threads: cfg.threads,
      spec,
      genTokens: cfg.genTokens,
      // the longest listwise prompt plus the generated tokens
      contextSize:
        Math.ceil((Math.max(...cfg.sizes.flatMap((n) => requests[n].map((r) => r.listwiseIds.length))) + cfg.genTokens + 64) / 256) * 256,
    });
    Object.assign(versions, ans.versions);
    procs[name].loadMs = ans.loadMs;
    log(`bench/peers: ${name} ready in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  } catch (e) {
    for (const r of rowsOf(name)) r.failed = `${name}: ${e.message}`.slice(0, 300);
    log(`bench/peers: ${name} failed to start: ${e.message}`);
  }
}

// -------------------------------------------------------------------------------------- timing
const deadline = started + cfg.maxMinutes * 60_000;
async function once(row, n, i) {
  const r = requests[n][i % requests[n].length];
  const ans = await procs[row.proc].worker.call({ cmd: "run", row: row.row, request: r, genTokens: cfg.genTokens });
  const k = i % requests[n].length;
  if (ans.scores && !(k in row.scores[n])) row.scores[n][k] = ans.scores;
  if (ans.extra && !(k in row.extra[n])) row.extra[n][k] = ans.extra;
  if (ans.extra?.complete === false) row.incomplete = (row.incomplete ?? 0) + 1;
  return ans.ms;
}
log(
  `bench/peers: ${rows.filter((r) => !r.failed).length} rows × sizes ${cfg.sizes.join("/")}, ≤ ${cfg.repeats} timed runs each (warm-up ${cfg.warmup}), ${cfg.threads} threads`,
);
for (const n of cfg.sizes) {
  const active = rows.filter((r) => !r.failed);
  for (const r of active) {
    r.samples[n] = [];
    r.spent[n] = 0;
    r.scores[n] = {};
    r.extra[n] = {};
  }
  for (const r of active) {
    try {
      for (let w = 0; w < cfg.warmup; w++) await once(r, n, w);
    } catch (e) {
      r.failed = e.message.slice(0, 300);
      log(`bench/peers: ${r.id} failed: ${r.failed}`);
    }
  }
  const shuffle = rng(1000 + n);
  for (let rep = 0; rep < cfg.repeats; rep++) {
    const order = rows.filter((r) => !r.failed);
    for (let i = order.length - 1; i > 0; i--) {
      const j = Math.floor(shuffle() * (i + 1));
      [order[i], order[j]] = [order[j], order[i]];
    }
    for (const r of order) {
      // every distinct request once at least, so that every row has scores for all of them
      const needed = r.samples[n].length < Math.max(cfg.minSamples, requests[n].length);
      if (!needed && r.spent[n] > cfg.cellSeconds * 1000) continue;
      if (!needed && performance.now() > deadline) continue;
      try {
        globalThis.gc?.();
        const ms = await once(r, n, rep);
        r.samples[n].push(ms);
        r.spent[n] += ms;
      } catch (e) {
        r.failed = e.message.slice(0, 300);
        log(`bench/peers: ${r.id} failed: ${r.failed}`);
      }
    }
  }
  log(`bench/peers: ${n} candidates done (${((performance.now() - started) / 1000).toFixed(0)} s)`);
}
const memory = {};
for (const [name, p] of Object.entries(procs)) {
  try {
    memory[name] = await p.worker.call({ cmd: "stats" });
  } catch (e) {
    log(`bench/peers: ${name} stats: ${e.message}`);
  }
  await p.worker.close();
}

// ------------------------------------------------------------------------------------- results
const byId = Object.fromEntries(rows.map((r) => [r.id, r]));
const med = (id, n) => (byId[id]?.samples[n]?.length && !byId[id].failed ? median(byId[id].samples[n]) : NaN);
const best = (id, n) => (byId[id]?.samples[n]?.length && !byId[id].failed ? Math.min(...byId[id].samples[n]) : NaN);
const MB = (b) => `${(b / 1e6).toFixed(0)} MB`;

function agreement(row, ref = "molorec-fp32") {
  const refRow = byId[ref];
  if (!row.exact || !refRow || row.id === ref) return null;
  let maxAbs = 0;
  let minTau = 1;
  let top1 = 0;
  let count = 0;
  for (const n of cfg.sizes) {
    for (const [k, s] of Object.entries(row.scores[n] ?? {})) {
      const t = refRow.scores[n]?.[k];
      if (!t) continue;
      maxAbs = Math.max(maxAbs, maxAbsDiff(s, t));
      minTau = Math.min(minTau, kendallTau(s, t));
      top1 += argmax(s) === argmax(t) ? 1 : 0;
      count++;
    }
  }
  return count ? { maxAbs, minTau, top1: top1 / count, requests: count } : null;
}

function generationSummary(row) {
  const judged = cfg.sizes.flatMap((n) =>
    Object.entries(row.extra[n] ?? {}).map(([k, e]) => ({
      n,
      ...e,
      ...judgeGeneration(e.text, { ...requests[n][k], truncated: e.truncated }),
    })),
  );
  if (!judged.length) return null;
  const share = (f) => judged.filter(f).length;
  const titles = judged.reduce((s, j) => s + j.titles, 0);
  return {
    requests: judged.length,
    noMatch: share((j) => !j.normalised),
    noExact: share((j) => !j.exact),
    titleOnly: share((j) => j.titleOnly),
    inHistory: share((j) => j.inHistory),
    empty: share((j) => j.first === null),
    titles,
    unmatchedTitles: judged.reduce((s, j) => s + j.unmatchedTitles, 0),
    newTokens: median(judged.map((j) => j.newTokens)),
    promptTokens: Object.fromEntries(cfg.sizes.map((n) => [n, median(judged.filter((j) => j.n === n).map((j) => j.promptTokens))])),
    examples: judged.slice(0, 3).map((j) => ({ candidates: j.n, text: j.text })),
  };
}

const cell = (r, n) => {
  if (r.failed) return "failed";
  const s = r.samples[n];
  if (!s?.length) return "—";
  return `${fmtMs(median(s))} (${fmtMs(Math.min(...s))}, ${s.length})`;
};
const header = [
  "id",
  "engine",
  "computes",
  ...cfg.sizes.map((n) => `${n} cand.: ms median (min, runs)`),
  "peak RSS",
  "vs molorec fp32",
  "notes",
];
const table = [];
const gens = {};
for (const r of rows) {
  const ag = agreement(r);
  const mem = memory[r.proc];
  const shared = rowsOf(r.proc).length > 1 ? ` (process shared by ${rowsOf(r.proc).length} rows)` : "";
  let notes = r.failed ?? "";
  if (!r.failed && r.gen) {
    const g = (gens[r.id] = generationSummary(r));
    if (g)
      notes = `first title matches no candidate: ${g.noMatch}/${g.requests} (exact-string: ${g.noExact}/${g.requests}); repeats a history title ${g.inHistory}, a candidate's title with another year ${g.titleOnly}, nothing parsed ${g.empty}; of all ${g.titles} listed titles ${g.unmatchedTitles} match no candidate; ${g.newTokens} new tokens (median), listwise prompt ${cfg.sizes.map((n) => g.promptTokens[n]).join("/")} tokens`;
  } else if (!r.failed && r.id.startsWith("molorec")) {
    notes = `complete ranking in every run${r.incomplete ? `: NO, ${r.incomplete} incomplete` : ""}; prompt ${cfg.sizes.map((n) => median(requests[n].map((q) => q.promptIds.length))).join("/")} tokens; timed around \`recommend\` (tokenization included)`;
  } else if (!r.failed && r.id === "llama-exact") {
    const zeros = cfg.sizes.flatMap((n) => Object.values(r.extra[n] ?? {})).reduce((s, e) => s + (e.zeroProbabilities ?? 0), 0);
    if (zeros) notes = `${zeros} scored tokens had probability 0 in its distribution`;
  }
  table.push([
    r.id,
    r.engine,
    r.computes,
    ...cfg.sizes.map((n) => cell(r, n)),
    mem ? `${MB(mem.peakRss)}${shared}` : "—",
    r.id === "molorec-fp32"
      ? "reference"
      : ag
        ? `max abs Δ ${ag.maxAbs.toExponential(1)}, Kendall τ ≥ ${ag.minTau.toFixed(3)}, top-1 ${(ag.top1 * 100).toFixed(0)}%`
        : "",
    notes,
  ]);
}

// ------------------------------------------------------------------------------------- targets
/** The smallest finite value of f(id, n) over rows `ids`, NaN when none has one. */
const cheapest = (ids, n, f) => {
  const xs = ids.map((id) => f(id, n)).filter(Number.isFinite);
  return xs.length ? Math.min(...xs) : NaN;
};
const verdictOf = (xs, ok) => (xs.some((x) => !Number.isFinite(x)) ? "N/A" : xs.every(ok) ? "PASS" : "MISS");
const fmtList = (xs) => xs.map((x) => fmtRatio(x)).join(" / ");
const targets = [];
{
  // llama.cpp's engine cost: the cheaper of its two ways through the public API, per size
  const engineCost = (n, f) => cheapest(["llama-engine", "llama-engine-batched"], n, f);
  const parts = ["fp32", "int8"].map((p) => {
    const onMed = cfg.sizes.map((n) => med(`molorec-${p}`, n) / engineCost(n, med));
    const onMin = cfg.sizes.map((n) => best(`molorec-${p}`, n) / engineCost(n, best));
    return { p, onMed, onMin, v: verdictOf(onMed, (x) => x < 1) };
  });
  const status = parts.some((x) => x.v === "N/A") ? "N/A" : parts.every((x) => x.v === "PASS") ? "PASS" : "MISS";
  const int4 = cfg.sizes.map((n) => med("molorec-int4", n) / engineCost(n, med));
  const cheaper = cfg.sizes.map((n) => (med("llama-engine-batched", n) < med("llama-engine", n) ? "batched" : "sequential"));
  targets.push({
    name: "molorec faster than llama.cpp's engine cost alone at comparable precision (fp32 / int8 packs vs its Q4_1), with exact scores",
    status,
    detail: `llama.cpp's cheaper way: ${cheaper.join(" / ")}; ${parts.map((x) => `${x.p}/engine ${fmtList(x.onMed)} (${x.v}; minima ${fmtList(x.onMin)})`).join("; ")}; int4/engine ${fmtList(int4)} (not judged)`,
  });
}
{
  const fastestGen = (n, f) => cheapest(["llama-generate", "torch-generate"], n, f);
  const which = cfg.sizes.map((n) =>
    med("llama-generate", n) <= med("torch-generate", n) || !Number.isFinite(med("torch-generate", n)) ? "llama.cpp" : "PyTorch",
  );
  const parts = PACKS.map((p) => {
    const onMed = cfg.sizes.map((n) => med(`molorec-${p}`, n) / fastestGen(n, med));
    const onMin = cfg.sizes.map((n) => best(`molorec-${p}`, n) / fastestGen(n, best));
    const complete = !byId[`molorec-${p}`]?.incomplete;
    return { p, onMed, onMin, v: complete ? verdictOf(onMed, (x) => x <= 1) : "MISS" };
  });
  const status = parts.some((x) => x.v === "N/A") ? "N/A" : parts.every((x) => x.v === "PASS") ? "PASS" : "MISS";
  const g = gens["llama-generate"] ?? gens["torch-generate"];
  targets.push({
    name: "molorec at least as fast as the generation path on the fastest engine, always returning a complete ranking",
    status,
    detail: `fastest generation: ${which.join(" / ")}; ${parts.map((x) => `${x.p}/generation ${fmtList(x.onMed)} (${x.v}; minima ${fmtList(x.onMin)})`).join("; ")}${g ? `; generation's first title matches no candidate in ${g.noMatch} of ${g.requests} requests (${((g.noMatch / g.requests) * 100).toFixed(0)}%)` : ""}`,
  });
}

// -------------------------------------------------------------------------------------- report
const cpu = os.cpus();
const peerPkgs = JSON.parse(readFileSync(join(HERE, "peers/package.json"), "utf8")).dependencies;
const pkgVersion = (name) => peerPkgs[name] ?? "—";
const memLine = Object.entries(memory)
  .map(([name, m]) => `${name} ${MB(m.peakRss)} (bare runtime ${MB(m.baselineRss)})`)
  .join(", ");
const lines = [
  `machine: ${cpu[0]?.model ?? "?"}, ${cpu.length} logical cores, load average ${os
    .loadavg()
    .map((x) => x.toFixed(2))
    .join(" ")} (at the end), ${os.platform()} ${os.release()}`,
  `engines: node ${process.version}, onnxruntime-node ${versions["onnxruntime-node"] ?? "—"} (molorec); @huggingface/transformers ${versions["@huggingface/transformers"] ?? pkgVersion("@huggingface/transformers")} (onnxruntime-node ${versions["its onnxruntime-node"] ?? "—"}); node-llama-cpp ${versions["node-llama-cpp"] ?? pkgVersion("node-llama-cpp")} (llama.cpp ${versions["llama.cpp"] ?? "—"}, prebuilt CPU binary); python ${versions.python ?? "—"}, torch ${versions.torch ?? "—"}, transformers ${versions.transformers ?? "—"}; ${cfg.threads} threads in every engine`,
  `model: SmolLM2-135M-Instruct: molorec packs ${rel(modelDir)}/{fp32,int8,int4}, GGUF ${rel(gguf)}, transformers.js ${rel(tjsDir)} (molorec's exporter, concat KV cache, no LoRA inputs), PyTorch ${rel(join(modelDir, "checkpoint"))}`,
  `requests: ${cfg.perSize} per size (history ${cfg.history} titles, prompt ${cfg.sizes.map((n) => median(requests[n].map((r) => r.promptIds.length))).join("/")} tokens; candidates ${cfg.sizes.join("/")}, ${cfg.sizes.map((n) => median(requests[n].flatMap((r) => r.candidateIds.map((c) => c.length)))).join("/")} tokens each, median); at 20 candidates the first is examples/request.json, the others are drawn from examples/catalogue-movies.json`,
  `timing: ${quick ? "--quick: " : ""}median and min of ≤ ${cfg.repeats} runs per cell after ${cfg.warmup} warm-up, measured inside each engine's process around the work (no IPC; molorec's includes tokenization, the others are fed token ids); rows take turns request by request in a shuffled order; ≤ ${cfg.cellSeconds} s per cell once it has ${cfg.minSamples} runs; wall ${((performance.now() - started) / 1000).toFixed(0)} s`,
  `peak RSS: each engine's own process, getrusage's ru_maxrss at the end (loading included): ${memLine || "—"}`,
];
const text = [
  ...lines,
  "",
  markdownTable(header, table),
  "",
  "targets:",
  ...targets.map((t) => `- ${t.status} ${t.name}: ${t.detail}`),
  ...Object.entries(gens)
    .filter(([, g]) => g)
    .flatMap(([id, g]) => [
      "",
      `${id}, what it generated (first ${g.examples.length} requests):`,
      ...g.examples.map((e) => `- ${e.candidates} candidates: ${JSON.stringify(e.text)}`),
    ]),
].join("\n");
console.log(text);
if (opt.md) {
  writeReport(opt.md, text);
}
if (opt.json) {
  const dump = {
    lines,
    config: cfg,
    versions,
    memory,
    targets,
    generation: gens,
    rows: rows.map((r) => ({
      id: r.id,
      failed: r.failed ?? null,
      samples: r.samples,
      agreement: agreement(r),
      extra: r.gen ? r.extra : undefined,
    })),
  };
  const file = writeReport(opt.json, JSON.stringify(dump, null, 1));
  log(`bench/peers: wrote ${rel(file)}`);
}
