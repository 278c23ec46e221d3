export declare const workerDir: string;
export declare function wranglerEnv(extra?: Record<string, string>): NodeJS.ProcessEnv;
export declare function freePort(): Promise<number>;
export declare function runWrangler(args: string[], options?: { timeoutMs?: number; env?: Record<string, string> }): Promise<string>;
export declare function findWorkerd(rootPid: number): number | null;
export interface IsolateHeap {
  usedMiB: number;
  totalMiB: number;
  backingStorageMiB: number;
}
export declare function isolateHeapOf(inspectorPort: number, timeoutMs?: number): Promise<IsolateHeap>;
/** A server-to-client WebSocket frame reader: returns the text messages each chunk completes. */
export declare function webSocketFrames(): (chunk: Buffer) => string[];
export declare function memoryOf(pid: number): { rssMiB: number; peakRssMiB: number };
export interface WranglerDev {
  url: string;
  port: number;
  pid: number;
  workerdPid(): number | null;
  /** The Worker isolate's V8 heap over the inspector (the wasm memory is not in it). */
  isolateHeap(): Promise<IsolateHeap>;
  output(): string;
  stop(): Promise<void>;
}
export declare function configForPack(packDir: string, dir: string): string;
export declare function configForR2Pack(prefix: string, dir: string): string;
export declare function putPackInLocalR2(packDir: string, prefix: string, statePath: string, configPath: string): Promise<void>;
export declare function startWranglerDev(options?: {
  vars?: Record<string, string>;
  configPath?: string;
  environment?: string;
  statePath?: string;
  readyTimeoutMs?: number;
  maxLifetimeMs?: number;
  log?: (chunk: string) => void;
}): Promise<WranglerDev>;
