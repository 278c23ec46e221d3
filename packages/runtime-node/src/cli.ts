import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { parseArgs } from "node:util";
import {
  createRecommender,
  CALIBRATION_OBJECTIVES,
  evaluatePolicies,
  type CalibrationObjective,
  type EntropyObjective,
  isMolorecError,
  MolorecError,
  parseMixture,
  type EvalCase,
  type MixturePolicy,
  type RecommendResponse,
} from "@molorec/core";
import { loadPackFromDir } from "./dir-source.js";
import { progressBar, readJsonl } from "./jsonl.js";
import { nodeBackend, type NodeExecutionProvider } from "./node-backend.js";

const USAGE = `molorec — LLM-based recommendation with mixed LoRA adapters (onnxruntime-node)

Usage:
  molorec recommend --pack DIR [--request FILE|-] [options]   rank candidates for one request
  molorec eval --pack DIR --domain NAME (--cases FILE | --data DIR --split warm|cold)
                                                               NDCG@1, NDCG@3, HR@3 per mixture
  molorec calibrate --pack DIR --domain NAME --data DIR [--n 64] [--write]
                                                               entropy-minimising λ on unlabeled prompts
  molorec info --pack DIR                                      summarise a model pack

recommend options:
  --request FILE   JSON request: {"history": [...titles], "candidates": [...titles],
                   "domain"?: string, "mixture"?: policy, "topK"?: number}. "-" reads stdin.
  --domain NAME    override the request's domain
  --mixture M      base | general | domain | wa | calibrated | adaptive | a λ in [0,1] | '{"lambda":0.3}'
  --top K          print only the best K
  --json           print the response as JSON
  --ep EP          execution provider: auto (default), cpu, cuda
  --threads N      CPU threads per model run (default: onnxruntime's, all cores; on a machine
                   busy with other work, 1 is often faster: see packages/runtime-node/README.md)
  --prepack P      auto (default: on below 256 MiB of weights), on, off: repacked weights run
                   faster and hold a second copy of the weights in memory
  --objective O    what adaptive and calibrate minimise: tokens (default; mean next-token entropy
                   along the candidate titles), answer (the same along the top-ranked candidate
                   only) or candidates (entropy over the candidates' scores); calibrate also
                   takes information (maximise the mutual information between history and pick)

eval options:
  --mixture LIST   comma-separated policies (default general,domain,wa,calibrated,adaptive)
  --limit N        evaluate the first N cases only
  --out FILE       also write the results as JSON

calibrate: reads DIR/valid.jsonl (only history and candidates: labels are never used), searches
λ ∈ [0,1] minimising the mean entropy objective (--objective), or with --objective information
maximising the mutual information between a request's history and the candidate it picks (groups
of 16 requests scored on shared candidates; suits adapters trained with a ranking loss); --write
stores it in the pack's molorec.json as the domain's calibratedLambda.

The pack may also be given by the MOLOREC_PACK environment variable.`;

/** `--mixture`: a policy name, a decimal λ, or the request's JSON form `{"lambda": 0.5}`. */
function mixtureArg(v: string): MixturePolicy {
  if (!v.trimStart().startsWith("{")) return parseMixture(v, "--mixture");
  let parsed: unknown;
  try {
    parsed = JSON.parse(v);
  } catch (e) {
    throw new MolorecError("INVALID_MIXTURE", `--mixture ${v} is not valid JSON: ${(e as Error).message}`);
  }
  return parseMixture(parsed, "--mixture");
}

