export {
  webBackend,
  type BackendFailure,
  type WebBackend,
  type WebBackendInfo,
  type WebBackendOptions,
  type WebDevice,
} from "./web-backend.js";
export {
  PACK_CACHE_NAME,
  clearPackCache,
  contentVersion,
  fetchSource,
  loadPackFromUrl,
  type FetchSourceOptions,
  type PackLoadStats,
  type PackProgress,
} from "./fetch-source.js";
export {
  describeAdapter,
  probeWebGpu,
  type GpuAdapterLike,
  type GpuLike,
  type WebGpuAdapterInfo,
  type WebGpuProbe,
} from "./webgpu-probe.js";
export { describeWebGpuBlockers, webGpuBlockers, type WebGpuBlocker } from "./webgpu-compat.js";
