import { fileURLToPath } from "node:url";
import { loadPackFromDir, nodeBackend } from "@molorec/runtime-node";
import fanoutGolden from "../fixtures/tiny-pack-fanout.golden.json" with { type: "json" };
import { conformanceSuite } from "../conformance/suite.js";

// The same weights twice: the contract's minimal graph, and the variants trained packs ship
// (grouped KV cache, scoring head). Both must reproduce the one golden file. Then LoRAs on the top
// layer only, exported with fan-out (model.sharedLayers 1), against their own golden file.
for (const [variant, dir, golden] of [
  ["", "tiny-pack", undefined],
  [", grouped KV cache + scoring head", "tiny-pack-grouped", undefined],
  [", fan-out (shared lower layer)", "tiny-pack-fanout", fanoutGolden],
] as const) {
  const fixture = fileURLToPath(new URL(`../fixtures/${dir}`, import.meta.url));
  conformanceSuite({
    name: `node (onnxruntime-node, CPU)${variant}`,
    backend: () => nodeBackend({ executionProvider: "cpu", log: () => {} }),
    loadFixturePack: () => loadPackFromDir(fixture),
    golden,
  });
}
