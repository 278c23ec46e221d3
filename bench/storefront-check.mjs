#!/usr/bin/env node
// Serves a pack in the storefront (Debian's Chromium, headless) and checks it against the Node
// runtime on one request, per device: same ranking, largest score difference, the page's download
// (progress events) and Cache Storage (a reload reads the pack from it), start-up, first and warm
// latency. --pack is the storefront's own switch; the default is the storefront's default pack.
//
//   pnpm build && node bench/storefront-check.mjs [--pack DIR] [--request FILE] [--devices wasm,webgpu]
//       [--candidates N] [--webgpu-candidates N] [--warm N] [--timeout-min M] [--json]
//   e.g. the SmolLM2-135M int4 pack (scripts/smollm2-packs.sh), WASM and WebGPU (SwiftShader here):
//   node bench/storefront-check.mjs --pack artifacts/smollm2/int4 --devices wasm,webgpu,auto --webgpu-candidates 5 --warm 2
//
// devices: wasm, webgpu (forced, even where webGpuBlockers() says WebGPU cannot run the pack), auto
// (the page's default: WebGPU unless the pack has such ops, else WASM). The page is built from
// source into a temporary folder with the catalogue the storefront would pick (else one made of the
// request's titles). A pack without adapters is asked for the base model without a domain, as the
// page does. Exits 1 unless the page behaves as designed: every device agrees with Node (same
// ranking, |Δscore| ≤ 1e-3), except forced WebGPU on a pack with blockers, which must fail as
// predicted, and auto, which must then run on WASM. Bounded: at most 100 warm requests per device
// and --timeout-min (default 10, at most 60) minutes overall.
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { cpus, platform, release, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { headerUsage, median, parseCli } from "./lib/util.mjs";

const root = fileURLToPath(new URL("..", import.meta.url));
const USAGE = headerUsage(import.meta.url, 1, 19);
const values = parseCli(
  {
    pack: { type: "string" },
    request: { type: "string", default: join(root, "examples/request.json") },
    devices: { type: "string", default: "wasm" },
    candidates: { type: "string" },
    "webgpu-candidates": { type: "string" },
    warm: { type: "string", default: "5" },
    "timeout-min": { type: "string", default: "10" },
    json: { type: "boolean", default: false },
  },
  USAGE,
);
const warm = Math.min(100, Math.max(0, Number(values.warm)));
const devices = values.devices.split(",").map((d) => d.trim());
for (const d of devices) {
  if (!["wasm", "webgpu", "auto"].includes(d)) {
    console.error(`storefront-check: unknown device "${d}" (wasm, webgpu, auto)\n\n${USAGE}`);
    process.exit(2);
  }
}
const timeoutMs = Math.min(60, Math.max(1, Number(values["timeout-min"]))) * 60_000;
const timer = setTimeout(() => {
  console.error(`storefront-check: over its ${timeoutMs / 60_000}-minute limit (--timeout-min)`);
  process.exit(1);
}, timeoutMs);
timer.unref();

const fromStorefront = createRequire(join(root, "apps/storefront/package.json"));
let core, runtimeNode, chromium, buildSite, autoCataloguePath, startServer, resolveConfig, CHROMIUM_PATH, launchChromium;
try {
  core = await import(pathToFileURL(fromStorefront.resolve("@molorec/core")).href);
  runtimeNode = await import(pathToFileURL(createRequire(join(root, "apps/worker/package.json")).resolve("@molorec/runtime-node")).href);
  const pw = await import(pathToFileURL(fromStorefront.resolve("playwright-core")).href);
  chromium = pw.chromium ?? pw.default.chromium; // CommonJS: named exports are not always detected
  ({ buildSite, autoCataloguePath } = await import(pathToFileURL(join(root, "apps/storefront/scripts/build.mjs")).href));
  ({ startServer } = await import(pathToFileURL(join(root, "apps/storefront/scripts/server.mjs")).href));
  ({ resolveConfig } = await import(pathToFileURL(join(root, "apps/storefront/scripts/config.mjs")).href));
  ({ CHROMIUM_PATH, launchChromium } = await import(pathToFileURL(join(root, "apps/storefront/scripts/chromium.mjs")).href));
} catch (e) {
  console.error(`storefront-check: cannot load the built packages (${e.message}); run \`pnpm build\` first.`);
  process.exit(2);
}

// The storefront's own resolution: storefront.config.json, overridden by --pack (relative to here).
const cfg = resolveConfig(values.pack ? ["--pack", resolve(values.pack)] : []);
const packDir = cfg.packDir;
const manifest = JSON.parse(readFileSync(join(packDir, "molorec.json"), "utf8"));
const baseRequest = JSON.parse(readFileSync(values.request, "utf8"));
const domains = Object.keys(manifest.domains ?? {});
if (baseRequest.domain !== undefined && !domains.includes(baseRequest.domain)) {
  console.error(
    `storefront-check: the request's domain "${baseRequest.domain}" is not in ${manifest.name}; using ${domains.length ? "the pack's default domain" : "no domain (the pack has none)"}`,
  );
  delete baseRequest.domain;
}
if (Object.keys(manifest.adapters ?? {}).length === 0 && baseRequest.mixture !== "base") {
  console.error(`storefront-check: ${manifest.name} has no adapters; asking for the base model, as the storefront does`);
  baseRequest.mixture = "base";
}
const catalogueDomain = baseRequest.domain ?? manifest.defaultDomain ?? domains[0] ?? "none";
const cut = (n) =>
  n === undefined ? baseRequest : { ...baseRequest, candidates: baseRequest.candidates.slice(0, Math.max(2, Number(n))) };
const requests = {
  wasm: cut(values.candidates),
  auto: cut(values.candidates),
  webgpu: cut(values["webgpu-candidates"] ?? values.candidates),
};

/** Node's answer and warm latency for each distinct request. */
async function nodeSide() {
  const pack = await runtimeNode.loadPackFromDir(packDir);
  const rec = await core.createRecommender({ backend: runtimeNode.nodeBackend({ executionProvider: "cpu", log: () => {} }), pack });
  const out = new Map();
  try {
    for (const d of devices) {
      const key = JSON.stringify(requests[d]);
      if (out.has(key)) continue;
      const t0 = performance.now();
      const answer = await rec.recommend(requests[d]);
      const firstMs = performance.now() - t0;
      const times = [];
      for (let i = 0; i < Math.max(1, warm); i++) {
        const t = performance.now();
        await rec.recommend(requests[d]);
        times.push(performance.now() - t);
      }
      out.set(key, { answer, firstMs, warmMs: median(times) });
    }
  } finally {
    await rec.close();
  }
  return out;
}

const scoresOf = (a) => {
  const s = new Array(a.ranked.length);
  for (const r of a.ranked) s[r.index] = r.score;
  return s;
};

async function browserSide(work, nodeAnswers) {
  let cataloguePath = cfg.cataloguePath;
  if (cataloguePath === null && !existsSync(autoCataloguePath(manifest))) {
    const titles = [...new Set([...baseRequest.history, ...baseRequest.candidates])];
    cataloguePath = join(work, "catalogue.json");
    writeFileSync(
      cataloguePath,
      JSON.stringify({ name: "pack check", domain: catalogueDomain, items: titles.map((title, i) => ({ id: `i${i}`, title })) }),
    );
  }
  const tb = performance.now();
  await buildSite({ packDir, cataloguePath, outDir: join(work, "site"), fromSource: true, log: () => {} });
  const buildMs = performance.now() - tb;
  const server = await startServer({ root: join(work, "site"), packDir, port: 0 });
  const ctx = await launchChromium(chromium, join(work, "profile"));
  const results = [];
  try {
    const page = ctx.pages()[0] ?? (await ctx.newPage());
    const log = [];
    page.on("pageerror", (e) => log.push(`pageerror: ${e.message}`));
    page.on("console", (m) => log.push(`${m.type()}: ${m.text()}`));
    const open = async (device, reload = false) => {
      if (reload) await page.reload();
      else await page.goto(`${server.url}?device=${device}`);
      await page.waitForFunction(() => document.body.dataset.state !== "loading", null, { timeout: timeoutMs });
      return page.evaluate(() => ({
        state: document.body.dataset.state,
        engine: document.getElementById("engine")?.textContent ?? "",
        error: document.getElementById("error-message")?.textContent ?? "",
        errorDetails: [...document.querySelectorAll("#error-details li")].map((li) => li.textContent),
        info: window.molorec.info(),
        stats: window.molorec.stats,
        timings: window.molorec.timings,
        progress: window.molorec.progress,
        defaults: window.molorec.defaults,
        blockers: window.molorec.webgpuBlockers,
        loadStats: document.getElementById("load-stats")?.textContent ?? "",
      }));
    };
    let first = true;
    for (const device of devices) {
      const r = { device, request: { history: requests[device].history.length, candidates: requests[device].candidates.length } };
      results.push(r);
      const visit = await open(device);
      Object.assign(r, {
        state: visit.state,
        engine: visit.engine,
        ran: visit.info?.device ?? null,
        failures: visit.info?.failures ?? {},
        adapter: visit.info?.adapter ?? null,
        webgpuBlockers: visit.blockers.map((b) => ({ op: b.op, detail: b.detail, count: b.count, effect: b.effect })),
      });
      if (first) {
        // A fresh profile: the first visit downloads (with progress), a reload reads Cache Storage.
        first = false;
        r.firstVisit = {
          bytesFromNetwork: visit.stats?.bytesFromNetwork ?? null,
          bytesFromCache: visit.stats?.bytesFromCache ?? null,
          progressEvents: visit.progress.events,
          progressLoaded: visit.progress.loaded,
          progressTotal: visit.progress.total,
          packMs: visit.timings?.packMs ?? null,
          sessionMs: visit.timings?.sessionMs ?? null,
          readyMs: visit.timings?.readyMs ?? null,
        };
        if (visit.state === "ready") {
          const again = await open(device, true);
          r.cachedVisit = {
            bytesFromNetwork: again.stats?.bytesFromNetwork ?? null,
            bytesFromCache: again.stats?.bytesFromCache ?? null,
            cacheNote: again.stats?.cacheNote ?? null,
            packMs: again.timings?.packMs ?? null,
            sessionMs: again.timings?.sessionMs ?? null,
            readyMs: again.timings?.readyMs ?? null,
          };
        }
      } else {
        r.visit = {
          bytesFromCache: visit.stats?.bytesFromCache ?? null,
          packMs: visit.timings?.packMs ?? null,
          sessionMs: visit.timings?.sessionMs ?? null,
          readyMs: visit.timings?.readyMs ?? null,
        };
      }
      if (visit.state !== "ready") {
        r.error = `${visit.error} ${visit.errorDetails.join("; ")}`.trim();
        continue;
      }
      await page.evaluate(() => localStorage.clear());
      const got = await page.evaluate(
        async ({ req, n }) => {
          const h = window.molorec;
          const t0 = performance.now();
          const answer = await h.recommend(req);
          const firstMs = performance.now() - t0;
          const times = [];
          for (let i = 0; i < n; i++) {
            const t = performance.now();
            await h.recommend(req);
            times.push(performance.now() - t);
          }
          return { answer, firstMs, times };
        },
        { req: requests[device], n: warm },
      );
      const node = nodeAnswers.get(JSON.stringify(requests[device]));
      const sn = scoresOf(node.answer);
      const sw = scoresOf(got.answer);
      Object.assign(r, {
        firstRequestMs: got.firstMs,
        warmMs: got.times.length ? median(got.times) : null,
        warmRuns: got.times.length,
        sameRanking: JSON.stringify(node.answer.ranked.map((x) => x.index)) === JSON.stringify(got.answer.ranked.map((x) => x.index)),
        maxAbsScoreDiff: Math.max(...sn.map((x, i) => Math.abs(x - sw[i]))),
        top3: got.answer.ranked.slice(0, 3).map((x) => x.title),
        nodeWarmMs: node.warmMs,
        nodeFirstMs: node.firstMs,
      });
    }
    return { results, buildMs, log };
  } finally {
    await ctx.close();
    await server.close();
  }
}

const work = mkdtempSync(join(tmpdir(), "molorec-storefront-check-"));
try {
  const nodeAnswers = await nodeSide();
  const { results, buildMs, log } = await browserSide(work, nodeAnswers);
  const modelBytes = manifest.quantization?.modelBytes ?? null;
  const summary = {
    pack: `${manifest.name} (${packDir})`,
    modelBytes,
    mixture: baseRequest.mixture ?? "calibrated",
    domain: baseRequest.domain ?? manifest.defaultDomain ?? null,
    machine: `${cpus()[0]?.model ?? "unknown CPU"}, ${cpus().length} cores, ${platform()} ${release()}, Node ${process.version}, Chromium ${CHROMIUM_PATH}`,
    buildMs,
    devices: results,
  };
  // As designed: every device agrees with Node, except forced WebGPU where webGpuBlockers() says it
  // cannot (no session, or wrong values) — then it must fail that way — and `auto` avoids WebGPU then.
  for (const r of results) {
    const agrees = r.state === "ready" && r.sameRanking && r.maxAbsScoreDiff <= 1e-3;
    const predicted = r.webgpuBlockers ?? [];
    if (r.device === "webgpu" && predicted.length > 0) {
      const noSession = predicted.some((b) => b.effect === "session");
      r.asPredicted = noSession ? r.state === "error" && r.failures.webgpu?.stage === "session" : r.state === "ready" && !agrees;
      r.verdict = r.asPredicted
        ? `WebGPU cannot run this pack, as webGpuBlockers() predicts (${noSession ? "no session" : "wrong scores"})`
        : `webGpuBlockers() predicted ${noSession ? "no session" : "wrong scores"} on WebGPU, but the page ${agrees ? "agrees with Node" : `is ${r.state}`}: update it (bench/webgpu-kernels.mjs)`;
      r.ok = r.asPredicted;
    } else if (r.device === "auto" && predicted.length > 0) {
      r.ok = agrees && r.ran === "wasm";
      r.verdict = r.ok
        ? "auto opened it on WASM (WebGPU skipped) and agrees with Node"
        : `auto: ran on ${r.ran}, ${agrees ? "agrees" : "does NOT agree"} with Node`;
    } else {
      r.ok = agrees;
      r.verdict = agrees ? "agrees with Node" : r.state === "ready" ? "does NOT agree with Node" : `the page did not start (${r.state})`;
    }
  }
  const ok = results.every((r) => r.ok);
  if (values.json) console.log(JSON.stringify(summary, null, 2));
  else {
    const s = (ms) => (ms == null ? "?" : ms >= 10_000 ? `${(ms / 1000).toFixed(1)} s` : `${ms.toFixed(0)} ms`);
    const mb = (b) => (b == null ? "?" : `${(b / 1e6).toFixed(1)} MB`);
    console.log(`pack ${summary.pack}; mixture ${summary.mixture}, domain ${summary.domain ?? "none"}\nmachine: ${summary.machine}`);
    for (const r of results) {
      console.log(`\n[${r.device}] ${r.request.history} history titles, ${r.request.candidates} candidates — ${r.state}: ${r.engine}`);
      console.log(`  ${r.ok ? "ok" : "FAILED"}: ${r.verdict}`);
      for (const [name, f] of Object.entries(r.failures)) console.log(`  ${name} failed (${f.stage}): ${f.message}`);
      if (r.firstVisit) {
        const f = r.firstVisit;
        console.log(
          `  first visit: ${mb(f.bytesFromNetwork)} downloaded (${f.progressEvents} progress events, last ${mb(f.progressLoaded)} of ${mb(f.progressTotal)}) in ${s(f.packMs)}; session ${s(f.sessionMs)}; ready ${s(f.readyMs)}`,
        );
      }
      if (r.cachedVisit) {
        const c = r.cachedVisit;
        console.log(
          `  reload: ${mb(c.bytesFromCache)} from Cache Storage, ${mb(c.bytesFromNetwork)} over the network${c.cacheNote ? ` (${c.cacheNote})` : ""} in ${s(c.packMs)}; session ${s(c.sessionMs)}; ready ${s(c.readyMs)}`,
        );
      }
      if (r.visit)
        console.log(`  visit: ${mb(r.visit.bytesFromCache)} from Cache Storage in ${s(r.visit.packMs)}; session ${s(r.visit.sessionMs)}`);
      if (r.error) console.log(`  error: ${r.error}`);
      if (r.firstRequestMs !== undefined) {
        console.log(
          `  vs Node: same ranking ${r.sameRanking ? "yes" : "NO"}; max |Δscore| ${r.maxAbsScoreDiff.toExponential(1)}; top 3: ${r.top3.join(" | ")}`,
        );
        console.log(
          `  latency: first request ${s(r.firstRequestMs)}, warm ${r.warmMs == null ? "-" : s(r.warmMs)} (median of ${r.warmRuns}); Node first ${s(r.nodeFirstMs)}, warm ${s(r.nodeWarmMs)}`,
        );
      }
    }
    if (!ok && log.length) console.log(`\npage console (last 20 lines):\n${log.slice(-20).join("\n")}`);
  }
  if (!ok) process.exitCode = 1;
} finally {
  rmSync(work, { recursive: true, force: true });
}
