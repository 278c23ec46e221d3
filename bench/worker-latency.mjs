#!/usr/bin/env node
// Cold-start and warm latency of the Cloudflare Worker in local workerd (`wrangler dev` on
// 127.0.0.1), beside the Node runtime (in-process @molorec/runtime-node) on the same request.
//
//   pnpm build && node bench/worker-latency.mjs [--pack DIR] [--request FILE] [--runs N] [--warm M] [--source assets|r2]
//
// --source r2 serves the pack from the local R2 bucket (MOLOREC_PACK=r2:…, uploaded with `wrangler
// r2 object put --local`) instead of static assets, whose files are limited to 25 MiB.
// cold  = the first POST /v1/recommend of a fresh workerd (pack read from static assets, tokenizer,
//         ORT wasm init, session, first scoring); in Node: loadPackFromDir + createRecommender +
//         first recommend in this process.
// warm  = median of the following requests (Worker: over HTTP through wrangler's local proxy).
// Loopback only; bounded: at most 10 runs × 200 warm requests and a 10-minute overall limit.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { cpus, platform, release, tmpdir, totalmem } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { headerUsage, parseCli } from "./lib/util.mjs";

const root = fileURLToPath(new URL("..", import.meta.url));
const USAGE = headerUsage(import.meta.url, 1, 14);
const values = parseCli(
  {
    pack: { type: "string", default: join(root, "test/fixtures/tiny-pack") },
    request: { type: "string" },
    runs: { type: "string", default: "3" },
    warm: { type: "string", default: "20" },
    json: { type: "boolean", default: false },
    source: { type: "string", default: "assets" },
  },
  USAGE,
);
if (!["assets", "r2"].includes(values.source)) {
  console.error(`--source must be assets or r2\n\n${USAGE}`);
  process.exit(2);
}
const runs = Math.min(10, Math.max(1, Number(values.runs)));
const warm = Math.min(200, Math.max(1, Number(values.warm)));
const packDir = resolve(values.pack);
const deadline = Date.now() + 10 * 60_000;

const dev = await import(pathToFileURL(join(root, "apps/worker/test/wrangler-dev.mjs")).href);
const requireFromWorker = createRequire(join(root, "apps/worker/package.json"));
let core, runtimeNode;
try {
  core = await import(pathToFileURL(requireFromWorker.resolve("@molorec/core")).href);
  runtimeNode = await import(pathToFileURL(requireFromWorker.resolve("@molorec/runtime-node")).href);
} catch (e) {
  console.error(`bench: cannot load the built packages (${e.message}); run \`pnpm build\` first.`);
  process.exit(2);
}

function defaultRequest() {
  const golden = JSON.parse(readFileSync(join(root, "test/fixtures/tiny-pack.golden.json"), "utf8"));
  const c = golden.cases.find((x) => x.request.history.length > 10) ?? golden.cases[0];
  return { ...c.request, mixture: "calibrated" };
}
const request = values.request ? JSON.parse(readFileSync(values.request, "utf8")) : defaultRequest();
// A pack without domains or adapters (a plain LLM such as SmolLM2): no domain, the base model.
const manifest = JSON.parse(readFileSync(join(packDir, "molorec.json"), "utf8"));
if (request.domain !== undefined && !(request.domain in (manifest.domains ?? {}))) delete request.domain;
if (Object.keys(manifest.adapters ?? {}).length === 0) request.mixture = "base";
const body = JSON.stringify(request);

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const ms = (x) => `${x.toFixed(1)} ms`;
function checkTime() {
  if (Date.now() > deadline) throw new Error("bench: over its 10-minute limit; use fewer --runs/--warm");
}

