#!/usr/bin/env node
// Scores saved test cases under several mixture rows through the TypeScript runtime and writes
// every row's candidate scores (and its token-entropy objective) per case, one JSON line each.
// The recipe derives every policy from these rows (base, general, domain, wa, calibrated λ of each
// objective, adaptive by each objective, the per-module reference), so each mixture is scored once
// per case instead of once per policy run, and an interrupted evaluation resumes where it stopped.
//
//   node scripts/eval-rows.mjs --pack DIR --cases FILE --rows JSON --out FILE.jsonl
//        [--entropy-rows a,b,...] [--indices FILE] [--done FILE] [--shard I/N] [--threads 1] [--ep cpu|cuda]
//
// --rows: [{"name": "g", "domain": "movies", "mixture": {"lambda": 0}}, {"name": "base", "mixture": "base"},
//          {"name": "pm", "domain": "movies@permodule", "mixture": "domain"}, ...] (mixture: a policy or {"lambda": x})
// --entropy-rows: rows whose token-entropy objective is wanted (from the graph's token_entropy output, all
//          rows in one call; else from full logits, the rest with the scoring head only).
//          Lines: {"i": case index, "scores": {row: [...]}, "tokens": {row: objective}}.
// --indices: a JSON list of the case indices to score, in that order (default: every case).
// --done: a JSONL file of lines already scored: a case is scored only for the rows its line lacks (in --done or --out);
//          a row it has without a wanted entropy is scored again for the entropy and keeps its scores.
// --shard I/N: only every N-th case of the list, from the I-th (run N processes side by side, one thread each).
import { appendFileSync, existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { core, loadPackFromDir, nodeBackend, readJsonl, requireOptions } from "./runtime.mjs";

const { values } = parseArgs({
  options: {
    pack: { type: "string" },
    cases: { type: "string" },
    rows: { type: "string" },
    out: { type: "string" },
    "entropy-rows": { type: "string", default: "" },
    indices: { type: "string" },
    done: { type: "string" },
    shard: { type: "string", default: "0/1" },
    threads: { type: "string", default: "1" },
    ep: { type: "string", default: "cpu" },
  },
});
requireOptions(values, ["pack", "cases", "rows", "out"]);
const [shard, shards] = values.shard.split("/").map(Number);
const rows = JSON.parse(values.rows);
const entropyRows = new Set(values["entropy-rows"].split(",").filter(Boolean));
const cases = readJsonl(values.cases);
// Lines already scored, by case: a case is scored again only for the rows its line lacks.
const previous = new Map();
for (const file of [values.done, values.out]) {
  if (!file || !existsSync(file)) continue;
  for (const l of readFileSync(file, "utf8").split("\n")) {
    try {
      const line = JSON.parse(l);
      const prev = previous.get(line.i);
      previous.set(
        line.i,
        prev ? { i: line.i, scores: { ...prev.scores, ...line.scores }, tokens: { ...prev.tokens, ...line.tokens } } : line,
      );
    } catch {
      // a line cut by an interruption: that case is scored again
    }
  }
}
const has = (line, row) => line !== undefined && row.name in line.scores && (!entropyRows.has(row.name) || row.name in line.tokens);
const order = values.indices ? JSON.parse(readFileSync(values.indices, "utf8")) : cases.map((_, i) => i);
const mine = order.filter((_, k) => k % shards === shard);
const todo = mine.filter((i) => !rows.every((row) => has(previous.get(i), row)));
// This shard's cases already scored under every row (the other shards' cases are not counted).
const doneBefore = mine.length - todo.length;

const pack = await loadPackFromDir(values.pack);
const graphEntropy = JSON.parse(readFileSync(join(values.pack, "molorec.json"), "utf8")).export?.variant?.token_entropy === true;
const rec = await core.createRecommender({
  backend: nodeBackend({ executionProvider: values.ep, intraOpNumThreads: Number(values.threads) }),
  pack,
});
const weights = rows.map((r) => rec.resolveMixture(r.domain ?? null, r.mixture).weights);
const started = Date.now();
let shown = started;
try {
  for (const [n, i] of todo.entries()) {
    const c = cases[i];
    const prev = previous.get(i);
    const line = { i, scores: { ...prev?.scores }, tokens: { ...prev?.tokens } };
    const missing = rows.map((_, k) => k).filter((k) => !has(prev, rows[k]));
    // On a graph with a token_entropy output the entropies cost nothing: every missing row goes in
    // one call, so the rows share the layers below the LoRAs (fan-out) instead of running them twice.
    const together = graphEntropy && missing.some((k) => entropyRows.has(rows[k].name));
    const plain = together ? [] : missing.filter((k) => !entropyRows.has(rows[k].name));
    const withEntropy = together ? missing : missing.filter((k) => entropyRows.has(rows[k].name));
    if (plain.length) {
      const s = await rec.scoreMixtures({ history: c.history, candidates: c.candidates, mixtures: plain.map((k) => weights[k]) });
      plain.forEach((k, j) => (line.scores[rows[k].name] = s[j]));
    }
    if (withEntropy.length) {
      const r = await rec.scoreWithEntropy({ history: c.history, candidates: c.candidates, mixtures: withEntropy.map((k) => weights[k]) });
      withEntropy.forEach((k, j) => {
        // A row scored before without its entropy keeps its scores: the full-logits path rounds
        // differently (~1e-6), and a case scored again for more rows keeps what it had.
        line.scores[rows[k].name] ??= r.scores[j];
        if (entropyRows.has(rows[k].name)) line.tokens[rows[k].name] = r.objective[j];
      });
    }
    appendFileSync(values.out, `${JSON.stringify(line)}\n`);
    const now = Date.now();
    if (now - shown > 60_000 || n + 1 === todo.length) {
      const per = (now - started) / 1000 / (n + 1);
      console.log(
        `eval-rows ${values.shard}: ${n + 1}/${todo.length} cases (${doneBefore} done before), ${per.toFixed(2)} s/case, ~${((per * (todo.length - n - 1)) / 60).toFixed(0)} min left`,
      );
      shown = now;
    }
  }
} finally {
  await rec.close();
}
