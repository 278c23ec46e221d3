#!/usr/bin/env node
// Runs one request on a pack in the storefront (Debian's Chromium, headless, onnxruntime-web WASM)
// and in the Node runtime, and prints both rankings, the largest score difference, the page's
// pack download and start-up times, and the warm latency of each. For any pack: the fixture, the
// demo, a distilled or quantized student.
//
//   pnpm build && node bench/storefront-check.mjs [--pack DIR] [--request FILE] [--warm N] [--json]
//   (defaults: packs/demo, else the fixture pack; examples/request.json)
//
// The page is built from source into a temporary folder with a catalogue made of the request's
// titles (so the pack's domain needs no committed catalogue), served on 127.0.0.1. Bounded: at
// most 100 warm requests per side and a 10-minute overall limit.
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { cpus, platform, release, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { headerUsage, median, parseCli } from "./lib/util.mjs";

const root = fileURLToPath(new URL("..", import.meta.url));
const USAGE = headerUsage(import.meta.url, 1, 12);
const values = parseCli(
  {
    pack: {
      type: "string",
      default: existsSync(join(root, "packs/demo/molorec.json")) ? join(root, "packs/demo") : join(root, "test/fixtures/tiny-pack"),
    },
    request: { type: "string", default: join(root, "examples/request.json") },
    warm: { type: "string", default: "10" },
    json: { type: "boolean", default: false },
  },
  USAGE,
);
const warm = Math.min(100, Math.max(1, Number(values.warm)));
const packDir = resolve(values.pack);
const CHROMIUM = process.env.MOLOREC_CHROMIUM ?? "/usr/bin/chromium";
const timer = setTimeout(() => {
  console.error("storefront-check: over its 10-minute limit");
  process.exit(1);
}, 10 * 60_000);
timer.unref();

const fromStorefront = createRequire(join(root, "apps/storefront/package.json"));
let core, runtimeNode, chromium, buildSite, startServer;
try {
  core = await import(pathToFileURL(fromStorefront.resolve("@molorec/core")).href);
  runtimeNode = await import(pathToFileURL(createRequire(join(root, "apps/worker/package.json")).resolve("@molorec/runtime-node")).href);
  const pw = await import(pathToFileURL(fromStorefront.resolve("playwright-core")).href);
  chromium = pw.chromium ?? pw.default.chromium; // CommonJS: named exports are not always detected
  ({ buildSite } = await import(pathToFileURL(join(root, "apps/storefront/scripts/build.mjs")).href));
  ({ startServer } = await import(pathToFileURL(join(root, "apps/storefront/scripts/server.mjs")).href));
} catch (e) {
  console.error(`storefront-check: cannot load the built packages (${e.message}); run \`pnpm build\` first.`);
  process.exit(2);
}

const manifest = JSON.parse(readFileSync(join(packDir, "molorec.json"), "utf8"));
const request = JSON.parse(readFileSync(values.request, "utf8"));
if (request.domain !== undefined && !(request.domain in manifest.domains)) {
  console.error(`storefront-check: the request's domain "${request.domain}" is not in ${manifest.name}; using the pack's default domain`);
  delete request.domain;
}
const domain = request.domain ?? manifest.defaultDomain ?? Object.keys(manifest.domains)[0];

async function nodeSide() {
  const pack = await runtimeNode.loadPackFromDir(packDir);
  const rec = await core.createRecommender({ backend: runtimeNode.nodeBackend({ executionProvider: "cpu", log: () => {} }), pack });
  const answer = await rec.recommend(request);
  const times = [];
  for (let i = 0; i < warm; i++) {
    const t = performance.now();
    await rec.recommend(request);
    times.push(performance.now() - t);
  }
  await rec.close();
  return { answer, warmMs: median(times) };
}

async function browserSide(work) {
  const titles = [...new Set([...request.history, ...request.candidates])];
  const cataloguePath = join(work, "catalogue.json");
  writeFileSync(cataloguePath, JSON.stringify({ name: "pack check", domain, items: titles.map((title, i) => ({ id: `i${i}`, title })) }));
  await buildSite({ packDir, cataloguePath, outDir: join(work, "site"), fromSource: true, log: () => {} });
  const server = await startServer({ root: join(work, "site"), packDir, port: 0 });
  const ctx = await chromium.launchPersistentContext(join(work, "profile"), {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--headless=new",
      "--no-sandbox",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  try {
    const page = ctx.pages()[0] ?? (await ctx.newPage());
    const errors = [];
    page.on("pageerror", (e) => errors.push(e.message));
    await page.goto(`${server.url}?device=wasm`);
    await page.waitForFunction(() => document.body.dataset.state !== "loading", null, { timeout: 120_000 });
    const state = await page.evaluate(() => document.body.dataset.state);
    if (state !== "ready")
      throw new Error(
        `the storefront did not start (state ${state}): ${errors.join("; ") || (await page.textContent("body"))?.slice(0, 400)}`,
      );
    await page.evaluate(() => localStorage.clear());
    return await page.evaluate(
      async ({ req, n }) => {
        const h = window.molorec;
        const answer = await h.recommend(req);
        const times = [];
        for (let i = 0; i < n; i++) {
          const t = performance.now();
          await h.recommend(req);
          times.push(performance.now() - t);
        }
        return { answer, times, device: h.info()?.device, timings: h.timings, bytes: h.stats?.bytesFromNetwork ?? null };
      },
      { req: request, n: warm },
    );
  } finally {
    await ctx.close();
    await server.close();
  }
}

const work = mkdtempSync(join(tmpdir(), "molorec-storefront-check-"));
try {
  const node = await nodeSide();
  const page = await browserSide(work);
  const web = { ...page, warmMs: median(page.times) };
  const scores = (a) => {
    const s = new Array(a.ranked.length);
    for (const r of a.ranked) s[r.index] = r.score;
    return s;
  };
  const sn = scores(node.answer);
  const sw = scores(web.answer);
  const maxDiff = Math.max(...sn.map((x, i) => Math.abs(x - sw[i])));
  const sameRanking = JSON.stringify(node.answer.ranked.map((r) => r.index)) === JSON.stringify(web.answer.ranked.map((r) => r.index));
  const result = {
    pack: `${manifest.name} (${packDir})`,
    domain,
    machine: `${cpus()[0]?.model ?? "unknown CPU"}, ${cpus().length} cores, ${platform()} ${release()}, Node ${process.version}, Chromium ${CHROMIUM}`,
    sameRanking,
    maxAbsScoreDiff: maxDiff,
    lambda: { node: node.answer.mixture.lambda, browser: web.answer.mixture.lambda },
    top3: web.answer.ranked.slice(0, 3).map((r) => r.title),
    browser: {
      device: web.device,
      packMs: web.timings?.packMs,
      readyMs: web.timings?.readyMs,
      bytesFromNetwork: web.bytes,
      warmMs: web.warmMs,
    },
    node: { warmMs: node.warmMs },
  };
  if (values.json) console.log(JSON.stringify(result, null, 2));
  else {
    console.log(`pack ${result.pack}, domain ${domain}\nmachine: ${result.machine}`);
    console.log(
      `same ranking in the storefront (${web.device}) and Node: ${sameRanking ? "yes" : "NO"}; max |Δscore| ${maxDiff.toExponential(1)}; λ ${result.lambda.browser}`,
    );
    console.log(`top 3: ${result.top3.join(" | ")}`);
    console.log(
      `storefront: pack ${(web.bytes / 1e6).toFixed(2)} MB downloaded in ${web.timings?.packMs?.toFixed(0)} ms, ready in ${web.timings?.readyMs?.toFixed(0)} ms, warm ${web.warmMs.toFixed(1)} ms (median of ${warm})`,
    );
    console.log(`node:       warm ${node.warmMs.toFixed(1)} ms (median of ${warm})`);
  }
  if (!sameRanking || maxDiff > 1e-3) process.exitCode = 1;
} finally {
  rmSync(work, { recursive: true, force: true });
}
