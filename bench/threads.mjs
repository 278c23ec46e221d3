#!/usr/bin/env node
// How many CPU threads a pack wants on this machine: one Node process per thread count, each with
// the pack open, answering the same request in turns (round r: every process once), and the median
// per thread count. Also onnxruntime's thread pool without spinning (idle threads sleep), which is
// what a machine busy with other work prefers.
//
//   pnpm build && node bench/threads.mjs [--pack DIR] [--request FILE] [--threads 1,2] [--rounds 7]
//   e.g. node bench/threads.mjs --pack artifacts/smollm2/fp32 --request examples/request-base.json
import { spawn } from "node:child_process";
import { createRequire } from "node:module";
import { availableParallelism, cpus, loadavg } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { headerUsage, median, parseCli } from "./lib/util.mjs";

const root = fileURLToPath(new URL("..", import.meta.url));
const values = parseCli(
  {
    pack: { type: "string", default: join(root, "packs/demo") },
    request: { type: "string", default: join(root, "examples/request.json") },
    threads: { type: "string", default: [...new Set([1, availableParallelism()])].join(",") },
    rounds: { type: "string", default: "7" },
    child: { type: "string" },
  },
  headerUsage(import.meta.url, 1, 8),
);

if (values.child) await child(values.child);
else await parent();

/** One configuration: `threads` or `threads:nospin`; answers "run" lines on stdin with milliseconds. */
async function child(config) {
  const [threads, mode] = config.split(":");
  // Built packages, as the other bench scripts load them (bench/ is not a workspace package).
  const req = createRequire(join(root, "packages/runtime-node/package.json"));
  const ort = req("onnxruntime-node");
  const { createRecommender } = await import(join(root, "packages/core/dist/index.js"));
  const { adaptOrtSession } = await import(join(root, "packages/core/dist/internal.js"));
  const { loadPackFromDir } = await import(join(root, "packages/runtime-node/dist/index.js"));
  const { readFileSync } = await import("node:fs");
  const options = {
    graphOptimizationLevel: "all",
    executionProviders: ["cpu"],
    intraOpNumThreads: Number(threads),
    ...(mode === "nospin" ? { extra: { session: { "intra_op.allow_spinning": "0" } } } : {}),
  };
  const backend = {
    name: "threads",
    async createSession(model) {
      const s = await (model instanceof Uint8Array
        ? ort.InferenceSession.create(model, options)
        : ort.InferenceSession.create(model.path, options));
      return adaptOrtSession(s, ort.Tensor);
    },
  };
  const rec = await createRecommender({ backend, pack: await loadPackFromDir(values.pack) });
  const request = JSON.parse(readFileSync(values.request, "utf8"));
  await rec.recommend(request);
  process.stdout.write("ready\n");
  for await (const line of process.stdin) {
    for (const _ of line.toString().split("\n").filter(Boolean)) {
      const t = performance.now();
      await rec.recommend(request);
      process.stdout.write(`${performance.now() - t}\n`);
    }
  }
}

function start(config) {
  const p = spawn(
    process.execPath,
    [fileURLToPath(import.meta.url), "--child", config, "--pack", values.pack, "--request", values.request],
    {
      stdio: ["pipe", "pipe", "inherit"],
    },
  );
  const lines = [];
  let waiting = null;
  let buf = "";
  p.stdout.on("data", (d) => {
    buf += d;
    let i = buf.indexOf("\n");
    while (i >= 0) {
      lines.push(buf.slice(0, i));
      buf = buf.slice(i + 1);
      i = buf.indexOf("\n");
    }
    if (waiting && lines.length) waiting(lines.shift());
  });
  const next = () => new Promise((res) => (lines.length ? res(lines.shift()) : (waiting = res)));
  return { config, p, next, times: [] };
}

async function parent() {
  const counts = values.threads.split(",").map(Number);
  const configs = counts.flatMap((n) => (n > 1 ? [`${n}`, `${n}:nospin`] : [`${n}`]));
  const procs = configs.map(start);
  for (const w of procs) await w.next(); // ready
  for (let r = 0; r < Number(values.rounds); r++) {
    for (const w of procs) {
      w.p.stdin.write("run\n");
      w.times.push(Number(await w.next()));
    }
  }
  for (const w of procs) w.p.kill();
  console.log(`pack ${values.pack}, ${cpus()[0]?.model ?? "?"} × ${availableParallelism()}, load average ${loadavg()[0].toFixed(1)}`);
  console.log("| threads | ms per request (median) | vs 1 thread |\n|---|---|---|");
  const base = median(procs[0].times);
  for (const w of procs) {
    const [n, mode] = w.config.split(":");
    console.log(`| ${n}${mode ? " (no spinning)" : ""} | ${median(w.times).toFixed(0)} | ${(median(w.times) / base).toFixed(2)}× |`);
  }
}
