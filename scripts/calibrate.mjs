#!/usr/bin/env node
// `molorec calibrate` with a thread count: λ for one domain on the first N unlabeled valid prompts,
// by one objective, written as JSON (the CLI's --out format). The recipe runs several of these side
// by side, one thread each (on a shared CPU, measured faster than one process with several threads),
// and stores the λ in the pack itself afterwards.
//
//   node scripts/calibrate.mjs --pack DIR --domain NAME --data DIR --out FILE [--n 64] [--objective tokens] [--threads 1] [--ep cpu]
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { core, loadPackFromDir, nodeBackend, readJsonl, requireOptions } from "./runtime.mjs";

const { values } = parseArgs({
  options: {
    pack: { type: "string" },
    domain: { type: "string" },
    data: { type: "string" },
    out: { type: "string" },
    n: { type: "string", default: "64" },
    objective: { type: "string", default: "tokens" },
    threads: { type: "string", default: "1" },
    ep: { type: "string", default: "cpu" },
  },
});
requireOptions(values, ["pack", "domain", "data", "out"]);
const rows = readJsonl(join(values.data, "valid.jsonl")).slice(0, Number(values.n));
// Unlabeled: the label is dropped before anything sees the requests (as the CLI does).
const requests = rows.map((r) => ({ history: r.history, candidates: r.candidates }));
const pack = await loadPackFromDir(values.pack);
const rec = await core.createRecommender({
  backend: nodeBackend({ executionProvider: values.ep, intraOpNumThreads: Number(values.threads) }),
  pack,
  entropyObjective: values.objective === "information" ? "tokens" : values.objective,
});
try {
  const started = Date.now();
  let shown = started;
  const res = await rec.calibrate(values.domain, requests, {
    objective: values.objective,
    // A line a minute: the recipe runs several of these side by side and interleaves their output.
    onProgress: (p) => {
      if (Date.now() - shown < 60_000) return;
      shown = Date.now();
      console.log(
        `calibrate ${values.domain} (${values.objective}): ${p.scored}/${p.requests} prompts at ${p.lambdas} λ values, ${p.lambdasDone} λ done, ${((shown - started) / 1000).toFixed(0)} s`,
      );
    },
  });
  const seconds = (Date.now() - started) / 1000;
  console.log(
    `calibrated ${values.domain} (${values.objective}) on ${requests.length} unlabeled prompts in ${seconds.toFixed(1)} s: λ = ${res.lambda.toFixed(3)}`,
  );
  writeFileSync(
    values.out,
    `${JSON.stringify({ domain: values.domain, prompts: requests.length, entropyObjective: res.objectiveKind, seconds, ...res }, null, 2)}\n`,
  );
} finally {
  await rec.close();
}
