import { MolorecError } from "./errors.js";
import { hasOwn, ownRecord, quoteName } from "./own.js";
import { PACK_BOUNDS, packPathProblem } from "./pack-bounds.js";

/** The pack format this build of molorec reads. Bumped on any incompatible change. */
export const PACK_FORMAT_VERSION = 1;

/** Shape of the decoder, as needed to build KV-cache feeds. */
export interface ModelConfig {
  architecture: string;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  hiddenSize: number;
  vocabSize: number;
  maxPositions: number;
  /**
   * How the graph's KV cache pairs with its rows. `"concat"` (the contract's default): past row b
   * serves input row b, and `present` is the past plus this run's keys/values. `"grouped"`: the
   * past batch may be any divisor of the input batch (input row b attends to past row
   * ⌊b / (B / Bp)⌋) and `present` holds this run's keys/values only, so a prompt's cache is fed
   * once for all its candidate rows instead of once per row.
   */
  kvCache: "concat" | "grouped";
  /**
   * Layers below the lowest LoRA target that the graph runs once per *source* row (0: none, the
   * default). With K > 0 the graph takes an int64 input `row_source [batch]`: `input_ids`,
   * `attention_mask`, `position_ids`, `target_ids` and layers 0…K−1's past and present have one row
   * per source, and batch row b continues source `row_source[b]` from layer K on, so the mixtures
   * of one request pay for the shared layers once (docs/pack-format.md, "Fan-out").
   */
  sharedLayers: number;
}

/** One LoRA-wrapped Linear layer of the exported graph. */
export interface LoraTarget {
  /** Module path inside the HF model, e.g. `model.layers.0.self_attn.q_proj`. */
  module: string;
  inFeatures: number;
  outFeatures: number;
  /** Graph input holding A, shape `[rank, inFeatures]`. */
  inputA: string;
  /** Graph input holding B, shape `[outFeatures, rank]`. */
  inputB: string;
}

/** An adapter stored in the pack (PEFT folder layout). */
export interface AdapterEntry {
  /** Folder holding `adapter_model.safetensors` and `adapter_config.json`. */
  path: string;
  rank: number;
  alpha: number;
  /** PEFT scaling `alpha / rank` (or `alpha / sqrt(rank)` with rsLoRA). */
  scaling: number;
  /** Module names (suffixes) the adapter wraps, from its PEFT config. */
  targetModules: string[];
}

/** A target domain: its plug-in adapter and its mixture weights. */
export interface DomainEntry {
  /** Name of the domain-specific adapter in {@link PackManifest.adapters}. */
  adapter: string;
  /** Weight λ of the domain adapter when no calibration is stored (general gets 1 − λ). */
  defaultLambda: number;
  /** λ found by entropy minimisation on unlabeled prompts, when calibrated. */
  calibratedLambda?: number;
  description?: string;
}

/** How a request becomes token ids. Every piece is tokenized on its own and concatenated. */
export interface PromptSpec {
  /** Text before the history. */
  prefix: string;
  /** Text before each history title. */
  itemPrefix: string;
  /** Text after each history title. */
  itemSuffix: string;
  /** Text after the history (the cue, e.g. `Next item:`). */
  suffix: string;
  /** Text before a candidate's title in its scored continuation. */
  candidatePrefix: string;
  /** Titles are cut to this many tokens, in history and in candidates. */
  maxTitleTokens: number;
  /** Oldest history titles are dropped until the rendered history fits this many tokens. */
  maxHistoryTokens: number;
  /** Token id prepended to the prompt, if the model was trained with one. */
  bosTokenId: number | null;
  /** Token id that ends a candidate title; its probability is part of the score. */
  endTokenId: number;
  /** `mean`: average log-probability per scored token; `sum`: total log-probability. */
  scoreNormalization: "mean" | "sum";
  /**
   * Trailing spaces of a template piece that a title follows (`itemPrefix`; `suffix` and
   * `candidatePrefix` before a candidate) are tokenized as the start of that title, as byte-level
   * BPE tokenizers see them in running text (`"- "` + `"Heat"` → `"-"` + `" Heat"`). Default `false`.
   */
  moveTrailingSpaces: boolean;
}

/** Request limits the pack is built for; servers may lower them, never raise them. */
export interface PackLimits {
  maxCandidates: number;
  maxHistoryItems: number;
}

/**
 * `molorec.json`: the contract between training/ (which writes it) and every runtime.
 */
