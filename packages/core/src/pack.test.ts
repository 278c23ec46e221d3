import { describe, expect, it } from "vitest";
import { loadPack, memorySource } from "./pack.js";
import { fixtureFiles } from "./test-fixtures.js";

const enc = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));
const manifestOf = (files: Record<string, Uint8Array>) => JSON.parse(new TextDecoder().decode(files["molorec.json"]));

async function loadError(mutate: (files: Record<string, Uint8Array>, manifest: any) => void): Promise<unknown> {
  const files = fixtureFiles("tiny-pack");
  const manifest = manifestOf(files);
  mutate(files, manifest);
  files["molorec.json"] = enc(manifest);
  return loadPack(memorySource(files, "fixture")).then(
    () => "loaded",
    (e: unknown) => e,
  );
}

describe("loadPack", () => {
  it("loads the fixture", async () => {
    expect(await loadError(() => {})).toBe("loaded");
  });

  it("refuses a truncated model.onnx as MALFORMED_PACK (not a backend failure to retry)", async () => {
    const e = await loadError((files) => (files["model.onnx"] = files["model.onnx"]!.subarray(0, 100_000)));
    expect(e).toMatchObject({ code: "MALFORMED_PACK", message: expect.stringMatching(/model\.onnx is not a complete ONNX model/) });
  });

  it("refuses a tokenizer with ids past the model's vocabulary", async () => {
    const e = await loadError((_f, m) => (m.model.vocabSize = 300));
    expect(e).toMatchObject({ code: "MALFORMED_PACK", message: expect.stringMatching(/token ids up to 511, but .* is 300/) });
  });

  it("refuses an adapter holding NaN weights", async () => {
    const e = await loadError((files) => {
      const bytes = new Uint8Array(files["adapters/general/adapter_model.safetensors"]!);
      bytes.fill(0xff, bytes.byteLength - 4); // the last float: a NaN
      files["adapters/general/adapter_model.safetensors"] = bytes;
    });
    expect(e).toMatchObject({ code: "MALFORMED_PACK", message: expect.stringMatching(/adapter_model\.safetensors: .* holds NaN/) });
  });

  it.each(["constructor", "toString", "__proto__"])("finds no file called %s in an in-memory pack", async (name) => {
    const e = await loadError((_f, m) => (m.files.tokenizer = name));
    expect(e).toMatchObject({ code: "PACK_FILE_MISSING", details: { path: name } });
  });
});
