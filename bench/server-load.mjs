#!/usr/bin/env node
// Load test of the Node recommender server (apps/server) over loopback: throughput and
// p50/p95/p99 latency at several concurrencies, with batching across requests (--max-batch 8)
// and without (--max-batch 1), every answer checked against an unbatched reference; then
// back-pressure (503 + Retry-After only when the queue is full) and a graceful SIGTERM.
//
//   pnpm build && node bench/server-load.mjs [--pack DIR] [--requests 200] [--levels 1,4,8,16]
//                                            [--ep cpu|auto|cuda] [--threads N] [--json FILE]
//                                            [--domains a,b | all]  (default: the pack's default domain)
//
// It starts and stops its own servers (127.0.0.1, free ports). Bounded: at most --requests
// answers and --run-seconds per run, and --max-seconds overall (then it stops what it started).
import { spawn } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, loadavg, platform, release, totalmem } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { headerUsage, parseCli, rng } from "./lib/util.mjs";

const root = fileURLToPath(new URL("..", import.meta.url));
const USAGE = headerUsage(import.meta.url, 1, 12);
const values = parseCli(
  {
    pack: { type: "string" },
    data: { type: "string", default: resolve(root, "../shared/data") },
    requests: { type: "string", default: "200" },
    levels: { type: "string", default: "1,4,8,16" },
    "run-seconds": { type: "string", default: "20" },
    "max-seconds": { type: "string", default: "480" },
    distinct: { type: "string", default: "48" },
    ep: { type: "string", default: "cpu" },
    domains: { type: "string" },
    threads: { type: "string" },
    "max-wait-ms": { type: "string", default: "5" },
    json: { type: "string" },
    help: { type: "boolean", default: false },
  },
  USAGE,
);

const started = Date.now();
const deadline = started + Number(values["max-seconds"]) * 1000;
const perRun = Math.min(10_000, Math.max(1, Number(values.requests)));
const runSeconds = Math.max(1, Number(values["run-seconds"]));
const levels = values.levels
  .split(",")
  .map(Number)
  .filter((n) => Number.isInteger(n) && n >= 1 && n <= 64);
const bin = join(root, "apps/server/bin/molorec-server.js");
if (!existsSync(join(root, "apps/server/dist/cli.js"))) {
  console.error("bench/server-load.mjs: apps/server is not built; run `pnpm build` first.");
  process.exit(2);
}
const packDir = resolve(
  values.pack ?? (existsSync(join(root, "packs/demo/molorec.json")) ? join(root, "packs/demo") : join(root, "test/fixtures/tiny-pack")),
);
const manifest = JSON.parse(readFileSync(join(packDir, "molorec.json"), "utf8"));

// ---------------------------------------------------------------------------------------------
// Requests: titles of the pack's domains from the shared data when present, else synthetic ones.

function titlesOf(domain) {
  const file = join(values.data, domain, "items.tsv");
  if (!existsSync(file)) return null;
  const titles = readFileSync(file, "utf8")
    .split("\n")
    .slice(1)
    .map((l) => l.split("\t")[1]?.trim())
    .filter((t) => t && t.length <= 200);
  return titles.length >= 100 ? titles : null;
}

function syntheticTitles(r, n) {
  const adj = "Silent Golden Broken Hidden Electric Midnight Crimson Lonely Wild Frozen Distant Secret Little Last Brave".split(" ");
  const noun = "River Garden Empire Signal Harbor Kingdom Mirror Machine Forest Letter Orchestra Island Planet Circus Shadow".split(" ");
  const out = new Set();
  while (out.size < n)
    out.add(
      `${r() < 0.5 ? "" : "The "}${adj[Math.floor(r() * adj.length)]} ${noun[Math.floor(r() * noun.length)]} (${1950 + Math.floor(r() * 74)})`,
    );
  return [...out];
}

const r = rng(7);
// One domain (the pack's default) unless --domains says otherwise: a run pays for every adapter
// any of its rows uses, so the domain mix decides what batching can save (apps/server/README.md).
const domains =
  values.domains === "all"
    ? Object.keys(manifest.domains)
    : values.domains
      ? values.domains.split(",")
      : [manifest.defaultDomain ?? Object.keys(manifest.domains)[0]].filter(Boolean);
for (const d of domains)
  if (!(d in manifest.domains))
    throw new Error(`--domains: ${d} is not a domain of ${manifest.name} (${Object.keys(manifest.domains).join(", ")})`);
