#!/usr/bin/env node
// Which quantized ops onnxruntime-web's WebGPU backend runs correctly: each one-op graph of
// bench/webgpu_kernels.py (MatMulNBits 4-/8-bit, Gather + DequantizeLinear, plain-op dequantization)
// on WASM and on WebGPU in Debian's Chromium (headless; SwiftShader where there is no GPU), with the
// same feeds, and whether @molorec/runtime-web's webGpuBlockers() flags the graph. Exits 1 when its
// verdict and the measurement disagree — re-run after upgrading onnxruntime-web.
//
//   pnpm build && node bench/webgpu-kernels.mjs [--json]
//   (runs .venv/bin/python bench/webgpu_kernels.py first when bench/.cache/webgpu-kernels is missing)
import { execFileSync } from "node:child_process";
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { headerUsage, parseCli } from "./lib/util.mjs";

const root = fileURLToPath(new URL("..", import.meta.url));
const values = parseCli({ json: { type: "boolean", default: false } }, headerUsage(import.meta.url, 1, 9));
const graphs = join(root, "bench/.cache/webgpu-kernels");
if (!existsSync(join(graphs, "cases.json"))) {
  execFileSync(join(root, ".venv/bin/python"), [join(root, "bench/webgpu_kernels.py"), "--out", graphs], { stdio: "inherit" });
}
const cases = JSON.parse(readFileSync(join(graphs, "cases.json"), "utf8"));
const timer = setTimeout(() => {
  console.error("webgpu-kernels: over its 10-minute limit");
  process.exit(1);
}, 10 * 60_000);
timer.unref();

const fromStorefront = createRequire(join(root, "apps/storefront/package.json"));
const pw = await import(pathToFileURL(fromStorefront.resolve("playwright-core")).href);
const chromium = pw.chromium ?? pw.default.chromium;
const { startServer } = await import(pathToFileURL(join(root, "apps/storefront/scripts/server.mjs")).href);
const { launchChromium } = await import(pathToFileURL(join(root, "apps/storefront/scripts/chromium.mjs")).href);
let runtimeWeb;
try {
  runtimeWeb = await import(pathToFileURL(fromStorefront.resolve("@molorec/runtime-web")).href);
} catch (e) {
  console.error(`webgpu-kernels: cannot load @molorec/runtime-web (${e.message}); run \`pnpm build\` first.`);
  process.exit(2);
}
// The storefront's onnxruntime-web build: the JS API of the extern-wasm entry + the JSEP binary.
const ortDist = dirname(fromStorefront.resolve("onnxruntime-web/ort-wasm-simd-threaded.jsep.wasm"));

const PAGE = `<!doctype html><meta charset="utf-8"><script type="module">
import * as ort from "./ort.min.mjs";
ort.env.wasm.wasmPaths = new URL("./", location.href).href;
ort.env.logLevel = "error";
const typed = { float32: Float32Array, int64: BigInt64Array };
window.runCase = async (file, feeds) => {
  const out = {};
  for (const ep of ["wasm", "webgpu"]) {
    try {
      const session = await ort.InferenceSession.create("pack/" + file, { executionProviders: [ep], graphOptimizationLevel: "all" });
      const f = {};
      for (const [name, v] of Object.entries(feeds)) {
        const data = v.type === "int64" ? BigInt64Array.from(v.data, (x) => BigInt(x)) : typed[v.type].from(v.data);
        f[name] = new ort.Tensor(v.type, data, v.dims);
      }
      const r = await session.run(f);
      out[ep] = { y: Array.from(r.y.data), dims: r.y.dims };
      await session.release();
    } catch (e) {
      out[ep] = { error: String(e?.message ?? e) };
    }
  }
  return out;
};
window.ready = true;
</script>`;

