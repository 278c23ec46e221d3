import { fileURLToPath } from "node:url";
import { loadPackFromDir, nodeBackend } from "@molorec/runtime-node";
import { conformanceSuite } from "../conformance/suite.js";

// The same weights twice: the contract's minimal graph, and the variants trained packs ship
// (grouped KV cache, scoring head). Both must reproduce the one golden file.
for (const [variant, dir] of [
  ["", "tiny-pack"],
  [", grouped KV cache + scoring head", "tiny-pack-grouped"],
] as const) {
  const fixture = fileURLToPath(new URL(`../fixtures/${dir}`, import.meta.url));
  conformanceSuite({
    name: `node (onnxruntime-node, CPU)${variant}`,
    backend: () => nodeBackend({ executionProvider: "cpu", log: () => {} }),
    loadFixturePack: () => loadPackFromDir(fixture),
  });
}
