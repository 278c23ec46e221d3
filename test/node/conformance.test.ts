import { fileURLToPath } from "node:url";
import { loadPackFromDir, nodeBackend } from "@molorec/runtime-node";
import { conformanceSuite } from "../conformance/suite.js";

const fixture = fileURLToPath(new URL("../fixtures/tiny-pack", import.meta.url));

conformanceSuite({
  name: "node (onnxruntime-node, CPU)",
  backend: () => nodeBackend({ executionProvider: "cpu", log: () => {} }),
  loadFixturePack: () => loadPackFromDir(fixture),
});
