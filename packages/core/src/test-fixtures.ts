// Test helpers shared by core's tests (not exported by the package): the fixture packs' files in
// memory, and onnxruntime-node's CPU session as a backend (a dev dependency; core imports no runtime).
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import * as ort from "onnxruntime-node";
import type { InferenceBackend } from "./backend.js";
import type { TensorLike } from "./tensor.js";

/** Every file of `test/fixtures/<dir>`, by its path inside the pack. */
export function fixtureFiles(dir: "tiny-pack" | "tiny-pack-grouped" | "tiny-pack-fanout"): Record<string, Uint8Array> {
  const root = fileURLToPath(new URL(`../../../test/fixtures/${dir}/`, import.meta.url));
  const walk = (d: string): string[] =>
    readdirSync(d).flatMap((n) => (statSync(join(d, n)).isDirectory() ? walk(join(d, n)) : [join(d, n)]));
  return Object.fromEntries(walk(root).map((f) => [relative(root, f).split("\\").join("/"), new Uint8Array(readFileSync(f))]));
}

/** onnxruntime-node on one CPU thread. */
export const cpuBackend: InferenceBackend = {
  name: "ort-cpu (test)",
  async createSession(model) {
    const opts = { executionProviders: ["cpu"], intraOpNumThreads: 1 };
    const s = await (model instanceof Uint8Array
      ? ort.InferenceSession.create(model, opts)
      : ort.InferenceSession.create(model.path, opts));
    return {
      inputNames: s.inputNames,
      outputNames: s.outputNames,
      async run(feeds, names) {
        const f: Record<string, ort.Tensor> = {};
        for (const [k, t] of Object.entries(feeds)) f[k] = new ort.Tensor(t.type, t.data, t.dims);
        return (await s.run(f, names as string[])) as unknown as Record<string, TensorLike>;
      },
      release: () => s.release(),
    };
  },
};
