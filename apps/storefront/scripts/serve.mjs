#!/usr/bin/env node
// @ts-check
// Serves the built storefront (see build.mjs):  node scripts/serve.mjs [--port N] [--pack DIR]
import { existsSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { resolveConfig } from "./config.mjs";
import { startServer } from "./server.mjs";

/** @param {import("./config.mjs").StorefrontConfig} cfg */
export async function serve(cfg) {
  if (!existsSync(join(cfg.outDir, "index.html")))
    throw new Error(`${cfg.outDir} has no built site: run \`pnpm --filter @molorec/storefront build\` first (or \`start\`)`);
  const server = await startServer({ root: cfg.outDir, packDir: cfg.packDir, host: cfg.host, port: cfg.port });
  console.log(`storefront: serving ${server.url} (pack ${cfg.packDir}) — Ctrl-C stops`);
  const stop = () => void server.close().then(() => process.exit(0));
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
  return server;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  serve(resolveConfig(process.argv.slice(2))).catch((e) => {
    console.error(`storefront: ${e.message}`);
    process.exitCode = 1;
  });
}