export interface PackManifest {
  format: "molorec-pack";
  formatVersion: number;
  name: string;
  dtype: "float32";
  model: ModelConfig;
  files: {
    model: string;
    modelExternalData: string[];
    tokenizer: string;
    tokenizerConfig: string | null;
  };
  lora: {
    targets: LoraTarget[];
    /** Graph input holding the per-row LoRA scale, shape `[batch, rank]`. */
    scaleInput: string;
  };
  adapters: Record<string, AdapterEntry>;
  /** Name of the domain-general adapter, if the pack has one. */
  generalAdapter: string | null;
  domains: Record<string, DomainEntry>;
  defaultDomain: string | null;
  prompt: PromptSpec;
  limits: PackLimits;
}

type Json = unknown;

class ManifestReader {
  constructor(private readonly file: string) {}

  fail(path: string, what: string): never {
    throw new MolorecError(
      "MALFORMED_PACK",
      `${this.file}: ${path} ${what}. Re-export the pack with \`molorec-train export\` or fix the manifest by hand.`,
      { details: { field: path } },
    );
  }

  object(v: Json, path: string): Record<string, Json> {
    if (typeof v !== "object" || v === null || Array.isArray(v)) this.fail(path, "must be an object");
    return v as Record<string, Json>;
  }

  string(v: Json, path: string, { empty = false } = {}): string {
    if (typeof v !== "string" || (!empty && v.length === 0)) this.fail(path, empty ? "must be a string" : "must be a non-empty string");
    return v;
  }

  int(v: Json, path: string, min = 1, max = Number.MAX_SAFE_INTEGER): number {
    if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max)
      this.fail(path, max === Number.MAX_SAFE_INTEGER ? `must be an integer ≥ ${min}` : `must be an integer in [${min}, ${max}]`);
    return v;
  }

  number(v: Json, path: string, min = -Infinity, max = Infinity): number {
    if (typeof v !== "number" || !Number.isFinite(v) || v < min || v > max) this.fail(path, `must be a number in [${min}, ${max}]`);
    return v;
  }

  oneOf<T extends string>(v: Json, path: string, allowed: readonly T[]): T {
    if (!allowed.includes(v as T)) this.fail(path, `must be one of ${allowed.map((a) => JSON.stringify(a)).join(", ")}`);
    return v as T;
  }

  boolean(v: Json, path: string): boolean {
    if (typeof v !== "boolean") this.fail(path, "must be true or false");
    return v;
  }

  stringArray(v: Json, path: string): string[] {
    if (!Array.isArray(v)) this.fail(path, "must be an array of strings");
    return v.map((x, i) => this.string(x, `${path}[${i}]`));
  }

  relativePath(v: Json, path: string): string {
    const p = this.string(v, path);
    const problem = packPathProblem(p);
    if (problem) this.fail(path, `(${quoteName(p)}) ${problem}`);
    return p;
  }

  /** A name (of the pack), 1 to {@link PACK_BOUNDS.nameLength} characters. */
  name(v: Json, path: string): string {
    const n = this.string(v, path);
    if (n.length > PACK_BOUNDS.nameLength) this.fail(path, `must be at most ${PACK_BOUNDS.nameLength} characters`);
    return n;
  }

  /** A record keyed by names (adapters, domains): bounded in size, names bounded in length. */
  names(v: Json, path: string, max: number): Array<[string, Json]> {
    const entries = Object.entries(this.object(v, path));
    if (entries.length > max) this.fail(path, `has ${entries.length} entries; at most ${max} are allowed`);
    for (const [name] of entries) {
      if (name.length === 0 || name.length > PACK_BOUNDS.nameLength)
        this.fail(`${path}.${quoteName(name)}`, `must be named with 1 to ${PACK_BOUNDS.nameLength} characters`);
    }
    return entries;
  }
}

/**
 * Validates a parsed `molorec.json`. Throws {@link MolorecError} `MALFORMED_PACK` naming the
 * first bad field, or `UNSUPPORTED_PACK_VERSION`.
 */
