import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { MolorecError } from "./errors.js";
import { parseManifest } from "./manifest.js";

const fixture = JSON.parse(readFileSync(new URL("../../../test/fixtures/tiny-pack/molorec.json", import.meta.url), "utf8"));
const clone = () => structuredClone(fixture);

function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (e instanceof MolorecError) return `${e.code}: ${e.message}`;
    throw e;
  }
  return "no error";
}

describe("parseManifest", () => {
  it("accepts the fixture pack's manifest", () => {
    const m = parseManifest(fixture);
    expect(m.model.numLayers).toBe(2);
    expect(m.domains.movies!.adapter).toBe("domain:movies");
    expect(m.lora.targets.length).toBeGreaterThan(0);
    expect(m.model.sharedLayers).toBe(0); // no key: no fan-out
  });

  it("reads model.sharedLayers of a fan-out pack", () => {
    const url = new URL("../../../test/fixtures/tiny-pack-fanout/molorec.json", import.meta.url);
    expect(parseManifest(JSON.parse(readFileSync(url, "utf8"))).model.sharedLayers).toBe(1);
  });

  it.each([
    ["not a pack", (m: any) => (m.format = "gguf"), /MALFORMED_PACK: .*format/],
    ["future version", (m: any) => (m.formatVersion = 99), /UNSUPPORTED_PACK_VERSION: .*99/],
    ["missing model shape", (m: any) => delete m.model.numLayers, /model\.numLayers/],
    ["kv heads not dividing heads", (m: any) => (m.model.numKvHeads = 3), /numKvHeads/],
    ["path escaping the pack", (m: any) => (m.files.model = "../../etc/passwd"), /files\.model .*relative path/],
    ["domain naming a missing adapter", (m: any) => (m.domains.movies.adapter = "domain:books"), /domains\.movies\.adapter/],
    ["λ out of range", (m: any) => (m.domains.movies.calibratedLambda = 2), /calibratedLambda/],
    ["end token outside the vocabulary", (m: any) => (m.prompt.endTokenId = 10_000_000), /endTokenId/],
    ["no LoRA targets", (m: any) => (m.lora.targets = []), /lora\.targets/],
    // Dimensions that made a service spin or grow without bound before its first answer.
    ["a vocabulary of 10¹²", (m: any) => (m.model.vocabSize = 1e12), /model\.vocabSize must be an integer in \[2, 1048576\]/],
    ["10⁹ layers", (m: any) => (m.model.numLayers = 1e9), /model\.numLayers must be an integer in \[1, 256\]/],
    ["a fractional head count", (m: any) => (m.model.numHeads = 4.5), /model\.numHeads/],
    ["10¹² candidates", (m: any) => (m.limits.maxCandidates = 1e12), /limits\.maxCandidates must be an integer in \[1, 4096\]/],
    ["a history budget past the context", (m: any) => (m.prompt.maxHistoryTokens = 10_000), /prompt\.maxHistoryTokens/],
    ["an absurd LoRA scaling", (m: any) => (m.adapters.general.scaling = 1e30), /adapters\.general\.scaling/],
    ["an absurd rank", (m: any) => (m.adapters.general.rank = 1e9), /adapters\.general\.rank/],
    ["a LoRA target of 10⁷ features", (m: any) => (m.lora.targets[0].inFeatures = 1e7), /lora\.targets\[0\]\.inFeatures/],
    ["a module wrapped twice", (m: any) => (m.lora.targets[1].module = m.lora.targets[0].module), /lora\.targets\[1\]\.module repeats/],
    ["a LoRA input named like the KV cache", (m: any) => (m.lora.targets[0].inputA = "past_key_values.0.key"), /inputA/],
    ["a scale input named input_ids", (m: any) => (m.lora.scaleInput = "input_ids"), /lora\.scaleInput/],
    ["two targets sharing an input", (m: any) => (m.lora.targets[1].inputB = m.lora.targets[0].inputB), /lora\.targets\[1\]\.inputB/],
    ["an empty domain name", (m: any) => (m.domains[""] = m.domains.movies), /domains/],
    // Paths are resolved against folders, R2 prefixes and URLs alike.
    ["an absolute path", (m: any) => (m.files.tokenizer = "/etc/passwd"), /files\.tokenizer .*relative path/],
    ["a URL", (m: any) => (m.files.model = "https://example.com/model.onnx"), /files\.model .*must not contain/],
    ["a URL-escaped ..", (m: any) => (m.files.model = "%2e%2e/model.onnx"), /files\.model .*must not contain/],
    ["a backslash path", (m: any) => (m.files.model = "..\\model.onnx"), /files\.model/],
    ["an empty segment", (m: any) => (m.adapters.general.path = "adapters//general"), /adapters\.general\.path/],
    ["a . segment", (m: any) => (m.adapters.general.path = "./adapters/general"), /adapters\.general\.path/],
    ["a NUL byte", (m: any) => (m.files.tokenizer = "tokenizer.json\u0000.txt"), /files\.tokenizer/],
    // Fan-out: the shared layers must exist and hold no LoRA target (it would see no mixture).
    ["as many shared layers as layers", (m: any) => (m.model.sharedLayers = 2), /model\.sharedLayers must be an integer in \[0, 1\]/],
    ["fan-out on a concat cache", (m: any) => (m.model.sharedLayers = 1), /model\.sharedLayers needs model\.kvCache "grouped"/],
    [
      "a LoRA target in a shared layer",
      (m: any) => Object.assign(m.model, { sharedLayers: 1, kvCache: "grouped" }),
      /lora\.targets\[0\]\.module model\.layers\.0\.self_attn\.q_proj sits in layer 0, but model\.sharedLayers \(1\)/,
    ],
    [
      "a LoRA target outside the decoder layers",
      (m: any) =>
        Object.assign(m.model, { sharedLayers: 1, kvCache: "grouped" }) &&
        (m.lora.targets = [{ ...m.lora.targets.at(-1), module: "lm_head" }]),
      /lm_head names no decoder layer/,
    ],
  ])("rejects %s with a coded error naming the field", (_name, mutate, pattern) => {
    const m = clone();
    mutate(m);
    expect(codeOf(() => parseManifest(m))).toMatch(pattern);
  });
});

