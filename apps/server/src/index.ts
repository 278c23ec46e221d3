export { RequestBatcher, type BatcherOptions, type RejectReason } from "./batcher.js";
export { defaultPackDirs, main, parseServerArgs, runCli } from "./cli.js";
export { resolveServerOptions, SERVER_DEFAULTS, type ResolvedServerOptions } from "./options.js";
export { Counter, Gauge, Histogram, PROMETHEUS_CONTENT_TYPE, Registry, serverMetrics, type ServerMetrics } from "./metrics.js";
export {
  handleSignals,
  PACK_HEADER,
  routeRequest,
  startServer,
  type AppEnv,
  type MolorecServer,
  type PackConfig,
  type ServedPack,
  type ServerOptions,
  type SignalOptions,
} from "./server.js";
