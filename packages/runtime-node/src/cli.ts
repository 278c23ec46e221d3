import { readFile } from "node:fs/promises";
import { parseArgs } from "node:util";
import { createRecommender, isMolorecError, MolorecError, parseMixture, type RecommendResponse } from "@molorec/core";
import { loadPackFromDir } from "./dir-source.js";
import { nodeBackend, type NodeExecutionProvider } from "./node-backend.js";

const USAGE = `molorec — LLM-based recommendation with mixed LoRA adapters (onnxruntime-node)

Usage:
  molorec recommend --pack DIR [--request FILE|-] [options]   rank candidates for one request
  molorec info --pack DIR                                      summarise a model pack

recommend options:
  --request FILE   JSON request: {"history": [...titles], "candidates": [...titles],
                   "domain"?: string, "mixture"?: policy, "topK"?: number}. "-" reads stdin.
  --domain NAME    override the request's domain
  --mixture M      base | general | domain | wa | calibrated | adaptive | a λ in [0,1]
  --top K          print only the best K
  --json           print the response as JSON
  --ep EP          execution provider: auto (default), cpu, cuda

The pack may also be given by the MOLOREC_PACK environment variable.`;

async function readRequest(path: string | undefined): Promise<unknown> {
  let text: string;
  if (path === undefined || path === "-") {
    if (path === undefined && process.stdin.isTTY) throw new MolorecError("INVALID_REQUEST", "no request: pass --request FILE, or pipe JSON on stdin");
    const chunks: Buffer[] = [];
    for await (const c of process.stdin) chunks.push(c as Buffer);
    text = Buffer.concat(chunks).toString("utf8");
  } else {
    text = await readFile(path, "utf8").catch((e) => {
      throw new MolorecError("INVALID_REQUEST", `cannot read request file ${path}: ${(e as Error).message}`);
    });
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new MolorecError("INVALID_REQUEST", `request is not valid JSON: ${(e as Error).message}`);
  }
}

function printTable(res: RecommendResponse, backend: string): void {
  const lam = res.mixture.lambda === null ? "—" : res.mixture.lambda.toFixed(3);
  console.log(`domain: ${res.domain ?? "(none)"}   mixture: ${res.mixture.policy} (λ=${lam}, ${res.mixture.source})   backend: ${backend}`);
  console.log(`entropy: ${res.entropy.toFixed(4)} nats   prompt: ${res.promptTokens} tokens${res.droppedHistoryItems ? `   (${res.droppedHistoryItems} oldest history items left out)` : ""}`);
  console.log("");
  console.log(" rank   score     prob   title");
  res.ranked.forEach((r, i) => {
    console.log(`${String(i + 1).padStart(5)}  ${r.score.toFixed(4).padStart(7)}  ${(r.probability * 100).toFixed(1).padStart(5)}%  ${r.title}`);
  });
}

export async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      pack: { type: "string" },
      request: { type: "string" },
      domain: { type: "string" },
      mixture: { type: "string" },
      top: { type: "string" },
      json: { type: "boolean", default: false },
      ep: { type: "string", default: "auto" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  const command = positionals[0];
  if (values.help || !command) {
    console.log(USAGE);
    return command || values.help ? 0 : 2;
  }
  const packDir = values.pack ?? process.env.MOLOREC_PACK;
  if (!packDir) throw new MolorecError("INVALID_REQUEST", "no pack: pass --pack DIR (the folder holding molorec.json) or set MOLOREC_PACK");
  if (!["auto", "cpu", "cuda"].includes(values.ep!)) throw new MolorecError("INVALID_REQUEST", `--ep must be auto, cpu or cuda, not ${values.ep}`);

  if (command === "info") {
    const pack = await loadPackFromDir(packDir);
    const m = pack.manifest;
    console.log(JSON.stringify({ name: m.name, formatVersion: m.formatVersion, model: m.model, adapters: Object.fromEntries(Object.entries(m.adapters).map(([k, a]) => [k, { rank: a.rank, targets: a.targetModules }])), domains: m.domains, defaultDomain: m.defaultDomain, limits: m.limits }, null, 2));
    return 0;
  }
  if (command !== "recommend") {
    console.error(`molorec: unknown command "${command}"\n\n${USAGE}`);
    return 2;
  }
  const body = (await readRequest(values.request)) as Record<string, unknown>;
  if (typeof body === "object" && body !== null && !Array.isArray(body)) {
    if (values.domain) body.domain = values.domain;
    if (values.mixture) body.mixture = parseMixture(values.mixture, "--mixture");
    if (values.top) body.topK = Number(values.top);
  }
  const pack = await loadPackFromDir(packDir);
  const backend = nodeBackend({ executionProvider: values.ep as NodeExecutionProvider });
  const rec = await createRecommender({ backend, pack });
  try {
    const res = await rec.recommend(body);
    if (values.json) console.log(JSON.stringify(res, null, 2));
    else printTable(res, rec.backendName);
  } finally {
    await rec.close();
  }
  return 0;
}

export function runCli(argv: string[]): void {
  main(argv).then(
    (code) => {
      process.exitCode = code;
    },
    (e: unknown) => {
      if (isMolorecError(e)) {
        console.error(`molorec: ${e.code}: ${e.message}`);
        process.exitCode = 1;
      } else {
        console.error(`molorec: ${(e as Error)?.stack ?? e}`);
        process.exitCode = 70;
      }
    },
  );
}
