/**
 * `@molorec/core/internal`: the engine's parts, for runtime packages (onnxruntime glue, provider
 * fallback), the benchmark and the tests (scoring, planning, prompts, LoRA feeds, math). No
 * stability promise: these change with the engine. Applications use `@molorec/core`.
 */
export { scoreBatchedJobs, type BatchScoreResult, type BatchScoringOptions } from "./batch-scoring.js";
export { calibrateLambda, type MixtureScorer, type UnlabeledRequest } from "./calibration.js";
export { searchLambda } from "./lambda-search.js";
export { LoraMixer } from "./lora-mixture.js";
export { checkGraphNames, expectedInputs, expectedOutputs, probeGraph, validateSession } from "./graph-check.js";
export { kvNames, parseManifest } from "./manifest.js";
export { entropy, logitsEntropy, logSoftmaxAt, logSumExp, rankByScore, softmax } from "./math.js";
export { RankingMetrics, hitRateAtK, ndcgAtK, rankOf } from "./metrics.js";
export { scoreNaive } from "./naive-scoring.js";
export { checkOnnxModel } from "./onnx-check.js";
export { hasOwn, ownEntry } from "./own.js";
export { PACK_BOUNDS, packPathProblem } from "./pack-bounds.js";
export {
  checkObjective,
  informationGroups,
  needsTokenEntropies,
  negativeInformation,
  objectiveValues,
  type InformationGroup,
} from "./objectives.js";
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
export { parseAdapter } from "./pack.js";
export {
  POLICIES,
  chooseRow,
  isPolicyName,
  mixtureWeights,
  policyName,
  resolveDomain,
  resolvePolicy,
  type PolicyContext,
  type PolicyRow,
  type PolicySpec,
  type ResolvedPolicy,
} from "./policies.js";
export { buildCandidate, buildPrompt, titleIds, type PromptTokens } from "./prompt.js";
export { openFirstProvider, type OpenOptions, type ProviderCandidate, type ProviderChoice, type ProviderFailure } from "./providers.js";
export { adapterSetKey, prepareRequest, recommendMany, type Prepared, type RequestEnv } from "./recommend-requests.js";
export { parseSafetensors, type NamedTensor } from "./safetensors.js";
export { scoreCandidates, type ScoringOptions } from "./scoring.js";
export { type CacheSlot, type FeedContext, type FirstToken, type PromptCache, type SuffixRow, feedContext } from "./scoring-feeds.js";
export { checkScoreJob, type ScoreJob, type ScoreResult } from "./scoring-job.js";
export {
  GROUPED_PREFERENCE,
  RUN_COST_TOKENS,
  planGroupedRuns,
  planPerRowRuns,
  planPromptRuns,
  planRuns,
  planScoring,
  tokenCosts,
  type CandidateRow,
  type CandidateRun,
  type PlanInput,
  type PlanLimits,
  type PromptRun,
  type ScoringPlan,
  type Span,
  type TokenCosts,
} from "./scoring-plan.js";
export { int64, tensor } from "./tensor.js";
export { createTextEncoder, maxTokenId } from "./tokenizer.js";
