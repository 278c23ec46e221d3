#!/usr/bin/env node
// @ts-check
// One command: builds the workspace packages the page needs (turbo, cached), builds the site,
// and serves it.  pnpm --filter @molorec/storefront start [--pack DIR] [--catalogue FILE] [--port N]
import { execFileSync } from "node:child_process";
import { buildSite } from "./build.mjs";
import { APP_DIR, resolveConfig } from "./config.mjs";
import { serve } from "./serve.mjs";

const cfg = resolveConfig(process.argv.slice(2));
execFileSync("pnpm", ["exec", "turbo", "run", "build", "--filter=@molorec/storefront^...", "--output-logs=errors-only"], {
  cwd: APP_DIR,
  stdio: "inherit",
});
try {
  await buildSite({ packDir: cfg.packDir, cataloguePath: cfg.cataloguePath, outDir: cfg.outDir });
  await serve(cfg);
} catch (e) {
  console.error(`storefront: ${/** @type {Error} */ (e).message}`);
  process.exitCode = 1;
}