const pools = Object.fromEntries(domains.map((d) => [d, titlesOf(d) ?? syntheticTitles(r, 400)]));
const titleSource = domains.map((d) => `${d}: ${titlesOf(d) ? "shared data" : "synthetic"}`).join(", ");
const maxCandidates = Math.min(20, manifest.limits.maxCandidates);
const requests = Array.from({ length: Math.max(1, Number(values.distinct)) }, (_, i) => {
  const domain = domains.length ? domains[i % domains.length] : undefined;
  const pool = domain ? pools[domain] : syntheticTitles(r, 400);
  const pick = new Set();
  const nHist = 3 + Math.floor(r() * 10);
  const nCand = Math.max(2, Math.floor(maxCandidates / 2) + Math.floor(r() * (maxCandidates / 2 + 1)));
  while (pick.size < nHist + nCand) pick.add(pool[Math.floor(r() * pool.length)]);
  const titles = [...pick];
  const u = r();
  const mixture = u < 0.7 ? "calibrated" : u < 0.8 ? "general" : u < 0.9 ? "domain" : { lambda: Math.round(r() * 100) / 100 };
  return { history: titles.slice(0, nHist), candidates: titles.slice(nHist), ...(domain ? { domain } : {}), mixture };
});

// ---------------------------------------------------------------------------------------------
// Servers: child processes of this script, stopped by it (SIGTERM; SIGKILL if it hangs).

const children = new Set();
function killAll() {
  for (const c of children) if (c.exitCode === null) c.kill("SIGKILL");
}
process.on("exit", killAll);
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => process.exit(130));

function startServer(extra) {
  const args = [
    bin,
    "--pack",
    packDir,
    "--port",
    "0",
    "--host",
    "127.0.0.1",
    "--ep",
    values.ep,
    "--max-queue",
    "256",
    "--max-wait-ms",
    values["max-wait-ms"],
    ...(values.threads ? ["--threads", values.threads] : []),
    ...extra,
  ];
  const child = spawn(process.execPath, args, { stdio: ["ignore", "ignore", "pipe"] });
  children.add(child);
  const log = [];
  const exited = new Promise((res) => child.on("exit", (code, signal) => res({ code, signal })));
  return new Promise((res, rej) => {
    let buf = "";
    const timer = setTimeout(() => rej(new Error(`server did not start in 60 s:\n${log.join("\n")}`)), 60_000);
    child.stderr.on("data", (d) => {
      buf += d;
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        log.push(line);
        const m = /listening on (http:\/\/\S+)/.exec(line);
        if (m) {
          clearTimeout(timer);
          res({ url: m[1], child, log, exited, args: extra.join(" ") });
        }
      }
    });
    child.on("exit", () => {
      clearTimeout(timer);
      rej(new Error(`server exited before listening:\n${log.join("\n")}`));
    });
  });
}

async function stop(server, timeoutMs = 30_000) {
  if (server.child.exitCode !== null) return server.exited;
  server.child.kill("SIGTERM");
  const t = setTimeout(() => server.child.kill("SIGKILL"), timeoutMs);
  const res = await server.exited;
  clearTimeout(t);
  children.delete(server.child);
  return res;
}

