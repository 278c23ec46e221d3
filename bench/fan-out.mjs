#!/usr/bin/env node
// Does the fan-out graph pay? The same pack exported twice — without fan-out, and with it
// (model.sharedLayers K: the layers below the lowest LoRA target run once per request, not once per
// mixture) — scores the same saved cases under the recipe's evaluation rows (the base model and the
// λ grid, each case one scoreMixtures call; with --entropy also scoreWithEntropy, the path the adaptive
// rows and calibration use). The two packs alternate round by round in one process; scores must agree.
//
//   pnpm build && node bench/fan-out.mjs --plain DIR --fanout DIR --cases test_warm.jsonl --domain NAME
//        [--n 4] [--rounds 2] [--threads 1] [--lambdas 0,0.25,0.5,0.75,1] [--entropy]
//   e.g. node bench/fan-out.mjs --plain artifacts/smollm2-earlier-graph --fanout artifacts/recipe-smollm2/pack
//        --cases artifacts/recipe-smollm2/prepared/movies-ml100k/test_warm.jsonl --domain movies-ml100k --entropy
// --plain: the pack's files with a graph exported without fan-out, e.g. export_onnx(model, targets, path,
// replace(FAST_VARIANT, fan_out=False, token_entropy=False)) (training/molorec_train/export.py) and the
// manifest's model.sharedLayers removed.
import { availableParallelism, cpus, loadavg } from "node:os";
import { core, loadPackFromDir, nodeBackend, readJsonl, requireOptions } from "../scripts/runtime.mjs";
import { headerUsage, maxAbsDiff, median, parseCli } from "./lib/util.mjs";

const values = parseCli(
  {
    plain: { type: "string" },
    fanout: { type: "string" },
    cases: { type: "string" },
    domain: { type: "string" },
    n: { type: "string", default: "4" },
    rounds: { type: "string", default: "2" },
    threads: { type: "string", default: "1" },
    lambdas: { type: "string", default: "0,0.25,0.5,0.75,1" },
    entropy: { type: "boolean", default: false },
  },
  headerUsage(import.meta.url, 1, 14),
);
requireOptions(values, ["plain", "fanout", "cases", "domain"]);

const cases = readJsonl(values.cases).slice(0, Number(values.n));
const lambdas = values.lambdas.split(",").map(Number);
const backend = nodeBackend({ executionProvider: "cpu", intraOpNumThreads: Number(values.threads) });
const packs = {};
for (const name of ["plain", "fanout"]) {
  const pack = await loadPackFromDir(values[name]);
  const rec = await core.createRecommender({ backend, pack });
  const mixtures = [
    rec.resolveMixture(null, "base").weights,
    ...lambdas.map((l) => rec.resolveMixture(values.domain, { lambda: l }).weights),
  ];
  packs[name] = { rec, mixtures, sharedLayers: pack.manifest.model.sharedLayers };
}
if (packs.plain.sharedLayers !== 0 || packs.fanout.sharedLayers === 0)
  throw new Error(
    `--plain must be a pack without fan-out and --fanout one with it (model.sharedLayers ${packs.plain.sharedLayers}, ${packs.fanout.sharedLayers})`,
  );

const paths = values.entropy ? ["scoreMixtures", "scoreWithEntropy"] : ["scoreMixtures"];
async function score(name, path) {
  const { rec, mixtures } = packs[name];
  const out = [];
  for (const c of cases) {
    const req = { history: c.history, candidates: c.candidates, mixtures };
    if (path === "scoreMixtures") out.push({ scores: await rec.scoreMixtures(req), objective: [] });
    else out.push(await rec.scoreWithEntropy(req));
  }
  return out;
}
for (const name of ["plain", "fanout"]) await score(name, "scoreMixtures"); // warm-up: session buffers, kernels

const times = Object.fromEntries(paths.map((p) => [p, { plain: [], fanout: [] }]));
let worst = 0;
let worstEntropy = 0;
for (let round = 0; round < Number(values.rounds); round++) {
  for (const path of paths) {
    const got = {};
    for (const name of round % 2 ? ["fanout", "plain"] : ["plain", "fanout"]) {
      const t = performance.now();
      got[name] = await score(name, path);
      times[path][name].push((performance.now() - t) / cases.length);
    }
    got.plain.forEach(({ scores, objective }, i) => {
      scores.forEach((s, m) => (worst = Math.max(worst, maxAbsDiff(s, got.fanout[i].scores[m]))));
      worstEntropy = Math.max(worstEntropy, maxAbsDiff(objective, got.fanout[i].objective));
    });
    console.log(
      `round ${round + 1}, ${path}: ${times[path].plain.at(-1).toFixed(0)} ms/case without fan-out, ${times[path].fanout.at(-1).toFixed(0)} with`,
    );
  }
}
for (const { rec } of Object.values(packs)) await rec.close();
console.log(
  `\n${cpus()[0]?.model ?? "CPU"}, ${availableParallelism()} cores, load ${loadavg()[0].toFixed(1)}; ${values.threads} thread(s); ${cases.length} cases × ${lambdas.length + 1} rows (base, λ ${values.lambdas}); fan-out shares ${packs.fanout.sharedLayers} layers`,
);
for (const path of paths) {
  const [a, b] = [median(times[path].plain), median(times[path].fanout)];
  console.log(`${path}: median ${a.toFixed(0)} → ${b.toFixed(0)} ms/case, ${(a / b).toFixed(2)}x faster with fan-out`);
}
console.log(
  `largest difference between the two graphs: scores ${worst.toExponential(1)}${values.entropy ? `, token-entropy objective ${worstEntropy.toExponential(1)}` : ""}`,
);