export function parseManifest(value: unknown, file = "molorec.json"): PackManifest {
  const r = new ManifestReader(file);
  const root = r.object(value, "(root)");
  if (root.format !== "molorec-pack") r.fail("format", 'must be "molorec-pack" (is this a molorec model pack?)');
  const formatVersion = r.int(root.formatVersion, "formatVersion");
  if (formatVersion !== PACK_FORMAT_VERSION) {
    throw new MolorecError(
      "UNSUPPORTED_PACK_VERSION",
      `${file}: pack format version ${formatVersion} is not supported by this runtime (it reads version ${PACK_FORMAT_VERSION}). Re-export the pack with a matching molorec-train, or upgrade molorec.`,
      { details: { formatVersion, supported: PACK_FORMAT_VERSION } },
    );
  }
  if (root.dtype !== "float32") r.fail("dtype", 'must be "float32"');
  // Sections in this order, so the first bad field reported is the same as before the split.
  const model = readModel(r, root.model);
  const files = readFiles(r, root.files);
  const lora = readLora(r, root.lora);
  checkSharedLayers(r, model, lora);
  const { adapters, generalAdapter } = readAdapters(r, root);
  const { domains, defaultDomain } = readDomains(r, root, adapters);
  const prompt = readPrompt(r, root.prompt, model);
  const limits = readLimits(r, root.limits);
  const name = r.name(root.name, "name");
  return {
    format: "molorec-pack",
    formatVersion,
    name,
    dtype: "float32",
    model,
    files,
    lora,
    adapters,
    generalAdapter,
    domains,
    defaultDomain,
    prompt,
    limits,
  };
}

function readModel(r: ManifestReader, v: Json): ModelConfig {
  const m = r.object(v, "model");
  const model: ModelConfig = {
    architecture: r.string(m.architecture, "model.architecture"),
    numLayers: r.int(m.numLayers, "model.numLayers", 1, PACK_BOUNDS.layers),
    numHeads: r.int(m.numHeads, "model.numHeads", 1, PACK_BOUNDS.heads),
    numKvHeads: r.int(m.numKvHeads, "model.numKvHeads", 1, PACK_BOUNDS.heads),
    headDim: r.int(m.headDim, "model.headDim", 1, PACK_BOUNDS.headDim),
    hiddenSize: r.int(m.hiddenSize, "model.hiddenSize", 1, PACK_BOUNDS.hiddenSize),
    vocabSize: r.int(m.vocabSize, "model.vocabSize", 2, PACK_BOUNDS.vocabSize),
    maxPositions: r.int(m.maxPositions, "model.maxPositions", 2, PACK_BOUNDS.positions),
    kvCache: m.kvCache === undefined ? "concat" : r.oneOf(m.kvCache, "model.kvCache", ["concat", "grouped"] as const),
    sharedLayers: 0,
  };
  if (m.sharedLayers !== undefined) model.sharedLayers = r.int(m.sharedLayers, "model.sharedLayers", 0, model.numLayers - 1);
  if (model.sharedLayers > 0 && model.kvCache !== "grouped")
    r.fail("model.sharedLayers", 'needs model.kvCache "grouped" (fan-out runs feed a shared cache per group of rows)');
  if (model.numHeads % model.numKvHeads !== 0) r.fail("model.numKvHeads", "must divide model.numHeads");
  return model;
}

/** Finds the decoder layer a LoRA target module sits in (`model.layers.<i>.…`). */
const TARGET_LAYER = /(?:^|\.)layers\.(\d+)\./;

/** Fan-out is only exact when no LoRA target sits in a shared layer (they would see no mixture). */
function checkSharedLayers(r: ManifestReader, model: ModelConfig, lora: PackManifest["lora"]): void {
  if (model.sharedLayers === 0) return;
  lora.targets.forEach((t, i) => {
    const layer = TARGET_LAYER.exec(t.module);
    if (!layer || Number(layer[1]) < model.sharedLayers)
      r.fail(
        `lora.targets[${i}].module`,
        `${t.module} ${layer ? `sits in layer ${layer[1]}` : "names no decoder layer"}, but model.sharedLayers (${model.sharedLayers}) runs layers below it once for all mixtures`,
      );
  });
}

function readFiles(r: ManifestReader, v: Json): PackManifest["files"] {
  const f = r.object(v, "files");
  const files = {
    model: r.relativePath(f.model, "files.model"),
    modelExternalData: f.modelExternalData === undefined ? [] : r.stringArray(f.modelExternalData, "files.modelExternalData"),
    tokenizer: r.relativePath(f.tokenizer, "files.tokenizer"),
    tokenizerConfig: f.tokenizerConfig == null ? null : r.relativePath(f.tokenizerConfig, "files.tokenizerConfig"),
  };
  if (files.modelExternalData.length > PACK_BOUNDS.externalDataFiles)
    r.fail("files.modelExternalData", `lists ${files.modelExternalData.length} files; at most ${PACK_BOUNDS.externalDataFiles}`);
  files.modelExternalData.forEach((p, i) => r.relativePath(p, `files.modelExternalData[${i}]`));
  return files;
}

