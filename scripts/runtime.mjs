// What scripts/calibrate.mjs and scripts/eval-rows.mjs share: the built core and Node runtime of
// this checkout (the recipe runs them as plain `node` processes, outside any package), and their
// JSONL input.
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export const REPO = join(dirname(fileURLToPath(import.meta.url)), "..");
export const core = await import(join(REPO, "packages/core/dist/index.js"));
export const { nodeBackend, loadPackFromDir } = await import(join(REPO, "packages/runtime-node/dist/index.js"));

/** The parsed lines of a JSONL file (blank lines skipped). */
export function readJsonl(file) {
  return readFileSync(file, "utf8")
    .split("\n")
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l));
}

/** Throws naming the first of `names` that `values` (parseArgs output) lacks. */
export function requireOptions(values, names) {
  for (const k of names) if (!values[k]) throw new Error(`--${k} is required`);
}