async function post(url, body) {
  const t0 = performance.now();
  try {
    const res = await fetch(`${url}/v1/recommend`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    const text = await res.text();
    return {
      status: res.status,
      ms: performance.now() - t0,
      body: text ? JSON.parse(text) : null,
      retryAfter: res.headers.get("retry-after"),
    };
  } catch (e) {
    return { status: 0, ms: performance.now() - t0, error: String(e?.cause?.code ?? e?.message ?? e) };
  }
}

async function metric(url, name, labels = {}) {
  const text = await (await fetch(`${url}/metrics`)).text();
  const want = Object.entries(labels);
  for (const line of text.split("\n")) {
    const m = /^([a-zA-Z_:][\w:]*)(\{.*\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    if (want.every(([k, v]) => (m[2] ?? "").includes(`${k}="${v}"`))) return Number(m[3]);
  }
  return 0;
}

// ---------------------------------------------------------------------------------------------
// Checking answers against the unbatched reference.

const TOL = 1e-4;
function check(got, want) {
  if (!got?.ranked || got.ranked.length !== want.ranked.length) return "wrong number of candidates";
  if (got.domain !== want.domain || JSON.stringify(got.mixture) !== JSON.stringify(want.mixture)) return "wrong domain or mixture";
  const ref = new Map(want.ranked.map((x) => [x.index, x.score]));
  let diff = 0;
  for (const x of got.ranked) {
    if (!ref.has(x.index)) return `unknown index ${x.index}`;
    diff = Math.max(diff, Math.abs(x.score - ref.get(x.index)));
  }
  if (diff > TOL) return `score differs by ${diff.toExponential(2)}`;
  // The same ranking, up to candidates whose reference scores tie within the tolerance.
  for (let i = 1; i < got.ranked.length; i++) {
    if (ref.get(got.ranked[i].index) > ref.get(got.ranked[i - 1].index) + TOL) return `ranking differs at ${i}`;
  }
  return null;
}

function quantile(xs, q) {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const pos = (s.length - 1) * q;
  const lo = Math.floor(pos);
  return s[lo] + (s[Math.ceil(pos)] - s[lo]) * (pos - lo);
}

/** Closed loop: `concurrency` clients, each sending its next request when answered. */
async function load(server, concurrency, reference, count = perRun, seconds = runSeconds, offset = 0) {
  const stopAt = Math.min(deadline, Date.now() + seconds * 1000);
  const before = { n: await metric(server.url, "molorec_batch_size_count"), sum: await metric(server.url, "molorec_batch_size_sum") };
  const lat = [];
  const wrong = [];
  const statuses = {};
  let sent = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async (_, w) => {
      while (sent < count && Date.now() < stopAt) {
        const i = (offset + sent++ * 7 + w) % requests.length;
        const res = await post(server.url, requests[i]);
        statuses[res.status] = (statuses[res.status] ?? 0) + 1;
        if (res.status === 200) {
          lat.push(res.ms);
          const why = check(res.body, reference[i]);
          if (why) wrong.push(`request ${i}: ${why}`);
        } else wrong.push(`request ${i}: HTTP ${res.status} ${res.error ?? JSON.stringify(res.body?.error?.code ?? "")}`);
      }
    }),
  );
  const elapsed = (performance.now() - t0) / 1000;
  const after = { n: await metric(server.url, "molorec_batch_size_count"), sum: await metric(server.url, "molorec_batch_size_sum") };
  return summarize(concurrency, [
    { sent, lat, wrong, statuses, seconds: elapsed, batches: after.n - before.n, batched: after.sum - before.sum },
  ]);
}

function summarize(concurrency, parts) {
  const lat = parts.flatMap((p) => p.lat);
  const wrong = parts.flatMap((p) => p.wrong);
  const statuses = {};
  for (const p of parts) for (const [k, v] of Object.entries(p.statuses)) statuses[k] = (statuses[k] ?? 0) + v;
  const seconds = parts.reduce((n, p) => n + p.seconds, 0);
  const batches = parts.reduce((n, p) => n + p.batches, 0);
  return {
    concurrency,
    sent: parts.reduce((n, p) => n + p.sent, 0),
    ok: lat.length,
    statuses,
    wrong: wrong.length,
    wrongExamples: wrong.slice(0, 3),
    seconds,
    throughput: lat.length / seconds,
    p50: quantile(lat, 0.5),
    p95: quantile(lat, 0.95),
    p99: quantile(lat, 0.99),
    meanBatch: batches > 0 ? parts.reduce((n, p) => n + p.batched, 0) / batches : NaN,
    parts,
  };
}

/** Both servers at one concurrency, in alternating slices (A B B A …), so that drift of a shared machine hits both alike. */
async function compare(servers, concurrency, reference) {
  const slices = Math.max(1, Math.min(4, Math.floor(perRun / Math.max(8, 2 * concurrency))));
  const parts = servers.map(() => []);
  for (let k = 0; k < slices; k++) {
    const order = k % 2 === 0 ? [0, 1] : [1, 0];
    for (const s of order) {
      if (Date.now() > deadline) break;
      const res = await load(servers[s], concurrency, reference, Math.ceil(perRun / slices), runSeconds / slices, k * 13);
      parts[s].push(...res.parts);
    }
  }
  return parts.map((p) => summarize(concurrency, p));
}

const fmt = (x, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : "—");

// ---------------------------------------------------------------------------------------------

const cpuList = cpus();
const machine = {
  cpu: cpuList[0]?.model ?? "unknown",
  logicalCores: cpuList.length,
  memoryGiB: Math.round(totalmem() / 2 ** 30),
  platform: `${platform()} ${release()}`,
  node: process.version,
  loadAverageAtStart: loadavg()
    .map((x) => x.toFixed(2))
    .join(" "),
};
console.log(
  `machine: ${machine.cpu}, ${machine.logicalCores} logical cores, ${machine.memoryGiB} GiB, ${machine.platform}, node ${machine.node}, load average ${machine.loadAverageAtStart} (at start)`,
);
console.log(
  `pack: ${manifest.name} (${packDir}), ${manifest.model.numLayers} layers, hidden ${manifest.model.hiddenSize}, vocab ${manifest.model.vocabSize}`,
);
console.log(
  `requests: ${requests.length} distinct (titles: ${titleSource}), history ${Math.min(...requests.map((q) => q.history.length))}–${Math.max(...requests.map((q) => q.history.length))} titles, candidates ${Math.min(...requests.map((q) => q.candidates.length))}–${Math.max(...requests.map((q) => q.candidates.length))}; mixtures mostly calibrated, some general / domain / fixed λ`,
);
console.log(
  `runs: closed loop, up to ${perRun} answers or ${runSeconds} s per mode and concurrency (${levels.join(", ")}), in alternating slices of the two servers; max-wait ${values["max-wait-ms"]} ms; ep ${values.ep}${values.threads ? `, ${values.threads} threads` : ""}\n`,
);

const unbatched = await startServer(["--max-batch", "1"]);
const batched = await startServer(["--max-batch", "8"]);
const provider = unbatched.log.find((l) => /running on/.test(l)) ?? "";
console.log(provider.replace(/^molorec-server: pack [^:]+: /, "provider: "));

// 1. The unbatched reference: every distinct request once, one at a time.
const reference = [];
for (const q of requests) {
  const res = await post(unbatched.url, q);
  if (res.status !== 200) throw new Error(`reference request failed: HTTP ${res.status} ${JSON.stringify(res.body)}`);
  reference.push(res.body);
}

// 2. Throughput and latency; the two servers alternate in slices at each level (a shared, loaded machine drifts).
const results = [];
for (const c of levels) {
  if (Date.now() > deadline) break;
  for (const server of [unbatched, batched]) await load(server, c, reference, Math.min(perRun, 2 * c), runSeconds); // warm-up of the connections
  const [a, b] = await compare([unbatched, batched], c, reference);
  results.push({ mode: "unbatched (--max-batch 1)", ...a }, { mode: "batched (--max-batch 8)", ...b });
}

console.log("\n| mode | concurrency | answers | req/s | p50 ms | p95 ms | p99 ms | mean batch | lost or wrong |");
console.log("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
for (const m of ["unbatched (--max-batch 1)", "batched (--max-batch 8)"]) {
  for (const x of results.filter((y) => y.mode === m).sort((a, b) => a.concurrency - b.concurrency)) {
    console.log(
      `| ${m} | ${x.concurrency} | ${x.ok}/${x.sent} | ${fmt(x.throughput)} | ${fmt(x.p50)} | ${fmt(x.p95)} | ${fmt(x.p99)} | ${fmt(x.meanBatch, 2)} | ${x.wrong} |`,
    );
  }
}
const ratios = levels
  .filter((c) => c >= 8)
  .map((c) => {
    const a = results.find((x) => x.concurrency === c && x.mode.startsWith("unbatched"));
    const b = results.find((x) => x.concurrency === c && x.mode.startsWith("batched"));
    return a && b ? { concurrency: c, ratio: b.throughput / a.throughput } : null;
  })
  .filter(Boolean);
console.log(
  `\nbatching throughput ratio (batched / unbatched, same run): ${ratios.map((x) => `${x.ratio.toFixed(2)}× at concurrency ${x.concurrency}`).join(", ") || "—"}`,
);
const lostOrWrong = results.reduce((n, x) => n + x.wrong, 0);
for (const x of results.filter((y) => y.wrong)) console.log(`  ${x.mode} c=${x.concurrency}: ${x.wrongExamples.join("; ")}`);
console.log(`answers lost or wrong under load: ${lostOrWrong} of ${results.reduce((n, x) => n + x.sent, 0)}`);

// 3. Graceful shutdown of a real process: SIGTERM while heavy (adaptive: 5 mixtures) requests are in flight.
const heavy = requests.slice(0, 8).map((q) => ({ ...q, mixture: "adaptive" }));
const heavyRef = [];
for (const q of heavy) heavyRef.push((await post(unbatched.url, q)).body);
const inflight = heavy.map((q) => post(batched.url, q).then((res) => ({ ...res, at: performance.now() })));
await new Promise((r) => setTimeout(r, 10));
const signalledAt = performance.now();
const stopRes = stop(batched);
const drained = await Promise.all(inflight);
const batchedExit = await stopRes;
const answered = drained.filter((x) => x.status === 200);
const afterSignal = answered.filter((x) => x.at > signalledAt).length;
const cut = drained.filter((x) => x.status !== 200 && !(x.status === 0 && x.error === "ECONNREFUSED"));
const drainOk = cut.length === 0 && drained.every((x, i) => x.status !== 200 || !check(x.body, heavyRef[i])) && afterSignal > 0;
console.log(
  `\nSIGTERM with ${heavy.length} adaptive requests sent: ${answered.length} answered (${afterSignal} of them after the signal, i.e. in flight), ${drained.length - answered.length - cut.length} refused before being accepted, ${cut.length} cut${cut.length ? ` (${[...new Set(cut.map((x) => x.error ?? x.status))].join(", ")})` : ""}; answers ${drained.every((x, i) => x.status !== 200 || !check(x.body, heavyRef[i])) ? "all correct" : "NOT all correct"}; exit code ${batchedExit.code}${batchedExit.signal ? ` (signal ${batchedExit.signal})` : ""}`,
);
const refusedAfter = await post(batched.url, requests[0]);
console.log(
  `after shutdown: new request ${refusedAfter.status === 0 ? `refused (${refusedAfter.error})` : `answered HTTP ${refusedAfter.status}`}`,
);
await stop(unbatched);

// 4. Back-pressure: 503 + Retry-After only when the queue is full (--max-batch 1 --max-queue 2).
const tiny = await startServer(["--max-batch", "1", "--max-queue", "2", "--max-wait-ms", "0"]);
const withinLimit = await load(tiny, 3, reference, Math.min(perRun, 60), runSeconds); // 1 scoring + 2 queued: never full
const burst = await Promise.all(Array.from({ length: 24 }, (_, i) => post(tiny.url, requests[i % requests.length])));
const refused = burst.filter((x) => x.status === 503);
const refusedOk = refused.every(
  (x) =>
    Number(x.retryAfter) >= 1 &&
    x.body?.error?.details?.reason === "queue_full" &&
    x.body.error.details.queueDepth === x.body.error.details.maxQueue,
);
const acceptedOk = burst.filter((x) => x.status === 200).every((x, _, arr) => arr.length > 0 && x.body?.ranked);
const burstWrong = burst
  .map((x, i) => (x.status === 200 ? check(x.body, reference[i % requests.length]) : x.status === 503 ? null : `HTTP ${x.status}`))
  .filter(Boolean);
const rejectedMetric = await metric(tiny.url, "molorec_queue_rejections_total", { reason: "queue_full" });
await stop(tiny);
console.log(
  `\nback-pressure (--max-batch 1 --max-queue 2): concurrency 3 (never more than 1 scoring + 2 queued): ${withinLimit.statuses[503] ?? 0} × 503 in ${withinLimit.sent} requests, ${withinLimit.wrong} lost or wrong`,
);
console.log(
  `  burst of 24 at once: ${burst.filter((x) => x.status === 200).length} × 200 (${burstWrong.length} wrong), ${refused.length} × 503 (${refusedOk ? "each with Retry-After and reason queue_full at queue depth = max-queue" : "NOT all with Retry-After / queue_full"}), server counted ${rejectedMetric} queue_full rejections`,
);

const ok =
  lostOrWrong === 0 &&
  drainOk &&
  batchedExit.code === 0 &&
  (withinLimit.statuses[503] ?? 0) === 0 &&
  withinLimit.wrong === 0 &&
  refused.length > 0 &&
  refusedOk &&
  acceptedOk &&
  burstWrong.length === 0 &&
  rejectedMetric === refused.length;
console.log(
  `\nload average at the end: ${loadavg()
    .map((x) => x.toFixed(2))
    .join(" ")}; wall ${((Date.now() - started) / 1000).toFixed(0)} s; ${ok ? "all checks passed" : "SOME CHECKS FAILED"}`,
);
if (values.json) {
  writeFileSync(
    values.json,
    `${JSON.stringify({ machine, pack: { name: manifest.name, dir: packDir }, provider, results: results.map(({ parts: _p, ...x }) => x), ratios, shutdown: { exit: batchedExit, drained: drainOk }, backPressure: { withinLimit, burst: { refused: refused.length, refusedOk, rejectedMetric } }, ok }, null, 2)}\n`,
  );
}
process.exit(ok ? 0 : 1);
