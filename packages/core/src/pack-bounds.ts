/**
 * What a manifest may declare. The caps sit well above real models (vocabularies of ~300 k
 * tokens, ~100 layers, hidden sizes of ~16 k, context windows of ~1 M positions) and far below
 * the numbers that made a service spin or exhaust memory before its first answer (a vocabulary of
 * 10¹², 10⁹ layers). A real model past one of them needs the cap raised here, on purpose.
 */
export const PACK_BOUNDS = {
  /** `model.numLayers`. */
  layers: 256,
  /** `model.numHeads`, `model.numKvHeads`. */
  heads: 1024,
  /** `model.headDim`. */
  headDim: 1024,
  /** `model.hiddenSize`. */
  hiddenSize: 65_536,
  /** `model.vocabSize`. */
  vocabSize: 1_048_576,
  /** `model.maxPositions`. */
  positions: 2_097_152,
  /** `inFeatures` / `outFeatures` of one LoRA target. */
  features: 1_048_576,
  /** Entries of `lora.targets`. */
  loraTargets: 8192,
  /**
   * Σ (inFeatures + outFeatures) over the LoRA targets: the floats of a rank-1 LoRA feed of every
   * target, which every model run carries (2²⁷ floats, 512 MiB).
   */
  loraFeedFloats: 2 ** 27,
  /** An adapter's `rank`. */
  rank: 4096,
  /** An adapter's `alpha` and `scaling`. */
  scaling: 1e6,
  /** Entries of `adapters`. */
  adapters: 256,
  /** Entries of `domains`. */
  domains: 4096,
  /** `limits.maxCandidates`. */
  candidates: 4096,
  /** `limits.maxHistoryItems`. */
  historyItems: 4096,
  /** Characters of an adapter or domain name, and of the pack's name. */
  nameLength: 256,
  /** Entries of `files.modelExternalData`. */
  externalDataFiles: 4096,
  /** Characters of a file path inside the pack. */
  pathLength: 1024,
} as const;

/**
 * Why `path` is not a plain relative path inside a pack, or null when it is one. Paths are
 * resolved against a folder, an R2 prefix or a URL, so besides `..` and absolute paths, anything
 * a URL would read otherwise is refused: `%` escapes (`%2e%2e` is `..` to a URL), `:` (a
 * scheme: `https:` leaves the pack's origin), `?`, `#`, backslashes and control characters.
 */
export function packPathProblem(path: string): string | null {
  if (path.length === 0 || path.length > PACK_BOUNDS.pathLength) return `must be 1 to ${PACK_BOUNDS.pathLength} characters long`;
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what it looks for
  if (/[\\:%?#\u0000-\u001f\u007f]/.test(path)) return "must not contain \\ : % ? # or control characters";
  const parts = path.split("/");
  if (parts.some((p) => p === "" || p === "." || p === ".."))
    return "must be a relative path inside the pack (no leading /, no empty, . or .. segments)";
  return null;
}
