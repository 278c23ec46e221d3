/**
 * `@molorec/core`: what an application needs to rank candidates with a model pack on some
 * runtime — packs, the recommender, requests and responses, errors, and the backend interface
 * runtimes implement. Runtime packages, the benchmark and the tests reach the engine's parts
 * through `@molorec/core/internal`, which has no stability promise.
 */
export type { InferenceBackend, InferenceSession, SessionOptions } from "./backend.js";
export type { CalibrationOptions, CalibrationProgress, CalibrationResult } from "./calibration.js";
export { MolorecError, isMolorecError, httpStatusForCode, type MolorecErrorCode, type MolorecErrorOptions } from "./errors.js";
export { evaluatePolicies, type EvalCase, type PolicyMetrics } from "./evaluation.js";
export type { LambdaSearchOptions, LambdaSearchResult } from "./lambda-search.js";
export type { AdapterWeights } from "./lora-mixture.js";
export {
  PACK_FORMAT_VERSION,
  type AdapterEntry,
  type DomainEntry,
  type LoraTarget,
  type ModelConfig,
  type PackLimits,
  type PackManifest,
  type PromptSpec,
} from "./manifest.js";
export { CALIBRATION_OBJECTIVES, ENTROPY_OBJECTIVES, type CalibrationObjective, type EntropyObjective } from "./objectives.js";
export { loadPack, memorySource, modelBytes, type LoadedAdapter, type ModelPack, type PackFile, type PackSource } from "./pack.js";
export type { RandomAccessFile } from "./onnx-check.js";
export { POLICY_NAMES, type MixtureSource, type NamedPolicy, type ResolvedMixture } from "./policies.js";
export {
  createRecommender,
  type LambdaScores,
  type RankedCandidate,
  type RecommendResponse,
  type Recommender,
  type RecommenderOptions,
} from "./recommender.js";
export {
  DEFAULT_REQUEST_LIMITS,
  parseMixture,
  parseRecommendRequest,
  type MixturePolicy,
  type RecommendRequest,
  type RequestLimits,
} from "./request.js";
export type { ScoringStrategy } from "./scoring.js";
export type { TensorDataMap, TensorLike, TensorType } from "./tensor.js";
export type { TextEncoder } from "./tokenizer.js";