/** Deterministic feed values: floats in [-1, 1), ids in [0, max). */
function feedValues(spec, seed) {
  let a = seed;
  const next = () => (a = (a * 1103515245 + 12345) % 2147483648) / 2147483648;
  const n = spec.dims.reduce((x, y) => x * y, 1);
  return Array.from({ length: n }, () => (spec.type === "int64" ? Math.floor(next() * (spec.max ?? 2)) : next() * 2 - 1));
}

const site = mkdtempSync(join(tmpdir(), "molorec-webgpu-kernels-"));
const rows = [];
let ctx;
let server;
try {
  for (const f of ["ort.min.mjs", "ort-wasm-simd-threaded.jsep.mjs", "ort-wasm-simd-threaded.jsep.wasm"])
    copyFileSync(join(ortDist, f), join(site, f));
  writeFileSync(join(site, "index.html"), PAGE);
  server = await startServer({ root: site, packDir: graphs, port: 0 });
  ctx = await launchChromium(chromium, join(site, "profile"));
  const page = ctx.pages()[0] ?? (await ctx.newPage());
  await page.goto(server.url);
  await page.waitForFunction(() => window.ready === true);
  const adapter = await page.evaluate(async () => {
    const a = await navigator.gpu?.requestAdapter();
    return a ? `${a.info?.vendor ?? "?"} ${a.info?.architecture ?? ""}`.trim() : null;
  });
  if (!adapter) throw new Error("no WebGPU adapter in this Chromium (launched with --enable-unsafe-webgpu)");
  for (const [name, c] of Object.entries(cases)) {
    const feeds = Object.fromEntries(Object.entries(c.feeds).map(([k, spec], i) => [k, { ...spec, data: feedValues(spec, 7 + i) }]));
    const out = await page.evaluate(([file, f]) => window.runCase(file, f), [`${name}.onnx`, feeds]);
    const flagged = runtimeWeb.webGpuBlockers(new Uint8Array(readFileSync(join(graphs, `${name}.onnx`))));
    let measured;
    let maxDiff = null;
    if (out.wasm.error) measured = `WASM failed: ${out.wasm.error}`;
    else if (out.webgpu.error) measured = "no session";
    else {
      const a = out.wasm.y;
      const b = out.webgpu.y;
      const scale = Math.max(1, ...a.map(Math.abs));
      maxDiff = Math.max(...a.map((x, i) => Math.abs(x - b[i])));
      measured = maxDiff <= 1e-4 * scale ? "correct" : "wrong values";
    }
    const broken = measured !== "correct";
    rows.push({
      case: name,
      what: c.what,
      measured,
      maxAbsDiff: maxDiff,
      webgpuError: out.webgpu.error ?? null,
      flagged: flagged.map((b) => `${b.op}${b.detail ? ` (${b.detail})` : ""}`),
      agrees: broken === flagged.length > 0 && !out.wasm.error,
    });
  }
  const ok = rows.every((r) => r.agrees);
  if (values.json) console.log(JSON.stringify({ adapter, ortDist, cases: rows }, null, 2));
  else {
    console.log(`onnxruntime-web (${ortDist}) WebGPU on ${adapter} vs WASM, one op at a time:`);
    for (const r of rows) {
      console.log(
        `  ${r.agrees ? "ok " : "!! "} ${r.case}: WebGPU ${r.measured}${r.maxAbsDiff !== null ? ` (max |Δ| ${r.maxAbsDiff.toExponential(2)})` : ""}; webGpuBlockers: ${r.flagged.join(", ") || "none"}`,
      );
      if (r.webgpuError) console.log(`      ${r.webgpuError.split("\n")[0].slice(0, 300)}`);
    }
    console.log(
      ok
        ? "webGpuBlockers() matches what WebGPU does here."
        : "webGpuBlockers() is out of date: update packages/runtime-web/src/webgpu-compat.ts",
    );
  }
  if (!ok) process.exitCode = 1;
} finally {
  await ctx?.close();
  await server?.close();
  rmSync(site, { recursive: true, force: true });
}
