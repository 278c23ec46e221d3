#!/usr/bin/env node
// @ts-check
// Measures what a page that embeds @molorec/runtime-web ships: one esbuild bundle (minified,
// browser, ORT's extern-wasm build) of `createRecommender` + `webBackend` + `loadPackFromUrl`,
// plus the ONNX Runtime files the page serves itself. `node scripts/measure-bundle.mjs [--wasm]`
import { build } from "esbuild";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { gzipSync } from "node:zlib";

const PKG = join(dirname(fileURLToPath(import.meta.url)), "..");
const ENTRY = `
import { createRecommender } from "@molorec/core";
import { loadPackFromUrl, webBackend } from "@molorec/runtime-web";
const { pack } = await loadPackFromUrl("/pack/");
const rec = await createRecommender({ backend: webBackend({ wasmPaths: "/ort/" }), pack });
globalThis.rec = rec;
`;

/**
 * @param {{ wasm?: boolean }} [options] also gzip the ORT wasm (28 MB: a second or two)
 */
export async function measureBundle({ wasm = false } = {}) {
  const out = await build({
    stdin: { contents: ENTRY, resolveDir: PKG, sourcefile: "embed.js", loader: "js" },
    absWorkingDir: PKG,
    bundle: true,
    write: false,
    format: "esm",
    platform: "browser",
    target: "es2022",
    minify: true,
    legalComments: "none",
    conditions: ["@molorec/source", "onnxruntime-web-use-extern-wasm"],
    metafile: true,
    logLevel: "error",
    // @molorec/runtime-web resolves to this package (self-reference through its exports).
    alias: { "@molorec/runtime-web": join(PKG, "src/index.ts") },
  });
  const js = out.outputFiles[0].contents;
  const byPackage = /** @type {Record<string, number>} */ ({});
  for (const [path, v] of Object.entries(out.metafile.outputs[Object.keys(out.metafile.outputs)[0] ?? ""]?.inputs ?? {})) {
    const m = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(path.replace(/^.*node_modules\/\.pnpm\/[^/]+\//, ""));
    const key = m?.[1] ?? (/core\/src\//.test(path) ? "@molorec/core" : path.startsWith("src/") ? "@molorec/runtime-web" : "other");
    byPackage[key] = (byPackage[key] ?? 0) + v.bytesInOutput;
  }
  const ortDist = dirname(createRequire(join(PKG, "package.json")).resolve("onnxruntime-web/ort-wasm-simd-threaded.jsep.wasm"));
  const wasmBytes = readFileSync(join(ortDist, "ort-wasm-simd-threaded.jsep.wasm"));
  return {
    js: { bytes: js.length, gzip: gzipSync(js).length, byPackage },
    ortFiles: {
      "ort-wasm-simd-threaded.jsep.wasm": { bytes: wasmBytes.length, ...(wasm ? { gzip: gzipSync(wasmBytes, { level: 6 }).length } : {}) },
      "ort-wasm-simd-threaded.jsep.mjs": { bytes: readFileSync(join(ortDist, "ort-wasm-simd-threaded.jsep.mjs")).length },
    },
  };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const r = await measureBundle({ wasm: process.argv.includes("--wasm") });
  const kib = (/** @type {number} */ n) => `${(n / 1024).toFixed(1)} KiB`;
  console.log(`bundle (createRecommender + webBackend + loadPackFromUrl, minified): ${kib(r.js.bytes)}, ${kib(r.js.gzip)} gzip`);
  for (const [k, v] of Object.entries(r.js.byPackage).sort((a, b) => b[1] - a[1])) console.log(`  ${k.padEnd(26)} ${kib(v)}`);
  for (const [k, v] of Object.entries(r.ortFiles))
    console.log(`served beside it: ${k} ${kib(v.bytes)}${"gzip" in v ? `, ${kib(Number(v.gzip))} gzip` : ""}`);
}