function readLora(r: ManifestReader, v: Json): PackManifest["lora"] {
  const l = r.object(v, "lora");
  if (!Array.isArray(l.targets) || l.targets.length === 0) r.fail("lora.targets", "must be a non-empty array");
  const rawTargets = l.targets as Json[];
  if (rawTargets.length > PACK_BOUNDS.loraTargets)
    r.fail("lora.targets", `has ${rawTargets.length} entries; at most ${PACK_BOUNDS.loraTargets}`);
  const targets = rawTargets.map((t, i): LoraTarget => {
    const o = r.object(t, `lora.targets[${i}]`);
    return {
      module: r.string(o.module, `lora.targets[${i}].module`),
      inFeatures: r.int(o.inFeatures, `lora.targets[${i}].inFeatures`, 1, PACK_BOUNDS.features),
      outFeatures: r.int(o.outFeatures, `lora.targets[${i}].outFeatures`, 1, PACK_BOUNDS.features),
      inputA: r.string(o.inputA, `lora.targets[${i}].inputA`),
      inputB: r.string(o.inputB, `lora.targets[${i}].inputB`),
    };
  });
  const lora = { targets, scaleInput: r.string(l.scaleInput, "lora.scaleInput") };
  checkLoraTargets(r, lora);
  return lora;
}

// Null-prototype records, looked up with own-property checks: a domain or adapter may be called
// "__proto__" or "toString" without selecting what every object inherits.
function readAdapters(r: ManifestReader, root: Record<string, Json>) {
  const adapters = ownRecord<AdapterEntry>();
  for (const [name, v] of r.names(root.adapters, "adapters", PACK_BOUNDS.adapters)) {
    const o = r.object(v, `adapters.${name}`);
    adapters[name] = {
      path: r.relativePath(o.path, `adapters.${name}.path`),
      rank: r.int(o.rank, `adapters.${name}.rank`, 1, PACK_BOUNDS.rank),
      alpha: r.number(o.alpha, `adapters.${name}.alpha`, 0, PACK_BOUNDS.scaling),
      scaling: r.number(o.scaling, `adapters.${name}.scaling`, 0, PACK_BOUNDS.scaling),
      targetModules: r.stringArray(o.targetModules, `adapters.${name}.targetModules`),
    };
  }
  const generalAdapter = root.generalAdapter == null ? null : r.string(root.generalAdapter, "generalAdapter");
  if (generalAdapter !== null && !hasOwn(adapters, generalAdapter))
    r.fail("generalAdapter", `names adapter ${quoteName(generalAdapter)}, which is not in adapters`);
  return { adapters, generalAdapter };
}

function readDomains(r: ManifestReader, root: Record<string, Json>, adapters: Record<string, AdapterEntry>) {
  const domains = ownRecord<DomainEntry>();
  for (const [name, v] of r.names(root.domains, "domains", PACK_BOUNDS.domains)) {
    const o = r.object(v, `domains.${name}`);
    const adapter = r.string(o.adapter, `domains.${name}.adapter`);
    if (!hasOwn(adapters, adapter)) r.fail(`domains.${name}.adapter`, `names adapter ${quoteName(adapter)}, which is not in adapters`);
    domains[name] = {
      adapter,
      defaultLambda: o.defaultLambda === undefined ? 0.5 : r.number(o.defaultLambda, `domains.${name}.defaultLambda`, 0, 1),
      ...(o.calibratedLambda == null ? {} : { calibratedLambda: r.number(o.calibratedLambda, `domains.${name}.calibratedLambda`, 0, 1) }),
      ...(typeof o.description === "string" ? { description: o.description } : {}),
    };
  }
  const defaultDomain = root.defaultDomain == null ? null : r.string(root.defaultDomain, "defaultDomain");
  if (defaultDomain !== null && !hasOwn(domains, defaultDomain))
    r.fail("defaultDomain", `names domain ${quoteName(defaultDomain)}, which is not in domains`);
  return { domains, defaultDomain };
}