async function workerRun(configPath, statePath) {
  const server = await dev.startWranglerDev({ configPath, statePath });
  const pid = server.workerdPid();
  const before = pid ? dev.memoryOf(pid) : null;
  try {
    const post = async () => {
      for (let attempt = 0; ; attempt++) {
        const t0 = performance.now();
        const res = await fetch(`${server.url}/v1/recommend`, { method: "POST", body, headers: { "content-type": "application/json" } });
        const text = await res.text();
        // After a request that blocked the isolate for many seconds (a big pack), wrangler dev's
        // own proxy (local only) may answer the next POST with this 503 without running it; the
        // isolate is unchanged (same session). Retried at most twice, and counted.
        if (res.status === 503 && text.startsWith("Your worker restarted mid-request") && attempt < 2) {
          proxyRetries++;
          await new Promise((r) => setTimeout(r, 1000));
          continue;
        }
        if (res.status !== 200) throw new Error(`worker answered ${res.status}: ${text.slice(0, 1000)}`);
        return { ms: performance.now() - t0, json: JSON.parse(text) };
      }
    };
    let proxyRetries = 0;
    const cold = await post();
    const after = pid ? dev.memoryOf(pid) : null;
    const warmTimes = [];
    for (let i = 0; i < warm; i++) {
      checkTime();
      warmTimes.push((await post()).ms);
    }
    // The same proxy quirk parks a GET until a reload that never comes: time out and ask again.
    let health;
    for (let attempt = 0; !health; attempt++) {
      try {
        health = await (await fetch(`${server.url}/v1/health`, { signal: AbortSignal.timeout(15_000) })).json();
      } catch (e) {
        if (attempt >= 2) throw e;
        proxyRetries++;
      }
    }
    const end = pid ? dev.memoryOf(pid) : null;
    const v8 = await server.isolateHeap().catch(() => null);
    return {
      proxyRetries,
      cold: cold.ms,
      warm: median(warmTimes),
      loadMs: health.isolate?.lastLoadMs ?? null,
      sessions: health.isolate?.sessionsCreated ?? null,
      wasmHeapMiB: health.isolate?.wasmHeapMiB ?? null,
      v8HeapMiB: v8,
      memory:
        before && after
          ? { rssBeforeMiB: before.rssMiB, peakAfterFirstMiB: after.peakRssMiB, peakAtEndMiB: end?.peakRssMiB ?? null }
          : null,
      answer: cold.json,
    };
  } catch (e) {
    // Say what the Worker did (an error answer, a crash of workerd) and how big the process got.
    const alive = pid
      ? (() => {
          try {
            return dev.memoryOf(pid);
          } catch {
            return null;
          }
        })()
      : null;
    e.message += `\nworkerd RSS before the first request ${before ? before.rssMiB.toFixed(0) : "?"} MiB, peak ${alive ? alive.peakRssMiB.toFixed(0) : "? (process gone)"} MiB\nwrangler output (last 4000 characters):\n${server.output().slice(-4000)}`;
    throw e;
  } finally {
    await server.stop();
  }
}

async function nodeRun() {
  const t0 = performance.now();
  const pack = await runtimeNode.loadPackFromDir(packDir);
  const rec = await core.createRecommender({ backend: runtimeNode.nodeBackend({ executionProvider: "cpu", log: () => {} }), pack });
  const loadMs = performance.now() - t0;
  const answer = await rec.recommend(request);
  const cold = performance.now() - t0;
  const warmTimes = [];
  for (let i = 0; i < warm; i++) {
    checkTime();
    const t = performance.now();
    await rec.recommend(request);
    warmTimes.push(performance.now() - t);
  }
  await rec.close();
  return { cold, warm: median(warmTimes), loadMs, answer };
}

