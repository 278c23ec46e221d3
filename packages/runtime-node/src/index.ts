export {
  nodeBackend,
  cudaProviderInstalled,
  PREPACK_AUTO_LIMIT,
  ortBinaryDir,
  type NodeBackendOptions,
  type NodeExecutionProvider,
} from "./node-backend.js";
export { dirSource, loadPackFromDir } from "./dir-source.js";
