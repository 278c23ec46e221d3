// onnxruntime-web's WASM backend in Node, for the edge-pack rows: what a browser or a Worker
// runs (single-threaded, no SIMD threads), minus the browser. Loaded from packages/runtime-web's
// dependencies; absent, the rows say so.
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";

export function wasmBackend(repo) {
  const pkg = join(repo, "packages/runtime-web/package.json");
  if (!existsSync(pkg)) return { error: "packages/runtime-web is not here" };
  let ort;
  try {
    ort = createRequire(pkg)("onnxruntime-web");
  } catch (e) {
    return { error: `onnxruntime-web cannot be loaded: ${e.message}` };
  }
  ort.env.wasm.numThreads = 1;
  ort.env.logLevel = "error";
  const version = ort.env.versions?.web ?? ort.env.versions?.common ?? "?";
  return {
    name: `onnxruntime-web ${version} (wasm)`,
    async createSession(bytes) {
      const session = await ort.InferenceSession.create(bytes, { executionProviders: ["wasm"], graphOptimizationLevel: "all" });
      return {
        inputNames: session.inputNames,
        outputNames: session.outputNames,
        async run(feeds, outputNames) {
          const t = {};
          for (const [name, v] of Object.entries(feeds)) t[name] = new ort.Tensor(v.type, v.data, v.dims);
          return outputNames ? session.run(t, [...outputNames]) : session.run(t);
        },
        async release() {
          await session.release().catch(() => {});
        },
      };
    },
  };
}