const cpu = cpus();
const machine = `${cpu[0]?.model ?? "unknown CPU"}, ${cpu.length} cores, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, ${platform()} ${release()}, Node ${process.version}`;
const tmp = mkdtempSync(join(tmpdir(), "molorec-bench-"));
try {
  let configPath;
  let statePath;
  if (values.source === "r2") {
    configPath = dev.configForR2Pack("packs/bench/", tmp);
    statePath = join(tmp, "state");
    await dev.putPackInLocalR2(packDir, "packs/bench/", statePath, configPath);
  } else configPath = dev.configForPack(packDir, tmp);
  const worker = [];
  const node = [];
  for (let i = 0; i < runs; i++) {
    checkTime();
    worker.push(await workerRun(configPath, statePath));
    node.push(await nodeRun());
  }
  const maxDiff = Math.max(...worker[0].answer.ranked.map((r, i) => Math.abs(r.score - node[0].answer.ranked[i].score)));
  const sameRanking = worker[0].answer.ranked.every((r, i) => r.index === node[0].answer.ranked[i].index);
  const summary = {
    machine,
    pack: packDir,
    source: values.source,
    request: { history: request.history.length, candidates: request.candidates.length, mixture: request.mixture ?? "calibrated" },
    runs,
    warmRequestsPerRun: warm,
    worker: {
      coldMs: median(worker.map((w) => w.cold)),
      warmMs: median(worker.map((w) => w.warm)),
      serverLoadMs: median(worker.filter((w) => w.loadMs !== null).map((w) => w.loadMs)),
      sessionsCreated: worker.map((w) => w.sessions),
      proxyRetries: worker.map((w) => w.proxyRetries),
      memoryMiB: worker[0].memory,
      wasmHeapMiB: Math.max(...worker.map((w) => w.wasmHeapMiB ?? 0)),
      v8HeapMiB: worker[0].v8HeapMiB,
      // What counts against the 128 MB limit: V8 heap + its ArrayBuffers + the wasm memory.
      isolateMiB: worker[0].v8HeapMiB
        ? worker[0].v8HeapMiB.totalMiB + worker[0].v8HeapMiB.backingStorageMiB + Math.max(...worker.map((w) => w.wasmHeapMiB ?? 0))
        : null,
    },
    node: { coldMs: median(node.map((n) => n.cold)), warmMs: median(node.map((n) => n.warm)), loadMs: median(node.map((n) => n.loadMs)) },
    agreement: { sameRanking, maxScoreDiff: maxDiff },
  };
  if (values.json) {
    console.log(JSON.stringify(summary, null, 2));
  } else {
    console.log(`machine: ${machine}`);
    console.log(`pack: ${packDir} (${values.source === "r2" ? "local R2" : "static assets"})`);
    console.log(
      `request: ${summary.request.history} history items, ${summary.request.candidates} candidates, mixture ${summary.request.mixture}; ${runs} runs × ${warm} warm requests (medians)`,
    );
    console.log("");
    console.log("                          cold (first request)   warm (median)   model load");
    console.log(
      `  worker (wrangler dev)   ${ms(summary.worker.coldMs).padStart(20)}   ${ms(summary.worker.warmMs).padStart(13)}   ${summary.worker.serverLoadMs === null ? "?" : ms(summary.worker.serverLoadMs)} (in the isolate)`,
    );
    console.log(
      `  node (in-process)       ${ms(summary.node.coldMs).padStart(20)}   ${ms(summary.node.warmMs).padStart(13)}   ${ms(summary.node.loadMs)}`,
    );
    console.log("");
    console.log(
      `worker over HTTP through wrangler's local proxy; node without HTTP. sessions created per worker run: ${summary.worker.sessionsCreated.join(", ")}${summary.worker.proxyRetries.some((n) => n > 0) ? `; requests retried after wrangler dev's proxy dropped them (its "restarted mid-request" 503, or a parked GET): ${summary.worker.proxyRetries.join(", ")}` : ""}`,
    );
    const v8 = summary.worker.v8HeapMiB;
    console.log(
      `isolate memory (limit 128 MB): ${summary.worker.isolateMiB === null ? "?" : summary.worker.isolateMiB.toFixed(1)} MiB after ${warm + 1} requests = onnxruntime-web wasm heap ${summary.worker.wasmHeapMiB.toFixed(1)} MiB (exact; it only grows) + V8 heap ${v8 ? `${v8.totalMiB.toFixed(1)} MiB (${v8.usedMiB.toFixed(1)} used) + ArrayBuffers ${v8.backingStorageMiB.toFixed(1)} MiB` : "? (inspector unavailable)"}`,
    );
    if (summary.worker.memoryMiB) {
      const m = summary.worker.memoryMiB;
      console.log(
        `the Worker's workerd process RSS (whole process with workerd and compiled wasm code, an upper bound): ${m.rssBeforeMiB.toFixed(0)} MiB before the first request, peak ${m.peakAfterFirstMiB.toFixed(0)} MiB after it (+${(m.peakAfterFirstMiB - m.rssBeforeMiB).toFixed(0)} MiB), peak ${m.peakAtEndMiB?.toFixed(0) ?? "?"} MiB after ${warm} more`,
      );
    }
    console.log(`worker vs node: same ranking ${sameRanking}, max |score diff| ${maxDiff.toExponential(2)}`);
  }
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
