import { describe, expect, it } from "vitest";
import type { InferenceBackend, InferenceSession } from "./backend.js";
import { checkGraphNames } from "./graph-check.js";
import { loadPack, memorySource, type ModelPack } from "./pack.js";
import { createRecommender } from "./recommender.js";
import { cpuBackend as backend, fixtureFiles } from "./test-fixtures.js";

// A pack is checked against its graph when a recommender opens it: a manifest that disagrees with
// model.onnx is a start-up error, never a service that answers 500 (or wrong rankings) later.
const dirs = { concat: "tiny-pack", grouped: "tiny-pack-grouped", fanout: "tiny-pack-fanout" } as const;

async function packWith(dir: keyof typeof dirs, mutate: (m: any) => void = () => {}): Promise<ModelPack> {
  const pack = await loadPack(memorySource(fixtureFiles(dirs[dir]), "fixture"));
  mutate(pack.manifest);
  return pack;
}

async function openError(pack: ModelPack, b: InferenceBackend = backend): Promise<unknown> {
  return createRecommender({ backend: b, pack }).then(
    async (rec) => {
      await rec.close();
      return "opened";
    },
    (e: unknown) => e,
  );
}

describe("createRecommender checks the pack against its graph", () => {
  it.each(["concat", "grouped", "fanout"] as const)("opens the %s fixture", async (dir) => {
    expect(await openError(await packWith(dir))).toBe("opened");
  });

  it.each<[string, keyof typeof dirs, (m: any) => void, RegExp]>([
    ["more layers than the graph", "concat", (m) => (m.model.numLayers = 3), /no input past_key_values\.2\.key/],
    [
      "fewer layers than the graph",
      "concat",
      (m) => (m.model.numLayers = 1),
      /inputs the manifest does not account for: past_key_values\.1\.key/,
    ],
    ["another scale input", "concat", (m) => (m.lora.scaleInput = "scale"), /no input scale/],
    ["a LoRA target the graph lacks", "concat", (m) => (m.lora.targets[0].inputA = "lora.x.A"), /no input lora\.x\.A/],
    [
      "a smaller vocabulary (ranked wrongly before)",
      "concat",
      (m) => (m.model.vocabSize = 10),
      /logits of shape \[1, 1, 512\], expected \[1, 1, 10\]/,
    ],
    ["a larger vocabulary", "grouped", (m) => (m.model.vocabSize = 4096), /expected \[1, 1, 4096\]/],
    ["other KV heads", "concat", (m) => Object.assign(m.model, { numKvHeads: 4, headDim: 8 }), /probe run built from the manifest failed/],
    ["another LoRA width", "concat", (m) => (m.lora.targets[0].inFeatures = 32), /probe run built from the manifest failed/],
    [
      "a grouped cache on a concat graph",
      "concat",
      (m) => (m.model.kvCache = "grouped"),
      /holds 2 positions .* "grouped" KV cache .* holds 1/,
    ],
    [
      "a concat cache on a grouped graph",
      "grouped",
      (m) => (m.model.kvCache = "concat"),
      /holds 1 positions .* "concat" KV cache .* holds 2/,
    ],
    ["fan-out on a graph without it", "grouped", (m) => (m.model.sharedLayers = 1), /no input row_source/],
    ["no fan-out on a fan-out graph", "fanout", (m) => (m.model.sharedLayers = 0), /inputs the manifest does not account for: row_source/],
  ])("refuses %s with MALFORMED_PACK", async (_name, dir, mutate, message) => {
    const e = await openError(await packWith(dir, mutate));
    expect(e).toMatchObject({ name: "MolorecError", code: "MALFORMED_PACK", message: expect.stringMatching(message) });
  });

  it("releases the session it refused", async () => {
    let released = 0;
    const counting: InferenceBackend = {
      name: "counting",
      async createSession(model, options) {
        const s = await backend.createSession(model, options);
        return {
          ...s,
          release: () => {
            released++;
            return s.release();
          },
        };
      },
    };
    await openError(await packWith("concat", (m) => (m.model.vocabSize = 10)), counting);
    expect(released).toBe(1);
  });

  it("refuses a model whose weights are not finite", async () => {
    const nanLogits: InferenceBackend = {
      name: "nan",
      async createSession(model, options) {
        const s = await backend.createSession(model, options);
        return {
          ...s,
          async run(feeds, names) {
            const out = await s.run(feeds, names);
            (out.logits!.data as Float32Array).fill(Number.NaN);
            return out;
          },
        };
      },
    };
    expect(await openError(await packWith("concat"), nanLogits)).toMatchObject({
      code: "MALFORMED_PACK",
      message: expect.stringMatching(/not finite/),
    });
  });
});

describe("checkGraphNames", () => {
  const names = (extraInputs: string[], extraOutputs: string[] = []) =>
    ({
      inputNames: [...base.inputNames, ...extraInputs],
      outputNames: [...base.outputNames, ...extraOutputs],
    }) as unknown as InferenceSession;
  let pack: ModelPack;
  let base: InferenceSession;

  it("refuses inputs nobody feeds, deeper KV outputs and a half scoring head", async () => {
    pack = await packWith("concat");
    base = await backend.createSession(pack.model);
    try {
      expect(() => checkGraphNames(names([]), pack)).not.toThrow();
      expect(() => checkGraphNames(names(["token_type_ids"]), pack)).toThrow(/token_type_ids/);
      expect(() => checkGraphNames(names([], ["present.2.key"]), pack)).toThrow(/returns present\.2\.key, but model\.numLayers is 2/);
      expect(() => checkGraphNames(names(["target_ids"]), pack)).toThrow(/target_ids and output token_logprobs/);
      expect(() => checkGraphNames(names(["target_ids", "num_logits_to_keep"], ["token_logprobs"]), pack)).not.toThrow();
    } finally {
      await base.release();
    }
  });
});
