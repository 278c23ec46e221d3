#!/usr/bin/env node
// @ts-check
// Builds the storefront into a static folder: the page (HTML with the product grid rendered
// from the catalogue), the app bundle (esbuild), and ONNX Runtime's wasm files, served by the
// app itself. The pack is not copied: the server maps /pack/ to the pack folder.
//   node scripts/build.mjs [--pack DIR] [--catalogue FILE] [--out DIR]
import { build } from "esbuild";
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, relative, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { gzipSync } from "node:zlib";
import { APP_DIR, resolveConfig } from "./config.mjs";

/** The ORT build the page loads: JSEP = WebGPU + WASM in one binary. */
const ORT_MJS = "ort-wasm-simd-threaded.jsep.mjs";
const ORT_WASM = "ort-wasm-simd-threaded.jsep.wasm";

/**
 * @typedef {{ id: string, title: string, genre?: string, year?: number, price?: number }} CatalogueItem
 * @typedef {{ name?: string, domain: string, currency?: string, items: CatalogueItem[] }} Catalogue
 */

/**
 * @param {string} path
 * @param {string[]} packDomains
 * @returns {Catalogue}
 */
export function readCatalogue(path, packDomains) {
  /** @type {any} */
  let doc;
  try {
    doc = JSON.parse(readFileSync(path, "utf8"));
  } catch (e) {
    throw new Error(`catalogue ${path}: ${/** @type {Error} */ (e).message}`);
  }
  const fail = (/** @type {string} */ what) => {
    throw new Error(`catalogue ${path}: ${what}`);
  };
  if (typeof doc !== "object" || doc === null || !Array.isArray(doc.items)) fail('must be an object with an "items" array');
  // A pack without domains (a base LLM such as SmolLM2) ranks any catalogue: its domain is a label.
  if (typeof doc.domain !== "string" || (packDomains.length > 0 && !packDomains.includes(doc.domain))) {
    fail(`"domain" is ${JSON.stringify(doc.domain)}, but the pack's domains are: ${packDomains.join(", ") || "none"}`);
  }
  if (doc.items.length < 2) fail("needs at least 2 items");
  const ids = new Set();
  doc.items.forEach((/** @type {any} */ it, /** @type {number} */ i) => {
    if (typeof it?.id !== "string" || it.id === "") fail(`items[${i}].id must be a non-empty string`);
    if (ids.has(it.id)) fail(`items[${i}].id "${it.id}" is not unique`);
    ids.add(it.id);
    if (typeof it.title !== "string" || it.title.trim() === "" || it.title.length > 200)
      fail(`items[${i}].title must be a non-empty string of at most 200 characters`);
  });
  return doc;
}

/** The catalogue `auto` picks for a pack without domains: well-known films, which a general LLM knows. */
export const DOMAINLESS_CATALOGUE = "movies-ml100k.json";

/**
 * The catalogue `auto` picks: catalogue/<the pack's default domain>.json, or DOMAINLESS_CATALOGUE.
 * @param {any} manifest  the pack's molorec.json
 */
export function autoCataloguePath(manifest) {
  const domain = manifest.defaultDomain ?? Object.keys(manifest.domains ?? {})[0];
  return join(APP_DIR, "catalogue", domain ? `${domain}.json` : DOMAINLESS_CATALOGUE);
}

/**
 * What the page asks the pack for: its default domain and the `calibrated` mixture of its LoRAs,
 * or, for a pack without adapters (a plain LLM such as SmolLM2), no domain and the base model.
 * @param {any} manifest  the pack's molorec.json
 * @param {string} catalogueDomain
 * @returns {{ domain: string | null, mixture: "calibrated" | "base" }}
 */
export function requestDefaults(manifest, catalogueDomain) {
  const domains = Object.keys(manifest.domains ?? {});
  const adapters = Object.keys(manifest.adapters ?? {});
  return { domain: domains.length > 0 ? catalogueDomain : null, mixture: adapters.length > 0 ? "calibrated" : "base" };
}

