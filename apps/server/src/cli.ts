import { existsSync } from "node:fs";
import { delimiter, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { DEFAULT_REQUEST_LIMITS, isMolorecError, MolorecError } from "@molorec/core";
import type { NodeExecutionProvider } from "@molorec/runtime-node";
import { SERVER_DEFAULTS as D } from "./options.js";
import { handleSignals, PACK_HEADER, startServer, type MolorecServer, type PackConfig, type ServerOptions } from "./server.js";

const USAGE = `molorec-server — the MoLoRec recommender over HTTP (onnxruntime-node: CUDA or CPU)

Usage:
  molorec-server [--pack [NAME=]DIR ...] [options]

Packs:
  --pack [NAME=]DIR       a model pack to serve (repeat for several; the first is the default).
                          Default: $MOLOREC_PACKS (comma-separated), else $MOLOREC_PACK, else
                          packs/demo when present, else test/fixtures/tiny-pack.
                          A request picks a pack with the ${PACK_HEADER} header or ?pack=NAME;
                          otherwise its "domain" picks the pack that has it (the default pack first).

Server:
  --host HOST             interface to bind (default ${D.host}; $HOST)
  --port N                port (default ${D.port}; $PORT; 0 = any free port)
  --ep auto|cpu|cuda      execution provider (default auto: CUDA when installed, else CPU; $MOLOREC_EP)
  --threads N             CPU threads per model run (default: ONNX Runtime's, all cores)
  --prepack P             auto (default: on below 256 MiB of weights), on, off: repacked weights run
                          faster and hold a second copy of the weights in memory

Batching and back-pressure:
  --max-batch N           most requests per batched model pass (default ${D.maxBatch}; 1 = no batching)
  --max-wait-ms N         how long a batch waits for more requests when the model is idle (default ${D.maxWaitMs})
  --max-queue N           most waiting requests per pack; more get 503 + Retry-After (default ${D.maxQueue})
  --max-batch-rows N      rows of one candidate model run (default ${D.maxBatchRows})

Limits:
  --request-timeout-ms N  time to receive a request (slower clients get 408), and to answer a queued
                          one (default ${D.requestTimeoutMs})
  --shutdown-timeout-ms N how long SIGTERM/SIGINT wait for in-flight requests (default ${D.shutdownTimeoutMs})
  --shutdown-grace-ms N   how long a shutdown still accepts connections before it stops listening
                          (default ${D.shutdownGraceMs}; health answers 503 meanwhile)
  --max-body-bytes N      largest request body (default ${D.maxBodyBytes})
  --max-candidates N      stricter than the pack's limit
  --max-history N         stricter than the pack's limit
  --max-title-chars N     longest title (default ${DEFAULT_REQUEST_LIMITS.maxTitleChars})
  --max-connections N     most open connections (default ${D.maxConnections})

Routes: POST /v1/recommend, GET /v1/health, GET /v1/pack, GET /v1/packs, GET /metrics.
SIGTERM/SIGINT: stop accepting, finish in-flight requests, exit 0 (a second signal exits at once).`;

/** The repository root when run from apps/server/{src,dist}. */
const repoRoot = fileURLToPath(new URL("../../../", import.meta.url));

/** `packs/demo` when it holds a pack (cwd first, then the repository), else the fixture pack. */
export function defaultPackDirs(env: NodeJS.ProcessEnv = process.env, cwd = process.cwd()): string[] {
  const list = env.MOLOREC_PACKS ?? env.MOLOREC_PACK;
  if (list)
    return list
      .split(list.includes(",") ? "," : delimiter)
      .map((s) => s.trim())
      .filter(Boolean);
  for (const base of [cwd, repoRoot]) {
    const demo = join(base, "packs/demo");
    if (existsSync(join(demo, "molorec.json"))) return [demo];
  }
  return [join(repoRoot, "test/fixtures/tiny-pack")];
}

function parsePack(spec: string): PackConfig {
  const eq = spec.indexOf("=");
  // NAME=DIR, unless the "=" is part of a path (NAME has no path separators).
  if (eq > 0 && !/[\\/]/.test(spec.slice(0, eq))) return { name: spec.slice(0, eq), dir: resolve(spec.slice(eq + 1)) };
  return { dir: resolve(spec) };
}

function int(v: string | undefined, flag: string, min: number): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new MolorecError("INVALID_REQUEST", `${flag} must be an integer ≥ ${min}, not ${v}`);
  return n;
}

