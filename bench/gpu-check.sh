#!/usr/bin/env bash
# GPU check of the Node runtime: on a machine with an NVIDIA GPU, runs the conformance requests
# (test/fixtures/tiny-pack.golden.json, and packs/demo when present) on onnxruntime-node's CUDA
# provider and on its CPU provider, compares the scores (≤ 1e-4, and against the golden scores of
# transformers + PEFT), and prints a short timing table. Installs nothing from the internet.
#
#   pnpm install --frozen-lockfile && pnpm build        # once (the device machine needs node_modules + dist)
#   bash bench/gpu-check.sh [--pack DIR ...] [--reps N]
#
# Environment:
#   MOLOREC_CUDA_PROVIDER_DIR  a local folder holding libonnxruntime_providers_cuda.so and
#                              libonnxruntime_providers_shared.so of onnxruntime 1.30.0 (the NuGet
#                              package Microsoft.ML.OnnxRuntime.Gpu.Linux, runtimes/linux-x64/native/);
#                              they are copied next to onnxruntime-node's binding first.
#   GPU_CHECK_TIMEOUT          seconds for the Node part (default 300).
#   GPU_CHECK_DRY_RUN=1        skip the GPU checks and run "cuda" on the CPU provider: tests this
#                              script on a machine without a GPU (proves nothing about CUDA).
#
# Exit codes: 0 all good; 3 no NVIDIA GPU; 4 no CUDA provider libraries (or their CUDA/cuDNN
# dependencies); 5 not installed/built; 1 scores differ or CUDA failed to run; 124 timed out.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() {
  local code=$1
  shift
  echo "gpu-check: FAIL: $*" >&2
  exit "$code"
}

# 1. The installed and built workspace (no network: nothing is fetched here).
command -v node >/dev/null || fail 5 "node is not installed."
[ -d node_modules ] || fail 5 "node_modules is missing: run 'pnpm install --frozen-lockfile' first (or carry node_modules to this machine)."
for d in packages/core/dist packages/runtime-node/dist; do
  [ -f "$d/index.js" ] || fail 5 "$d is missing: run 'pnpm build' first."
done
ort_dir=$(cd packages/runtime-node && node -e 'const{dirname,join}=require("path");console.log(join(dirname(require.resolve("onnxruntime-node")),"..","bin","napi-v6",process.platform,process.arch))') ||
  fail 5 "onnxruntime-node is not installed in packages/runtime-node."
echo "gpu-check: onnxruntime-node binaries: $ort_dir"

if [ -n "${GPU_CHECK_DRY_RUN:-}" ]; then
  echo "gpu-check: DRY RUN: no GPU checks; the \"cuda\" rows run on the CPU provider"
