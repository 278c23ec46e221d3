export type { InferenceBackend, InferenceSession, SessionOptions } from "./backend.js";
export { scoreBatchedJobs, type BatchScoreResult, type BatchScoringOptions } from "./batch-scoring.js";
export { checkScoreJob, type ScoreJob, type ScoreResult } from "./scoring-job.js";
export { MolorecError, isMolorecError, httpStatusForCode, type MolorecErrorCode, type MolorecErrorOptions } from "./errors.js";
export { searchLambda, type LambdaSearchOptions, type LambdaSearchResult } from "./lambda-search.js";
export { LoraMixer, type AdapterWeights } from "./lora-mixture.js";
export {
  PACK_FORMAT_VERSION,
  kvNames,
  parseManifest,
  type AdapterEntry,
  type DomainEntry,
  type LoraTarget,
  type ModelConfig,
  type PackLimits,
  type PackManifest,
  type PromptSpec,
} from "./manifest.js";
export { entropy, logitsEntropy, logSoftmaxAt, rankByScore, softmax } from "./math.js";
export { RankingMetrics, hitRateAtK, ndcgAtK, rankOf } from "./metrics.js";
export { loadPack, memorySource, parseAdapter, type LoadedAdapter, type ModelPack, type PackSource } from "./pack.js";
export { buildCandidate, buildPrompt, titleIds, type PromptTokens } from "./prompt.js";
export {
  createRecommender,
  type LambdaScores,
  type RankedCandidate,
  type RecommendResponse,
  type Recommender,
  type RecommenderOptions,
} from "./recommender.js";
export {
  calibrateLambda,
  type CalibrationOptions,
  type CalibrationResult,
  type MixtureScorer,
  type UnlabeledRequest,
} from "./calibration.js";
export {
  CALIBRATION_OBJECTIVES,
  ENTROPY_OBJECTIVES,
  informationGroups,
  negativeInformation,
  objectiveValues,
  type CalibrationObjective,
  type EntropyObjective,
  type InformationGroup,
} from "./objectives.js";
export {
  POLICIES,
  POLICY_NAMES,
  chooseRow,
  isPolicyName,
  mixtureWeights,
  policyName,
  resolveDomain,
  resolvePolicy,
  type MixtureSource,
  type NamedPolicy,
  type PolicySpec,
  type ResolvedMixture,
  type ResolvedPolicy,
} from "./policies.js";
export {
  DEFAULT_REQUEST_LIMITS,
  parseMixture,
  parseRecommendRequest,
  type MixturePolicy,
  type RecommendRequest,
  type RequestLimits,
} from "./request.js";
export { parseSafetensors, type NamedTensor } from "./safetensors.js";
export { scoreCandidates, type ScoringOptions, type ScoringStrategy } from "./scoring.js";
export { createTextEncoder, type TextEncoder } from "./tokenizer.js";
export { int64, tensor, type TensorDataMap, type TensorLike, type TensorType } from "./tensor.js";
export { evaluatePolicies, type EvalCase, type PolicyMetrics } from "./evaluation.js";
export {
  adaptOrtSession,
  checkFeeds,
  ortModelOptions,
  toOrtFeeds,
  type AdaptOptions,
  type OrtModelOptions,
  type OrtSessionLike,
  type OrtTensorConstructor,
} from "./ort-session.js";
export { openFirstProvider, type OpenOptions, type ProviderCandidate, type ProviderChoice, type ProviderFailure } from "./providers.js";
