import { readdirSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { cloudflareTest } from "@cloudflare/vitest-pool-workers";
import { defineConfig } from "vitest/config";

const here = fileURLToPath(new URL(".", import.meta.url));
const repoRoot = join(here, "../..");
const fixture = join(repoRoot, "test/fixtures/tiny-pack");
// The same weights with a grouped KV cache and the scoring head (what trained packs ship).
const groupedFixture = join(repoRoot, "test/fixtures/tiny-pack-grouped");
// LoRAs on the top layer only, exported with fan-out (model.sharedLayers 1), its own golden scores.
const fanoutFixture = join(repoRoot, "test/fixtures/tiny-pack-fanout");

function listFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const full = join(dir, name);
    return statSync(full).isDirectory() ? listFiles(full) : [full];
  });
}
// The fixture pack as data-blob bindings: the "bundled bytes" way of shipping a pack.
const packFiles = listFiles(fixture).map((f) => relative(fixture, f).split("\\").join("/"));
const groupedFiles = listFiles(groupedFixture).map((f) => relative(groupedFixture, f).split("\\").join("/"));
const fanoutFiles = listFiles(fanoutFixture).map((f) => relative(fanoutFixture, f).split("\\").join("/"));
const dataBlobBindings = {
  ...Object.fromEntries(packFiles.map((f, i) => [`PACK_FILE_${i}`, join(fixture, f)])),
  ...Object.fromEntries(groupedFiles.map((f, i) => [`GROUPED_FILE_${i}`, join(groupedFixture, f)])),
  ...Object.fromEntries(fanoutFiles.map((f, i) => [`FANOUT_FILE_${i}`, join(fanoutFixture, f)])),
};

const source = { conditions: ["@molorec/source"] };
const workerdSource = { conditions: ["@molorec/source", "workerd", "worker", "browser", "import", "module", "default"] };

export default defineConfig({
  test: {
    projects: [
      {
        // The conformance suite (test/conformance/suite.ts) and the HTTP layer inside workerd.
        plugins: [
          cloudflareTest({
            miniflare: {
              compatibilityDate: "2026-04-20",
              compatibilityFlags: ["nodejs_compat"],
              dataBlobBindings,
              bindings: { PACK_FILES: packFiles, GROUPED_FILES: groupedFiles, FANOUT_FILES: fanoutFiles },
              r2Buckets: ["PACK_BUCKET"],
              // As wrangler.jsonc: workerd compiles .wasm imports into a WebAssembly.Module.
              modulesRules: [{ type: "CompiledWasm", include: ["**/*.wasm"] }],
            },
          }),
        ],
        resolve: workerdSource,
        ssr: { resolve: workerdSource },
        test: {
          name: "workerd",
          // The repo root, so that files outside apps/worker (onnxruntime-web's .wasm in the pnpm
          // store, test/conformance) get root-relative ids the pool can load.
          root: repoRoot,
          include: ["apps/worker/test/**/*.workerd.test.ts"],
          testTimeout: 60_000,
        },
      },
      {
        // wrangler dev driven over loopback, and the bundle-size budget.
        resolve: source,
        ssr: { resolve: source },
        test: { name: "node", include: ["test/**/*.node.test.ts"], testTimeout: 120_000, hookTimeout: 120_000 },
      },
    ],
  },
});
