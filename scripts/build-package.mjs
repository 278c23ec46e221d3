#!/usr/bin/env node
// Builds one workspace package: esbuild bundles src/ to ESM in dist/, tsc emits declarations.
// Run from the package directory (turbo does):
// `node ../../scripts/build-package.mjs [--external name ...] [--entry src/other.ts ...]`.
import { build } from "esbuild";
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, rmSync } from "node:fs";
import { createRequire } from "node:module";

const args = process.argv.slice(2);
const external = ["node:*"];
const entryPoints = ["src/index.ts"];
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--external") external.push(args[++i]);
  else if (args[i] === "--entry") entryPoints.push(args[++i]);
}

const pkg = JSON.parse(readFileSync("package.json", "utf8"));
// Workspace and third-party dependencies stay imports; each package bundles only its own src/.
for (const dep of Object.keys(pkg.dependencies ?? {})) external.push(dep, `${dep}/*`);

rmSync("dist", { recursive: true, force: true });
await build({
  entryPoints,
  outdir: "dist",
  bundle: true,
  splitting: true,
  format: "esm",
  platform: "neutral",
  target: "es2022",
  sourcemap: true,
  external,
  logLevel: "warning",
});
const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");
execFileSync(
  process.execPath,
  [tsc, "-p", existsSync("tsconfig.build.json") ? "tsconfig.build.json" : "tsconfig.json", "--emitDeclarationOnly", "--outDir", "dist"],
  { stdio: "inherit" },
);