/** @param {string} s */
function escapeHtml(s) {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** JSON safe inside a <script> element. @param {unknown} v */
function scriptJson(v) {
  return JSON.stringify(v).replace(/</g, "\\u003c");
}

/** @param {string} s */
function hue(s) {
  let h = 0;
  for (const c of s) h = (h * 31 + c.charCodeAt(0)) % 360;
  return h;
}

/**
 * @param {CatalogueItem} item
 * @param {string} currency
 */
function productCard(item, currency) {
  // "Godfather, The (1972)" → "G", "Apollo 13 (1995)" → "A1": no year, article or punctuation.
  const initials = item.title
    .replace(/\s*\([^)]*\)/g, "")
    .replace(/, (The|A|An|Il|La|Le|Les|L')$/, "")
    .replace(/^(The|A|An) /, "")
    .split(/[\s:,.-]+/)
    .filter((w) => /^[\p{L}\p{N}]/u.test(w))
    .slice(0, 2)
    .map((w) => w[0])
    .join("");
  const meta = [item.genre, item.year].filter((x) => x !== undefined).join(" · ");
  const price = typeof item.price === "number" ? new Intl.NumberFormat("en", { style: "currency", currency }).format(item.price) : "";
  return `<li><button type="button" class="product" data-id="${escapeHtml(item.id)}">
  <span class="poster" style="--hue:${hue(item.id + item.title)}" aria-hidden="true">${escapeHtml(initials)}</span>
  <span class="product-title">${escapeHtml(item.title)}</span>
  <span class="product-meta">${escapeHtml(meta)}</span>
  <span class="price">${escapeHtml(price)}</span>
</button></li>`;
}

/**
 * Builds the site.
 * @param {{ packDir: string, cataloguePath: string | null, outDir: string, fromSource?: boolean, log?: (line: string) => void }} options
 *   fromSource: bundle the workspace packages from src/ (tests) instead of their dist/.
 */
export async function buildSite({ packDir, cataloguePath, outDir, fromSource = false, log = console.log }) {
  const t0 = performance.now();
  const manifestPath = join(packDir, "molorec.json");
  if (!existsSync(manifestPath)) throw new Error(`${packDir} has no molorec.json: pass --pack with a molorec pack folder`);
  const manifest = JSON.parse(readFileSync(manifestPath, "utf8"));
  const domains = Object.keys(manifest.domains ?? {});
  const domain = manifest.defaultDomain ?? domains[0];
  const cataloguePathResolved = cataloguePath ?? autoCataloguePath(manifest);
  if (!existsSync(cataloguePathResolved)) {
    throw new Error(`no catalogue for the pack's domain "${domain}" at ${cataloguePathResolved}: pass --catalogue FILE`);
  }
  const catalogue = readCatalogue(cataloguePathResolved, domains);

  const require = createRequire(join(APP_DIR, "package.json"));
  const ortDist = dirname(require.resolve(`onnxruntime-web/${ORT_WASM}`));
  const ortVersion = JSON.parse(readFileSync(join(ortDist, "..", "package.json"), "utf8")).version;

  rmSync(outDir, { recursive: true, force: true });
  mkdirSync(join(outDir, "ort", ortVersion), { recursive: true });
  for (const f of [ORT_MJS, ORT_WASM]) copyFileSync(join(ortDist, f), join(outDir, "ort", ortVersion, f));

  const result = await build({
    entryPoints: [join(APP_DIR, "src/page/main.ts")],
    outfile: join(outDir, "app.js"),
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    minify: true,
    sourcemap: true,
    legalComments: "none",
    // ORT's extern-wasm build loads ort-wasm-*.mjs/.wasm from env.wasm.wasmPaths (our /ort/).
    conditions: [...(fromSource ? ["@molorec/source"] : []), "onnxruntime-web-use-extern-wasm"],
    metafile: true,
    logLevel: "warning",
    absWorkingDir: APP_DIR,
  });

  const config = {
    packUrl: "pack/",
    wasmPaths: `ort/${ortVersion}/`,
    packName: manifest.name,
    ...requestDefaults(manifest, catalogue.domain),
    ortVersion,
  };
  const template = readFileSync(join(APP_DIR, "static/index.html"), "utf8");
  const html = template
    .replaceAll("{{SHOP}}", escapeHtml(catalogue.name ?? "Storefront"))
    .replace("{{GRID}}", catalogue.items.map((it) => productCard(it, catalogue.currency ?? "EUR")).join("\n"))
    .replace("{{CATALOGUE_JSON}}", scriptJson(catalogue))
    .replace("{{CONFIG_JSON}}", scriptJson(config));
  writeFileSync(join(outDir, "index.html"), html);
  copyFileSync(join(APP_DIR, "static/styles.css"), join(outDir, "styles.css"));

  const app = readFileSync(join(outDir, "app.js"));
  const wasm = readFileSync(join(outDir, "ort", ortVersion, ORT_WASM));
  const info = {
    pack: { name: manifest.name, dir: packDir },
    catalogue: { file: cataloguePathResolved, domain: catalogue.domain, items: catalogue.items.length },
    request: requestDefaults(manifest, catalogue.domain),
    ortVersion,
    bytes: {
      appJs: app.length,
      appJsGzip: gzipSync(app).length,
      ortWasm: wasm.length,
      ortWasmGzip: gzipSync(wasm, { level: 6 }).length,
      ortMjs: readFileSync(join(outDir, "ort", ortVersion, ORT_MJS)).length,
    },
    inputs: Object.fromEntries(
      Object.entries(result.metafile.outputs[relative(APP_DIR, join(outDir, "app.js")).split("\\").join("/")]?.inputs ?? {})
        .map(([k, v]) => [k.replace(/^.*node_modules\/\.pnpm\/[^/]+\/node_modules\//, ""), v.bytesInOutput])
        .sort((a, b) => Number(b[1]) - Number(a[1]))
        .slice(0, 12),
    ),
    buildMs: 0,
  };
  info.buildMs = Math.round(performance.now() - t0);
  writeFileSync(join(outDir, "build-info.json"), JSON.stringify(info, null, 2));
  const kb = (/** @type {number} */ n) => `${(n / 1024).toFixed(0)} KiB`;
  log(
    `storefront: built ${relative(process.cwd(), outDir) || "."} in ${info.buildMs} ms — ${catalogue.items.length} items (${catalogue.domain}), pack ${manifest.name}; ` +
      `app.js ${kb(info.bytes.appJs)} (${kb(info.bytes.appJsGzip)} gzip), ORT wasm ${kb(info.bytes.ortWasm)} (${kb(info.bytes.ortWasmGzip)} gzip)`,
  );
  return info;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const cfg = resolveConfig(process.argv.slice(2));
  buildSite({ packDir: cfg.packDir, cataloguePath: cfg.cataloguePath, outDir: resolve(cfg.outDir) }).catch((e) => {
    console.error(`storefront build: ${e.message}`);
    process.exitCode = 1;
  });
}