async function readRequest(path: string | undefined): Promise<unknown> {
  let text: string;
  if (path === undefined || path === "-") {
    if (path === undefined && process.stdin.isTTY)
      throw new MolorecError("INVALID_REQUEST", "no request: pass --request FILE, or pipe JSON on stdin");
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
  console.log(
    `entropy: ${res.entropy.toFixed(4)} nats   prompt: ${res.promptTokens} tokens${res.droppedHistoryItems ? `   (${res.droppedHistoryItems} oldest history items left out)` : ""}`,
  );
  console.log("");
  console.log(" rank   score     prob   title");
  res.ranked.forEach((r, i) => {
    console.log(
      `${String(i + 1).padStart(5)}  ${r.score.toFixed(4).padStart(7)}  ${(r.probability * 100).toFixed(1).padStart(5)}%  ${r.title}`,
    );
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
      cases: { type: "string" },
      data: { type: "string" },
      split: { type: "string" },
      limit: { type: "string" },
      n: { type: "string", default: "64" },
      write: { type: "boolean", default: false },
      json: { type: "boolean", default: false },
      out: { type: "string" },
      ep: { type: "string", default: "auto" },
      threads: { type: "string" },
      prepack: { type: "string", default: "auto" },
      objective: { type: "string", default: "tokens" },
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
  checkOptions(command, values);
  if (command === "info") return infoCommand(packDir);
  if (command === "eval") return evalCommand(packDir, values);
  if (command === "calibrate") return calibrateCommand(packDir, values);
  if (command === "recommend") return recommendCommand(packDir, values);
  console.error(`molorec: unknown command "${command}"\n\n${USAGE}`);
  return 2;
}

/** Options every command reads, checked before any pack is loaded. */
function checkOptions(command: string, values: Values): void {
  if (!["auto", "cpu", "cuda"].includes(values.ep as string))
    throw new MolorecError("INVALID_REQUEST", `--ep must be auto, cpu or cuda, not ${values.ep}`);
  if (values.threads !== undefined && !/^[1-9]\d{0,3}$/.test(values.threads as string))
    throw new MolorecError("INVALID_REQUEST", `--threads must be a whole number of threads ≥ 1, not ${values.threads}`);
  if (!["auto", "on", "off"].includes(values.prepack as string))
    throw new MolorecError("INVALID_REQUEST", `--prepack must be auto, on or off, not ${values.prepack}`);
  if (!CALIBRATION_OBJECTIVES.includes(values.objective as CalibrationObjective))
    throw new MolorecError("INVALID_REQUEST", `--objective must be one of ${CALIBRATION_OBJECTIVES.join(", ")}, not ${values.objective}`);
  if (values.objective === "information" && command !== "calibrate") {
    throw new MolorecError(
      "INVALID_REQUEST",
      `--objective information is for calibrate only (it compares many requests; adaptive chooses λ per request): use tokens, answer or candidates with ${command}`,
    );
  }
}

async function infoCommand(packDir: string): Promise<number> {
  const m = (await loadPackFromDir(packDir)).manifest;
  const adapters = Object.fromEntries(Object.entries(m.adapters).map(([k, a]) => [k, { rank: a.rank, targets: a.targetModules }]));
  const info = {
    name: m.name,
    formatVersion: m.formatVersion,
    model: m.model,
    adapters,
    domains: m.domains,
    defaultDomain: m.defaultDomain,
    limits: m.limits,
  };
  console.log(JSON.stringify(info, null, 2));
  return 0;
}

async function recommendCommand(packDir: string, values: Values): Promise<number> {
  const body = (await readRequest(values.request as string | undefined)) as Record<string, unknown>;
  if (typeof body === "object" && body !== null && !Array.isArray(body)) {
    if (values.domain) body.domain = values.domain;
    if (values.mixture) body.mixture = mixtureArg(values.mixture as string);
    if (values.top) body.topK = Number(values.top);
  }
  const rec = await openRecommender(packDir, values);
  try {
    const res = await rec.recommend(body);
    if (values.json) console.log(JSON.stringify(res, null, 2));
    else printTable(res, rec.backendName);
  } finally {
    await rec.close();
  }
  return 0;
}

type Values = Record<string, string | boolean | undefined>;

function positiveInt(v: string | boolean | undefined, flag: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new MolorecError("INVALID_REQUEST", `${flag} must be a positive integer, not ${v}`);
  return n;
}

async function openRecommender(packDir: string, values: Values) {
  const pack = await loadPackFromDir(packDir);
  return createRecommender({
    backend: nodeBackend({
      executionProvider: values.ep as NodeExecutionProvider,
      ...(values.threads === undefined ? {} : { intraOpNumThreads: Number(values.threads) }),
      prepack: values.prepack === "auto" ? "auto" : values.prepack === "on",
    }),
    pack,
    // `information` is a calibration objective only; the recommender keeps the default for the rest.
    entropyObjective: values.objective === "information" ? "tokens" : (values.objective as EntropyObjective),
  });
}

function casesPath(values: Values, split: string): string {
  if (typeof values.cases === "string") return values.cases;
  if (typeof values.data !== "string")
    throw new MolorecError("INVALID_REQUEST", "pass --cases FILE, or --data DIR (a prepared domain folder)");
  return join(values.data, split === "valid" ? "valid.jsonl" : `test_${split}.jsonl`);
}

async function evalCommand(packDir: string, values: Values): Promise<number> {
  const split = (values.split as string | undefined) ?? "warm";
  if (!["warm", "cold", "valid"].includes(split))
    throw new MolorecError("INVALID_REQUEST", `--split must be warm, cold or valid, not ${split}`);
  const policies = String(values.mixture ?? "general,domain,wa,calibrated,adaptive")
    .split(",")
    .map((p) => parseMixture(p.trim(), "--mixture")) as MixturePolicy[];
  const path = casesPath(values, split);
  let cases = await readJsonl<EvalCase>(path);
  const limit = positiveInt(values.limit, "--limit");
  if (limit !== undefined) cases = cases.slice(0, limit);
  const rec = await openRecommender(packDir, values);
  try {
    const domain = (values.domain as string | undefined) ?? rec.pack.manifest.defaultDomain;
    const started = Date.now();
    const results = await evaluatePolicies(rec, cases, { domain, policies, onProgress: progressBar(`eval ${domain} ${split}`) });
    const seconds = (Date.now() - started) / 1000;
    console.log(
      `\n${rec.pack.manifest.name} · domain ${domain} · ${split} · ${cases.length} cases · ${seconds.toFixed(1)} s (${rec.backendName})\n`,
    );
    console.log("policy              λ     NDCG@1  NDCG@3    HR@3  entropy");
    for (const r of results) {
      console.log(
        `${r.policy.padEnd(16)} ${r.lambda === null ? "   —" : r.lambda.toFixed(2).padStart(5)}  ${r.ndcg1.toFixed(4)}  ${r.ndcg3.toFixed(4)}  ${r.hr3.toFixed(4)}  ${r.entropy.toFixed(3)}`,
      );
    }
    if (typeof values.out === "string") {
      await writeFile(
        values.out,
        `${JSON.stringify({ pack: rec.pack.manifest.name, domain, split, cases: cases.length, seconds, backend: rec.backendName, results }, null, 2)}\n`,
      );
    }
  } finally {
    await rec.close();
  }
  return 0;
}

async function calibrateCommand(packDir: string, values: Values): Promise<number> {
  const domain = values.domain as string | undefined;
  if (!domain) throw new MolorecError("INVALID_REQUEST", "--domain is required: the pack domain to calibrate");
  const n = positiveInt(values.n, "--n")!;
  const rows = (await readJsonl<EvalCase>(casesPath(values, "valid"))).slice(0, n);
  // Unlabeled: the label is dropped before anything sees the requests.
  const requests = rows.map((r) => ({ history: r.history, candidates: r.candidates }));
  const rec = await openRecommender(packDir, values);
  try {
    const started = Date.now();
    // One bar per batch of λ values (the grid, then each refinement): the search's length is not known ahead.
    let bar: ((done: number, total: number) => void) | undefined;
    const res = await rec.calibrate(domain, requests, {
      objective: values.objective as CalibrationObjective,
      onProgress: (p) => {
        bar ??= progressBar(`calibrate ${domain}: ${p.lambdas} λ values (${p.lambdasDone} before)`);
        bar(p.scored, p.requests);
        if (p.scored === p.requests) bar = undefined;
      },
    });
    const info = res.objectiveKind === "information";
    // The search minimises; for `information` that is minus the mutual information, printed as MI.
    const shown = (o: number) => (info ? `mutual information ${(-o).toFixed(4)}` : `entropy ${o.toFixed(4)}`);
    console.log(
      `calibrated ${domain} on ${requests.length} unlabeled prompts in ${((Date.now() - started) / 1000).toFixed(1)} s: λ = ${res.lambda.toFixed(3)} (${info ? "" : `mean ${res.objectiveKind} `}${shown(res.objective)})`,
    );
    for (const e of res.evaluated) console.log(`  λ ${e.lambda.toFixed(3)}  ${shown(e.objective)}`);
    if (values.write) {
      const file = join(packDir, "molorec.json");
      const manifest = JSON.parse(await readFile(file, "utf8"));
      manifest.domains[domain].calibratedLambda = Math.round(res.lambda * 1e4) / 1e4;
      await writeFile(file, `${JSON.stringify(manifest, null, 2)}\n`);
      console.log(`wrote calibratedLambda to ${file}`);
    }
    if (typeof values.out === "string")
      await writeFile(
        values.out,
        `${JSON.stringify({ domain, prompts: requests.length, entropyObjective: res.objectiveKind, ...res }, null, 2)}\n`,
      );
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