/** Parses the command line (and environment) into {@link ServerOptions}; null for --help. */
export function parseServerArgs(argv: string[], env: NodeJS.ProcessEnv = process.env): ServerOptions | null {
  const { values } = parseArgs({
    args: argv,
    allowPositionals: false,
    options: {
      pack: { type: "string", multiple: true },
      host: { type: "string" },
      port: { type: "string" },
      ep: { type: "string" },
      threads: { type: "string" },
      prepack: { type: "string" },
      "max-batch": { type: "string" },
      "max-wait-ms": { type: "string" },
      "max-queue": { type: "string" },
      "max-batch-rows": { type: "string" },
      "request-timeout-ms": { type: "string" },
      "shutdown-timeout-ms": { type: "string" },
      "shutdown-grace-ms": { type: "string" },
      "max-body-bytes": { type: "string" },
      "max-candidates": { type: "string" },
      "max-history": { type: "string" },
      "max-title-chars": { type: "string" },
      "max-connections": { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) return null;
  const ep = values.ep ?? env.MOLOREC_EP ?? D.executionProvider;
  if (!["auto", "cpu", "cuda"].includes(ep)) throw new MolorecError("INVALID_REQUEST", `--ep must be auto, cpu or cuda, not ${ep}`);
  const packs = (values.pack?.length ? values.pack : defaultPackDirs(env)).map(parsePack);
  const limits: ServerOptions["limits"] = {};
  const maxCandidates = int(values["max-candidates"], "--max-candidates", 1);
  const maxHistoryItems = int(values["max-history"], "--max-history", 1);
  const maxTitleChars = int(values["max-title-chars"], "--max-title-chars", 1);
  if (maxCandidates !== undefined) limits.maxCandidates = maxCandidates;
  if (maxHistoryItems !== undefined) limits.maxHistoryItems = maxHistoryItems;
  if (maxTitleChars !== undefined) limits.maxTitleChars = maxTitleChars;
  const opts: ServerOptions = {
    packs,
    host: values.host ?? env.HOST ?? D.host,
    port: int(values.port ?? env.PORT, "--port", 0) ?? D.port,
    executionProvider: ep as NodeExecutionProvider,
    limits,
  };
  const set = <K extends keyof ServerOptions>(k: K, v: ServerOptions[K] | undefined) => {
    if (v !== undefined) opts[k] = v;
  };
  set("threads", int(values.threads, "--threads", 1));
  if (values.prepack !== undefined) {
    if (!["auto", "on", "off"].includes(values.prepack))
      throw new MolorecError("INVALID_REQUEST", `--prepack must be auto, on or off, not ${values.prepack}`);
    opts.prepack = values.prepack === "auto" ? "auto" : values.prepack === "on";
  }
  set("maxBatch", int(values["max-batch"], "--max-batch", 1));
  set("maxWaitMs", int(values["max-wait-ms"], "--max-wait-ms", 0));
  set("maxQueue", int(values["max-queue"], "--max-queue", 0));
  set("maxBatchRows", int(values["max-batch-rows"], "--max-batch-rows", 1));
  set("requestTimeoutMs", int(values["request-timeout-ms"], "--request-timeout-ms", 1));
  set("shutdownTimeoutMs", int(values["shutdown-timeout-ms"], "--shutdown-timeout-ms", 0));
  set("shutdownGraceMs", int(values["shutdown-grace-ms"], "--shutdown-grace-ms", 0));
  set("maxBodyBytes", int(values["max-body-bytes"], "--max-body-bytes", 1));
  set("maxConnections", int(values["max-connections"], "--max-connections", 1));
  return opts;
}

/** Starts the server from a command line and installs the signal handlers; null after --help. */
export async function main(argv: string[]): Promise<MolorecServer | null> {
  const options = parseServerArgs(argv);
  if (!options) {
    console.log(USAGE);
    return null;
  }
  const server = await startServer(options);
  handleSignals(server);
  return server;
}

/** The `molorec-server` binary: exit 1 with the coded error's message on failure, 2 on bad flags. */
export function runCli(argv: string[]): void {
  main(argv).catch((e: unknown) => {
    if (isMolorecError(e)) {
      console.error(`molorec-server: ${e.code}: ${e.message}`);
      process.exit(e.code === "INVALID_REQUEST" ? 2 : 1);
    }
    if ((e as { code?: string })?.code?.startsWith?.("ERR_PARSE_ARGS")) {
      console.error(`molorec-server: ${(e as Error).message}\n\n${USAGE}`);
      process.exit(2);
    }
    console.error(e);
    process.exit(1);
  });
}
