export { nodeBackend, cudaProviderInstalled, ortBinaryDir, type NodeBackendOptions, type NodeExecutionProvider } from "./node-backend.js";
export { dirSource, loadPackFromDir } from "./dir-source.js";
