export { workerBackend, sessionsCreatedInIsolate, wasmHeapBytes, type WorkerBackend, type WorkerBackendOptions } from "./worker-backend.js";
export {
  assetsSource,
  bundledSource,
  packSourceFromSpec,
  r2Source,
  type AssetsSourceOptions,
  type FetcherLike,
  type PackBindings,
  type R2BucketLike,
} from "./sources.js";
export {
  cachedRecommender,
  openRecommender,
  type GetRecommender,
  type OpenRecommenderOptions,
  type RecommenderCacheStats,
  type WaitUntil,
} from "./recommender-cache.js";