else
  # 2. A GPU.
  if ! command -v nvidia-smi >/dev/null 2>&1; then
    fail 3 "no NVIDIA GPU: nvidia-smi is not installed (this check needs a machine with an NVIDIA GPU and its driver)."
  fi
  if ! gpus=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1) || [ -z "$gpus" ]; then
    fail 3 "no NVIDIA GPU visible: nvidia-smi says: ${gpus:-nothing}"
  fi
  echo "gpu-check: GPU: $gpus"
  cuda_driver=$(nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9.]*\).*/\1/p' | head -1)
  echo "gpu-check: driver supports CUDA ${cuda_driver:-?}"

  # 3. The CUDA provider libraries (onnxruntime-node ships only the CPU provider; see apps/server/README.md).
  if [ -n "${MOLOREC_CUDA_PROVIDER_DIR:-}" ]; then
    for lib in libonnxruntime_providers_cuda.so libonnxruntime_providers_shared.so; do
      [ -f "$MOLOREC_CUDA_PROVIDER_DIR/$lib" ] || fail 4 "MOLOREC_CUDA_PROVIDER_DIR=$MOLOREC_CUDA_PROVIDER_DIR has no $lib."
      cp -f "$MOLOREC_CUDA_PROVIDER_DIR/$lib" "$ort_dir/"
    done
    echo "gpu-check: copied the CUDA provider libraries from $MOLOREC_CUDA_PROVIDER_DIR"
  fi
  missing=()
  for lib in libonnxruntime_providers_cuda.so libonnxruntime_providers_shared.so; do
    [ -f "$ort_dir/$lib" ] || missing+=("$lib")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    fail 4 "no CUDA provider: ${missing[*]} not in $ort_dir. Install them without the internet from a local copy: MOLOREC_CUDA_PROVIDER_DIR=/path/to/onnxruntime-1.30.0-gpu-libs bash bench/gpu-check.sh (files from the NuGet package Microsoft.ML.OnnxRuntime.Gpu.Linux 1.30.0, runtimes/linux-x64/native/), or on a machine with internet: cd node_modules/.pnpm/onnxruntime-node@1.30.0/node_modules/onnxruntime-node && ONNXRUNTIME_NODE_INSTALL=cuda12 node script/install"
  fi
  if command -v ldd >/dev/null 2>&1; then
    unresolved=$(LD_LIBRARY_PATH="$ort_dir:${LD_LIBRARY_PATH:-}" ldd "$ort_dir/libonnxruntime_providers_cuda.so" 2>/dev/null | awk '/not found/ {print $1}' | sort -u | tr '\n' ' ')
    if [ -n "$unresolved" ]; then
      fail 4 "the CUDA provider needs libraries this machine lacks: $unresolved(CUDA 12 runtime, cuBLAS, cuFFT, cuDNN 9: install the CUDA 12 toolkit + cuDNN 9, or put the nvidia-*-cu12 wheels' lib folders on LD_LIBRARY_PATH)."
    fi
    echo "gpu-check: the CUDA provider's shared libraries all resolve"
  fi
fi

# 4. Conformance requests on CUDA and CPU, scores compared, timings.
export GPU_CHECK_ARGS="$*"
timeout "${GPU_CHECK_TIMEOUT:-300}" node --input-type=module - <<'EOF'
import { existsSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";

const root = process.cwd();
const core = await import(pathToFileURL(join(root, "packages/core/dist/index.js")).href);
const rn = await import(pathToFileURL(join(root, "packages/runtime-node/dist/index.js")).href);
const args = (process.env.GPU_CHECK_ARGS ?? "").split(/\s+/).filter(Boolean);
const packs = [];
let reps = 20;
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--pack") packs.push(resolve(args[++i]));
  else if (args[i] === "--reps") reps = Math.max(1, Number(args[++i]));
}
if (packs.length === 0) {
  packs.push(join(root, "test/fixtures/tiny-pack"));
  if (existsSync(join(root, "packs/demo/molorec.json"))) packs.push(join(root, "packs/demo"));
}

const fixtureGolden = JSON.parse(readFileSync(join(root, "test/fixtures/tiny-pack.golden.json"), "utf8"));
const TOL = 1e-4;
const close = (a, b) => Math.abs(a - b) <= TOL * Math.max(1, Math.abs(b));
let failures = 0;
const rows = [];

function requestsFor(pack) {
  if (pack.manifest.name === fixtureGolden.pack) return fixtureGolden.cases.map((c) => ({ request: c.request, golden: c.scores }));
  // Other packs: the golden requests' shape, on the pack's own domains (no golden scores: CUDA vs CPU only).
  const domains = Object.keys(pack.manifest.domains);
  return fixtureGolden.cases.map((c, i) => ({
    request: { history: c.request.history, candidates: c.request.candidates, mixture: c.request.mixture, ...(domains.length ? { domain: domains[i % domains.length] } : {}) },
    golden: null,
  }));
}

const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];

