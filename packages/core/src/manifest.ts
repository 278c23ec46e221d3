import { MolorecError } from "./errors.js";

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

  int(v: Json, path: string, min = 1): number {
    if (typeof v !== "number" || !Number.isInteger(v) || v < min) this.fail(path, `must be an integer ≥ ${min}`);
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
    if (p.startsWith("/") || p.split(/[\\/]/).includes("..")) this.fail(path, "must be a relative path inside the pack");
    return p;
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

  const m = r.object(root.model, "model");
  const model: ModelConfig = {
    architecture: r.string(m.architecture, "model.architecture"),
    numLayers: r.int(m.numLayers, "model.numLayers"),
    numHeads: r.int(m.numHeads, "model.numHeads"),
    numKvHeads: r.int(m.numKvHeads, "model.numKvHeads"),
    headDim: r.int(m.headDim, "model.headDim"),
    hiddenSize: r.int(m.hiddenSize, "model.hiddenSize"),
    vocabSize: r.int(m.vocabSize, "model.vocabSize"),
    maxPositions: r.int(m.maxPositions, "model.maxPositions"),
    kvCache: m.kvCache === undefined ? "concat" : r.oneOf(m.kvCache, "model.kvCache", ["concat", "grouped"] as const),
  };
  if (model.numHeads % model.numKvHeads !== 0) r.fail("model.numKvHeads", "must divide model.numHeads");

  const f = r.object(root.files, "files");
  const files = {
    model: r.relativePath(f.model, "files.model"),
    modelExternalData: f.modelExternalData === undefined ? [] : r.stringArray(f.modelExternalData, "files.modelExternalData"),
    tokenizer: r.relativePath(f.tokenizer, "files.tokenizer"),
    tokenizerConfig: f.tokenizerConfig == null ? null : r.relativePath(f.tokenizerConfig, "files.tokenizerConfig"),
  };
  files.modelExternalData.forEach((p, i) => r.relativePath(p, `files.modelExternalData[${i}]`));

  const l = r.object(root.lora, "lora");
  if (!Array.isArray(l.targets) || l.targets.length === 0) r.fail("lora.targets", "must be a non-empty array");
  const targets = (l.targets as Json[]).map((t, i): LoraTarget => {
    const o = r.object(t, `lora.targets[${i}]`);
    return {
      module: r.string(o.module, `lora.targets[${i}].module`),
      inFeatures: r.int(o.inFeatures, `lora.targets[${i}].inFeatures`),
      outFeatures: r.int(o.outFeatures, `lora.targets[${i}].outFeatures`),
      inputA: r.string(o.inputA, `lora.targets[${i}].inputA`),
      inputB: r.string(o.inputB, `lora.targets[${i}].inputB`),
    };
  });
  const lora = { targets, scaleInput: r.string(l.scaleInput, "lora.scaleInput") };

  const a = r.object(root.adapters, "adapters");
  const adapters: Record<string, AdapterEntry> = {};
  for (const [name, v] of Object.entries(a)) {
    const o = r.object(v, `adapters.${name}`);
    adapters[name] = {
      path: r.relativePath(o.path, `adapters.${name}.path`),
      rank: r.int(o.rank, `adapters.${name}.rank`),
      alpha: r.number(o.alpha, `adapters.${name}.alpha`, 0),
      scaling: r.number(o.scaling, `adapters.${name}.scaling`, 0),
      targetModules: r.stringArray(o.targetModules, `adapters.${name}.targetModules`),
    };
  }
  const generalAdapter = root.generalAdapter == null ? null : r.string(root.generalAdapter, "generalAdapter");
  if (generalAdapter !== null && !(generalAdapter in adapters))
    r.fail("generalAdapter", `names adapter "${generalAdapter}", which is not in adapters`);

  const d = r.object(root.domains, "domains");
  const domains: Record<string, DomainEntry> = {};
  for (const [name, v] of Object.entries(d)) {
    const o = r.object(v, `domains.${name}`);
    const adapter = r.string(o.adapter, `domains.${name}.adapter`);
    if (!(adapter in adapters)) r.fail(`domains.${name}.adapter`, `names adapter "${adapter}", which is not in adapters`);
    domains[name] = {
      adapter,
      defaultLambda: o.defaultLambda === undefined ? 0.5 : r.number(o.defaultLambda, `domains.${name}.defaultLambda`, 0, 1),
      ...(o.calibratedLambda == null ? {} : { calibratedLambda: r.number(o.calibratedLambda, `domains.${name}.calibratedLambda`, 0, 1) }),
      ...(typeof o.description === "string" ? { description: o.description } : {}),
    };
  }
  const defaultDomain = root.defaultDomain == null ? null : r.string(root.defaultDomain, "defaultDomain");
  if (defaultDomain !== null && !(defaultDomain in domains))
    r.fail("defaultDomain", `names domain "${defaultDomain}", which is not in domains`);

  const p = r.object(root.prompt, "prompt");
  const norm = p.scoreNormalization ?? "mean";
  if (norm !== "mean" && norm !== "sum") r.fail("prompt.scoreNormalization", 'must be "mean" or "sum"');
  const prompt: PromptSpec = {
    prefix: r.string(p.prefix, "prompt.prefix", { empty: true }),
    itemPrefix: r.string(p.itemPrefix, "prompt.itemPrefix", { empty: true }),
    itemSuffix: r.string(p.itemSuffix, "prompt.itemSuffix", { empty: true }),
    suffix: r.string(p.suffix, "prompt.suffix", { empty: true }),
    candidatePrefix: r.string(p.candidatePrefix ?? "", "prompt.candidatePrefix", { empty: true }),
    maxTitleTokens: r.int(p.maxTitleTokens, "prompt.maxTitleTokens"),
    maxHistoryTokens: r.int(p.maxHistoryTokens, "prompt.maxHistoryTokens"),
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

  const lim = r.object(root.limits, "limits");
  const limits: PackLimits = {
    maxCandidates: r.int(lim.maxCandidates, "limits.maxCandidates"),
    maxHistoryItems: r.int(lim.maxHistoryItems, "limits.maxHistoryItems"),
  };

  return {
    format: "molorec-pack",
    formatVersion,
    name: r.string(root.name, "name"),
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

/** Graph input/output names of the KV cache for layer `i` (transformers.js / Optimum naming). */
export const kvNames = {
  pastKey: (i: number) => `past_key_values.${i}.key`,
  pastValue: (i: number) => `past_key_values.${i}.value`,
  presentKey: (i: number) => `present.${i}.key`,
  presentValue: (i: number) => `present.${i}.value`,
};