describe("names from the manifest", () => {
  it("keeps domains and adapters called __proto__, constructor or toString as plain entries", () => {
    const m = clone();
    // JSON.parse makes "__proto__" an own key, as a manifest file would.
    const raw = JSON.parse(
      JSON.stringify(m).replace('"domains":{', '"domains":{"__proto__":{"adapter":"__proto__"},"toString":{"adapter":"general"},'),
    );
    raw.adapters = JSON.parse(`{"__proto__": ${JSON.stringify(m.adapters.general)}, ${JSON.stringify(m.adapters).slice(1)}`);
    const parsed = parseManifest(raw);
    expect(Object.keys(parsed.domains)).toEqual(["__proto__", "toString", "movies"]);
    expect(Object.keys(parsed.adapters)).toEqual(["__proto__", "general", "domain:movies"]);
    expect(Object.getPrototypeOf(parsed.domains)).toBeNull();
    expect(Object.getOwnPropertyDescriptor(parsed.domains, "__proto__")?.value.adapter).toBe("__proto__");
    expect(Object.getOwnPropertyDescriptor(parsed.adapters, "__proto__")?.value.rank).toBe(m.adapters.general.rank);
  });

  it.each(["toString", "constructor", "__proto__", "hasOwnProperty"])("refuses a reference to the inherited %s", (name) => {
    const m = clone();
    m.domains.movies.adapter = name;
    expect(codeOf(() => parseManifest(m))).toMatch(/MALFORMED_PACK: .*domains\.movies\.adapter/);
    const d = clone();
    d.defaultDomain = name;
    expect(codeOf(() => parseManifest(d))).toMatch(/MALFORMED_PACK: .*defaultDomain/);
    const g = clone();
    g.generalAdapter = name;
    expect(codeOf(() => parseManifest(g))).toMatch(/MALFORMED_PACK: .*generalAdapter/);
  });
});