for (const dir of packs) {
  const pack = await rn.loadPackFromDir(dir);
  const name = pack.manifest.name;
  const cases = requestsFor(pack);
  const recs = {};
  for (const ep of ["cuda", "cpu"]) {
    try {
      const provider = ep === "cuda" && process.env.GPU_CHECK_DRY_RUN ? "cpu" : ep;
      recs[ep] = await core.createRecommender({ backend: rn.nodeBackend({ executionProvider: provider, log: (l) => console.log(`gpu-check: ${l}`) }), pack });
    } catch (e) {
      console.error(`gpu-check: FAIL: ${name}: ${ep} provider could not start: ${e.message}`);
      process.exit(1);
    }
  }
  const answers = {};
  for (const ep of ["cuda", "cpu"]) {
    answers[ep] = [];
    for (const c of cases) answers[ep].push(await recs[ep].recommend(c.request));
  }
  let maxDiff = 0;
  let maxGolden = 0;
  cases.forEach((c, i) => {
    const byIndex = (res) => {
      const out = new Array(c.request.candidates.length);
      for (const r of res.ranked) out[r.index] = r.score;
      return out;
    };
    const g = byIndex(answers.cuda[i]);
    const p = byIndex(answers.cpu[i]);
    g.forEach((x, k) => {
      maxDiff = Math.max(maxDiff, Math.abs(x - p[k]));
      if (!close(x, p[k])) {
        failures++;
        console.error(`gpu-check: FAIL: ${name} case ${i} candidate ${k}: cuda ${x}, cpu ${p[k]}`);
      }
      if (c.golden) {
        maxGolden = Math.max(maxGolden, Math.abs(x - c.golden[k]));
        if (!close(x, c.golden[k])) {
          failures++;
          console.error(`gpu-check: FAIL: ${name} case ${i} candidate ${k}: cuda ${x}, golden ${c.golden[k]}`);
        }
      }
    });
    const rank = (res) => res.ranked.map((r) => r.index).join(",");
    if (rank(answers.cuda[i]) !== rank(answers.cpu[i])) console.log(`gpu-check: note: ${name} case ${i}: rankings differ only between near-tied scores (${rank(answers.cuda[i])} vs ${rank(answers.cpu[i])})`);
  });
  // Batched across requests (the server's path) must match too.
  const batched = await recs.cuda.recommendBatch(cases.map((c) => c.request));
  batched.forEach((b, i) => {
    if (b.status !== "fulfilled") {
      failures++;
      console.error(`gpu-check: FAIL: ${name} case ${i}: batched on CUDA failed: ${b.reason?.message}`);
      return;
    }
    for (const r of b.value.ranked) {
      const want = answers.cpu[i].ranked.find((x) => x.index === r.index).score;
      maxDiff = Math.max(maxDiff, Math.abs(r.score - want));
      if (!close(r.score, want)) {
        failures++;
        console.error(`gpu-check: FAIL: ${name} case ${i}: batched cuda ${r.score}, cpu ${want}`);
      }
    }
  });
  console.log(`gpu-check: ${name}: ${cases.length} requests, max |cuda − cpu| = ${maxDiff.toExponential(2)}${cases[0].golden ? `, max |cuda − golden| = ${maxGolden.toExponential(2)}` : ""}`);

  for (const ep of ["cuda", "cpu"]) {
    const rec = recs[ep];
    for (const c of cases.slice(0, 3)) await rec.recommend(c.request); // warm-up
    const single = [];
    for (let k = 0; k < reps; k++) {
      const t = performance.now();
      await rec.recommend(cases[k % cases.length].request);
      single.push(performance.now() - t);
    }
    const batch = cases.slice(0, 8).map((c) => c.request);
    while (batch.length < 8) batch.push(cases[batch.length % cases.length].request);
    const perBatch = [];
    for (let k = 0; k < Math.max(3, Math.ceil(reps / 4)); k++) {
      const t = performance.now();
      await rec.recommendBatch(batch);
      perBatch.push(performance.now() - t);
    }
    rows.push({ pack: name, ep: ep === "cuda" && process.env.GPU_CHECK_DRY_RUN ? "cpu (dry run, as cuda)" : ep, single: median(single), batch8: median(perBatch) / 8 });
    await rec.close();
  }
}

console.log("\n| pack | provider | one request, median ms | batch of 8, ms per request |");
console.log("|---|---|---:|---:|");
for (const r of rows) console.log(`| ${r.pack} | ${r.ep} | ${r.single.toFixed(2)} | ${r.batch8.toFixed(2)} |`);
if (failures) {
  console.error(`\ngpu-check: FAIL: ${failures} score(s) differ by more than ${TOL}`);
  process.exit(1);
}
console.log(`\ngpu-check: OK: CUDA and CPU agree (≤ ${TOL}) on every request`);
EOF
