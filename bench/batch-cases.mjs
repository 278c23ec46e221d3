#!/usr/bin/env node
// Does scoring several saved cases in shared model runs (`recommendBatch`) beat scoring them one
// after another (`recommend`)? The recipe's evaluation scores one case at a time; this measures
// whether batching across cases would pay on this machine. Same recommender, same requests, the two
// ways alternated round by round; checks that both rank every case the same.
//
//   pnpm build && node bench/batch-cases.mjs --pack DIR --cases test_warm.jsonl --domain NAME
//        [--n 8] [--rounds 3] [--threads 1] [--mixture calibrated]
//   e.g. node bench/batch-cases.mjs --pack artifacts/recipe-smollm2/pack
//        --cases artifacts/recipe-smollm2/prepared/movies-ml100k/test_warm.jsonl --domain movies-ml100k
import { availableParallelism, cpus, loadavg } from "node:os";
import { core, loadPackFromDir, nodeBackend, readJsonl, requireOptions } from "../scripts/runtime.mjs";
import { headerUsage, maxAbsDiff, median, parseCli } from "./lib/util.mjs";

const values = parseCli(
  {
    pack: { type: "string" },
    cases: { type: "string" },
    domain: { type: "string" },
    n: { type: "string", default: "8" },
    rounds: { type: "string", default: "3" },
    threads: { type: "string", default: "1" },
    mixture: { type: "string", default: "calibrated" },
  },
  headerUsage(import.meta.url, 1, 10),
);
requireOptions(values, ["pack", "cases", "domain"]);

const pack = await loadPackFromDir(values.pack);
const backend = nodeBackend({ executionProvider: "cpu", intraOpNumThreads: Number(values.threads) });
const rec = await core.createRecommender({ backend, pack });
const requests = readJsonl(values.cases)
  .slice(0, Number(values.n))
  .map((c) => ({ history: c.history, candidates: c.candidates, domain: values.domain, mixture: values.mixture }));
await rec.recommend(requests[0]); // warm-up: session buffers, kernels

const scoresOf = (r) => r.ranked.toSorted((a, b) => a.index - b.index).map((x) => x.score);
const times = { sequential: [], batch: [] };
let worst = 0;
for (let round = 0; round < Number(values.rounds); round++) {
  let t = performance.now();
  const one = [];
  for (const r of requests) one.push(await rec.recommend(r));
  times.sequential.push(performance.now() - t);
  t = performance.now();
  const all = await rec.recommendBatch(requests);
  times.batch.push(performance.now() - t);
  all.forEach((o, i) => {
    if (o.status !== "fulfilled") throw new Error(`case ${i} failed in the batch: ${o.reason?.message ?? o.reason}`);
    worst = Math.max(worst, maxAbsDiff(scoresOf(o.value), scoresOf(one[i])));
  });
  console.log(
    `round ${round + 1}: ${requests.length} cases one by one ${times.sequential.at(-1).toFixed(0)} ms, in one batch ${times.batch.at(-1).toFixed(0)} ms`,
  );
}
await rec.close();
console.log(
  `\n${cpus()[0]?.model ?? "CPU"}, ${availableParallelism()} cores, load ${loadavg()[0].toFixed(1)}; ${values.threads} thread(s); ${requests.length} cases`,
);
console.log(
  `median per case: one by one ${(median(times.sequential) / requests.length).toFixed(0)} ms, batched ${(median(times.batch) / requests.length).toFixed(0)} ms`,
);
console.log(
  `batched / one by one: ${(median(times.batch) / median(times.sequential)).toFixed(2)}x; largest score difference ${worst.toExponential(1)}`,
);
