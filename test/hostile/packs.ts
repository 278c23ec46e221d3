// Hostile packs, built in memory from the fixture pack's files: each must be refused when a
// service opens it (a coded start-up error), never served. Pure functions of the files, so the
// server's suite writes them to folders and the Worker's suite opens them inside workerd.

/** A pack's files by their path inside it. */
export type PackFiles = Record<string, Uint8Array>;

/** One hostile pack and the error opening it must give. */
export interface HostilePack {
  name: string;
  files: PackFiles;
  code: "MALFORMED_PACK" | "UNSUPPORTED_PACK_VERSION" | "PACK_FILE_MISSING";
  /** What the message must say. */
  message: RegExp;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

/** The fixture's general adapter, whose header the safetensors cases rewrite. */
export const GENERAL_ADAPTER = "adapters/general/adapter_model.safetensors";

function readSafetensors(bytes: Uint8Array): { header: Record<string, any>; data: Uint8Array } {
  const len = Number(new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getBigUint64(0, true));
  return { header: JSON.parse(dec.decode(bytes.subarray(8, 8 + len))), data: bytes.subarray(8 + len) };
}

function writeSafetensors(header: unknown, data: Uint8Array): Uint8Array {
  const h = enc.encode(JSON.stringify(header));
  const out = new Uint8Array(8 + h.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(h.length), true);
  out.set(h, 8);
  out.set(data, 8 + h.length);
  return out;
}

/** The hostile packs, from the fixture pack's `files` (tiny-pack: 2 layers, vocabulary 512, a concat KV cache). */
export function hostilePacks(files: PackFiles): HostilePack[] {
  const manifest = () => JSON.parse(dec.decode(files["molorec.json"]));
  const withManifest = (edit: (m: any) => void): PackFiles => {
    const m = manifest();
    edit(m);
    return { ...files, "molorec.json": enc.encode(JSON.stringify(m)) };
  };
  /** The general adapter with the header entry of its first tensor rewritten. */
  const withTensor = (
    edit: (entry: any, header: Record<string, any>, first: string) => void,
    data?: (d: Uint8Array) => Uint8Array,
  ): PackFiles => {
    const { header, data: raw } = readSafetensors(files[GENERAL_ADAPTER]!);
    const first = Object.keys(header).find((k) => k !== "__metadata__")!;
    edit(header[first], header, first);
    return { ...files, [GENERAL_ADAPTER]: writeSafetensors(header, data ? data(raw) : raw) };
  };
  const cases: Array<[string, PackFiles, HostilePack["code"], RegExp]> = [
    // Dimensions that spun the CPU, grew memory without bound or ranked wrongly.
    ["a vocabulary of 10¹²", withManifest((m) => (m.model.vocabSize = 1e12)), "MALFORMED_PACK", /model\.vocabSize/],
    ["10⁹ layers", withManifest((m) => (m.model.numLayers = 1e9)), "MALFORMED_PACK", /model\.numLayers/],
    ["a vocabulary of 10 (the graph's is 512)", withManifest((m) => (m.model.vocabSize = 10)), "MALFORMED_PACK", /vocab/],
    ["more layers than the graph", withManifest((m) => (m.model.numLayers = 3)), "MALFORMED_PACK", /no input past_key_values\.2\.key/],
    ["fewer layers than the graph", withManifest((m) => (m.model.numLayers = 1)), "MALFORMED_PACK", /past_key_values\.1\.key/],
    ["a KV cache layout the graph does not have", withManifest((m) => (m.model.kvCache = "grouped")), "MALFORMED_PACK", /kvCache/],
    [
      "a LoRA input the graph lacks",
      withManifest((m) => (m.lora.targets[0].inputA = "lora.nothing.A")),
      "MALFORMED_PACK",
      /lora\.nothing\.A/,
    ],
    ["10¹² candidates", withManifest((m) => (m.limits.maxCandidates = 1e12)), "MALFORMED_PACK", /limits\.maxCandidates/],
    // Names and paths.
    [
      'a domain naming the adapter "toString"',
      withManifest((m) => (m.domains.movies.adapter = "toString")),
      "MALFORMED_PACK",
      /domains\.movies\.adapter/,
    ],
    ['the default domain "constructor"', withManifest((m) => (m.defaultDomain = "constructor")), "MALFORMED_PACK", /defaultDomain/],
    ["a model path with ../", withManifest((m) => (m.files.model = "../model.onnx")), "MALFORMED_PACK", /files\.model/],
    ["a model URL", withManifest((m) => (m.files.model = "https://example.com/model.onnx")), "MALFORMED_PACK", /files\.model/],
    ["a URL-escaped ../", withManifest((m) => (m.files.model = "%2e%2e/model.onnx")), "MALFORMED_PACK", /files\.model/],
    // Safetensors headers.
    ["a tensor without a shape", withTensor((e) => delete e.shape), "MALFORMED_PACK", /no valid shape/],
    ["a string shape", withTensor((e) => (e.shape = String(e.shape))), "MALFORMED_PACK", /no valid shape/],
    ["a tensor without data_offsets", withTensor((e) => delete e.data_offsets), "MALFORMED_PACK", /no valid data_offsets/],
    ["a null tensor entry", withTensor((_e, h, first) => (h[first] = null)), "MALFORMED_PACK", /is not described by an object/],
    [
      "negative offsets (header bytes read as weights)",
      withTensor((e) => (e.data_offsets = [e.data_offsets[0] - 16, e.data_offsets[1] - 16])),
      "MALFORMED_PACK",
      /data_offsets|overlaps|belong to no tensor/,
    ],
    [
      "all-NaN weights",
      withTensor(
        () => {},
        (d) => new Uint8Array(new Float32Array(d.byteLength / 4).fill(Number.NaN).buffer),
      ),
      "MALFORMED_PACK",
      /holds NaN/,
    ],
    [
      "a header length past the file",
      { ...files, [GENERAL_ADAPTER]: files[GENERAL_ADAPTER]!.map((b, i) => (i === 5 ? 0xff : b)) },
      "MALFORMED_PACK",
      /header length/,
    ],
    // Model bytes.
    [
      "a truncated model.onnx",
      { ...files, "model.onnx": files["model.onnx"]!.subarray(0, files["model.onnx"]!.byteLength >> 1) },
      "MALFORMED_PACK",
      /not a complete ONNX model/,
    ],
    [
      "an HTML page as model.onnx",
      { ...files, "model.onnx": enc.encode("<html>404</html>") },
      "MALFORMED_PACK",
      /not a complete ONNX model/,
    ],
  ];
  return cases.map(([name, f, code, message]) => ({ name, files: f, code, message }));
}

/**
 * A pack whose domain and domain adapter are called `__proto__`: valid, and it must rank as the
 * fixture does under the domain `movies`.
 */
export function protoNamedPack(files: PackFiles): PackFiles {
  const text = dec.decode(files["molorec.json"]).replaceAll('"domain:movies"', '"__proto__"').replaceAll('"movies"', '"__proto__"');
  return { ...files, "molorec.json": enc.encode(text) };
}