function readPrompt(r: ManifestReader, v: Json, model: ModelConfig): PromptSpec {
  const p = r.object(v, "prompt");
  const norm = p.scoreNormalization ?? "mean";
  if (norm !== "mean" && norm !== "sum") r.fail("prompt.scoreNormalization", 'must be "mean" or "sum"');
  const prompt: PromptSpec = {
    prefix: r.string(p.prefix, "prompt.prefix", { empty: true }),
    itemPrefix: r.string(p.itemPrefix, "prompt.itemPrefix", { empty: true }),
    itemSuffix: r.string(p.itemSuffix, "prompt.itemSuffix", { empty: true }),
    suffix: r.string(p.suffix, "prompt.suffix", { empty: true }),
    candidatePrefix: r.string(p.candidatePrefix ?? "", "prompt.candidatePrefix", { empty: true }),
    maxTitleTokens: r.int(p.maxTitleTokens, "prompt.maxTitleTokens", 1, model.maxPositions - 1),
    maxHistoryTokens: r.int(p.maxHistoryTokens, "prompt.maxHistoryTokens", 1, model.maxPositions - 1),
    bosTokenId: p.bosTokenId == null ? null : r.int(p.bosTokenId, "prompt.bosTokenId", 0),
    endTokenId: r.int(p.endTokenId, "prompt.endTokenId", 0),
    scoreNormalization: norm as "mean" | "sum",
    moveTrailingSpaces: p.moveTrailingSpaces === undefined ? false : r.boolean(p.moveTrailingSpaces, "prompt.moveTrailingSpaces"),
  };
  for (const [k, id] of [
    ["bosTokenId", prompt.bosTokenId],
    ["endTokenId", prompt.endTokenId],
  ] as const) {
    if (id !== null && id >= model.vocabSize) r.fail(`prompt.${k}`, `must be < model.vocabSize (${model.vocabSize})`);
  }
  return prompt;
}

function readLimits(r: ManifestReader, v: Json): PackLimits {
  const lim = r.object(v, "limits");
  return {
    maxCandidates: r.int(lim.maxCandidates, "limits.maxCandidates", 1, PACK_BOUNDS.candidates),
    maxHistoryItems: r.int(lim.maxHistoryItems, "limits.maxHistoryItems", 1, PACK_BOUNDS.historyItems),
  };
}

/** Graph inputs molorec feeds besides the KV cache and the LoRA weights. */
const FIXED_INPUTS = new Set(["input_ids", "attention_mask", "position_ids", "num_logits_to_keep", "target_ids"]);

/**
 * LoRA targets name distinct modules and distinct graph inputs, none of them another input's
 * name, and their rank-1 feeds fit {@link PACK_BOUNDS.loraFeedFloats}.
 */
function checkLoraTargets(r: ManifestReader, lora: { targets: LoraTarget[]; scaleInput: string }): void {
  const modules = new Set<string>();
  const inputs = new Set<string>([lora.scaleInput]);
  if (FIXED_INPUTS.has(lora.scaleInput) || /^past_key_values\./.test(lora.scaleInput))
    r.fail("lora.scaleInput", `is ${quoteName(lora.scaleInput)}, a name molorec feeds something else to`);
  let floats = 0;
  lora.targets.forEach((t, i) => {
    if (modules.has(t.module)) r.fail(`lora.targets[${i}].module`, `repeats ${quoteName(t.module)}`);
    modules.add(t.module);
    for (const key of ["inputA", "inputB"] as const) {
      const name = t[key];
      if (inputs.has(name) || FIXED_INPUTS.has(name) || /^past_key_values\./.test(name))
        r.fail(`lora.targets[${i}].${key}`, `is ${quoteName(name)}, a graph input name already in use`);
      inputs.add(name);
    }
    floats += t.inFeatures + t.outFeatures;
  });
  if (floats > PACK_BOUNDS.loraFeedFloats)
    r.fail("lora.targets", `add up to ${floats} input and output features; at most ${PACK_BOUNDS.loraFeedFloats} are allowed`);
}

/** Graph input/output names of the KV cache for layer `i` (transformers.js / Optimum naming). */
export const kvNames = {
  pastKey: (i: number) => `past_key_values.${i}.key`,
  pastValue: (i: number) => `past_key_values.${i}.value`,
  presentKey: (i: number) => `present.${i}.key`,
  presentValue: (i: number) => `present.${i}.value`,
};
