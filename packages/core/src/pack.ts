import { isMolorecError, MolorecError } from "./errors.js";
import { parseManifest, type PackManifest } from "./manifest.js";
import { checkOnnxModel, type RandomAccessFile } from "./onnx-check.js";
import { hasOwn, ownEntry, quoteName } from "./own.js";
import { parseSafetensors } from "./safetensors.js";
import { createTextEncoder, maxTokenId, type TextEncoder } from "./tokenizer.js";

/**
 * Where a pack's files come from. Runtime packages implement it over a directory, `fetch`,
 * an R2 bucket or bundled bytes; core never touches the platform itself.
 */
export interface PackSource {
  /** Human-readable location for messages, e.g. a path or URL. */
  readonly location: string;
  /** Reads a file of the pack by its relative path. Rejects if it does not exist. */
  readBytes(path: string): Promise<Uint8Array>;
  /**
   * Optional: opens a file of the pack in place, for a runtime that reads the model from disk
   * itself (Node): a large model then never sits in JavaScript memory, and its external data is
   * read beside it. Same checks and errors as {@link readBytes}.
   */
  openFile?(path: string): Promise<PackFile>;
}

/** A pack file opened in place: where it is, and reads of it (for the checks core makes). */
export interface PackFile extends RandomAccessFile {
  /** A path the runtime can open, e.g. an absolute file path. */
  readonly path: string;
}

/** One adapter's LoRA weights per target module: A `[rank, in]`, B `[out, rank]`. */
export interface LoadedAdapter {
  name: string;
  rank: number;
  scaling: number;
  modules: Map<string, { a: Float32Array; b: Float32Array }>;
}

/** A validated pack in memory, ready for {@link createRecommender}. */
export interface ModelPack {
  manifest: PackManifest;
  encoder: TextEncoder;
  /**
   * The graph: its bytes, or — from a source that opens files in place ({@link PackSource.openFile})
   * — the file, which the backend opens itself with its external data beside it.
   */
  model: Uint8Array | PackFile;
  /** External-data files of the graph, when the model is held as bytes (else `[]`: read beside the file). */
  externalData: Array<{ path: string; data: Uint8Array }>;
  /** Size of the graph file and its external data, in bytes. */
  modelBytes: number;
  adapters: Map<string, LoadedAdapter>;
  location: string;
}

const PEFT_PREFIX = "base_model.model.";

async function read(source: PackSource, path: string): Promise<Uint8Array> {
  try {
    return await source.readBytes(path);
  } catch (cause) {
    // A source that knows why (a path leaving the pack, a file that is not a regular file) says so.
    if (isMolorecError(cause)) throw cause;
    throw new MolorecError(
      "PACK_FILE_MISSING",
      `${source.location}: cannot read ${path} (${(cause as Error)?.message ?? cause}). Is this a complete molorec pack?`,
      {
        cause,
        details: { path },
      },
    );
  }
}

async function opened(source: PackSource, path: string, open: (path: string) => Promise<PackFile>): Promise<PackFile> {
  try {
    return await open(path);
  } catch (cause) {
    if (isMolorecError(cause)) throw cause;
    throw new MolorecError(
      "PACK_FILE_MISSING",
      `${source.location}: cannot open ${path} (${(cause as Error)?.message ?? cause}). Is this a complete molorec pack?`,
      { cause, details: { path } },
    );
  }
}

/** The model's bytes, whether the pack holds them or the file (for backends that take bytes only). */
export async function modelBytes(model: Uint8Array | PackFile): Promise<Uint8Array> {
  return model instanceof Uint8Array ? model : model.readSync(0, model.byteLength);
}

