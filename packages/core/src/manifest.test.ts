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
  ])("rejects %s with a coded error naming the field", (_name, mutate, pattern) => {
    const m = clone();
    mutate(m);
    expect(codeOf(() => parseManifest(m))).toMatch(pattern);
  });
});