function parseJson(bytes: Uint8Array, file: string): unknown {
  try {
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch (cause) {
    throw new MolorecError("MALFORMED_PACK", `${file} is not valid JSON: ${(cause as Error).message}`, { cause });
  }
}

/** Reads one adapter and checks it against the graph's LoRA targets. */
export function parseAdapter(manifest: PackManifest, name: string, bytes: Uint8Array, file: string): LoadedAdapter {
  const entry = ownEntry(manifest.adapters, name);
  if (!entry) throw new MolorecError("MALFORMED_PACK", `${file}: adapter ${quoteName(name)} is not in the manifest's adapters`);
  const targets = new Map(manifest.lora.targets.map((t) => [t.module, t]));
  const tensors = parseSafetensors(bytes, file);
  const parts = new Map<string, { a?: Float32Array; b?: Float32Array }>();
  for (const [key, t] of tensors) {
    const m = /^(.*)\.lora_([AB])(?:\.default)?\.weight$/.exec(key.startsWith(PEFT_PREFIX) ? key.slice(PEFT_PREFIX.length) : "");
    if (!m) throw new MolorecError("MALFORMED_PACK", `${file}: unexpected tensor ${key}; only PEFT LoRA A/B weights are supported.`);
    const module = m[1]!;
    const target = targets.get(module);
    if (!target) {
      throw new MolorecError(
        "MALFORMED_PACK",
        `${file}: adapter "${name}" wraps ${module}, which the graph has no LoRA input for. Re-export the pack with this module in --targets.`,
      );
    }
    const isA = m[2] === "A";
    const want = isA ? [entry.rank, target.inFeatures] : [target.outFeatures, entry.rank];
    if (t.dims.length !== 2 || t.dims[0] !== want[0] || t.dims[1] !== want[1]) {
      throw new MolorecError("MALFORMED_PACK", `${file}: ${key} has shape [${t.dims}], expected [${want}]`);
    }
    const p = parts.get(module) ?? {};
    if (isA ? p.a : p.b) throw new MolorecError("MALFORMED_PACK", `${file}: module ${module} has two lora_${m[2]} tensors`);
    if (isA) p.a = t.data;
    else p.b = t.data;
    parts.set(module, p);
  }
  const modules = new Map<string, { a: Float32Array; b: Float32Array }>();
  for (const [module, p] of parts) {
    if (!p.a || !p.b) throw new MolorecError("MALFORMED_PACK", `${file}: module ${module} lacks lora_A or lora_B`);
    modules.set(module, { a: p.a, b: p.b });
  }
  if (modules.size === 0) throw new MolorecError("MALFORMED_PACK", `${file}: adapter "${name}" has no LoRA weights`);
  return { name, rank: entry.rank, scaling: entry.scaling, modules };
}

/**
 * Loads and validates a pack: manifest, tokenizer, adapters and model bytes.
 * Errors name the file and field at fault (`MALFORMED_PACK`, `PACK_FILE_MISSING`,
 * `UNSUPPORTED_PACK_VERSION`).
 */
export async function loadPack(source: PackSource): Promise<ModelPack> {
  const manifest = parseManifest(
    parseJson(await read(source, "molorec.json"), `${source.location}/molorec.json`),
    `${source.location}/molorec.json`,
  );
  const { files } = manifest;
  const inPlace = source.openFile?.bind(source);
  const [tokBytes, tokCfgBytes, model] = await Promise.all([
    read(source, files.tokenizer),
    files.tokenizerConfig ? read(source, files.tokenizerConfig) : Promise.resolve(null),
    inPlace ? opened(source, files.model, inPlace) : read(source, files.model),
  ]);
  checkOnnxModel(model, `${source.location}/${files.model}`);
  const tokenizerJson = parseJson(tokBytes, files.tokenizer);
  const maxId = maxTokenId(tokenizerJson);
  if (maxId !== null && maxId >= manifest.model.vocabSize) {
    throw new MolorecError(
      "MALFORMED_PACK",
      `${source.location}/${files.tokenizer} has token ids up to ${maxId}, but the model's vocabulary (model.vocabSize) is ${manifest.model.vocabSize}: the tokenizer belongs to another model. Export the pack with the model's own tokenizer.`,
      { details: { file: files.tokenizer, maxTokenId: maxId, vocabSize: manifest.model.vocabSize } },
    );
  }
  const encoder = createTextEncoder(tokenizerJson, tokCfgBytes ? parseJson(tokCfgBytes, files.tokenizerConfig!) : {});
  let externalData: ModelPack["externalData"] = [];
  let modelBytes = model.byteLength;
  // In place, the backend reads external data beside the model; each listed file must still be a
  // regular file inside the pack.
  if (inPlace) {
    for (const f of await Promise.all(files.modelExternalData.map((path) => opened(source, path, inPlace)))) modelBytes += f.byteLength;
  } else {
    externalData = await Promise.all(files.modelExternalData.map(async (path) => ({ path, data: await read(source, path) })));
    for (const f of externalData) modelBytes += f.data.byteLength;
  }
  const adapters = new Map<string, LoadedAdapter>();
  for (const [name, entry] of Object.entries(manifest.adapters)) {
    const file = `${entry.path}/adapter_model.safetensors`;
    adapters.set(name, parseAdapter(manifest, name, await read(source, file), file));
  }
  return { manifest, encoder, model, externalData, modelBytes, adapters, location: source.location };
}

/** A {@link PackSource} over an in-memory map of files (bundled packs, tests). */
export function memorySource(files: Record<string, Uint8Array>, location = "memory"): PackSource {
  return {
    location,
    async readBytes(path) {
      // Own entries only: a manifest naming "constructor" as a file must not read Object's.
      const f = hasOwn(files, path) ? files[path] : undefined;
      if (!(f instanceof Uint8Array)) throw new Error(`no file ${path}`);
      return f;
    },
  };
}
