#!/usr/bin/env bash
# Installs everything the project needs, pinned, on a fresh Debian machine (root or sudo).
#   scripts/setup.sh          Node + Python (+ system packages for browser tests): everything
#   scripts/setup.sh --node   Node only: enough to run the runtimes, the CLI and the demo
# Re-running is cheap: each step is skipped when already satisfied.
set -euo pipefail
cd "$(dirname "$0")/.."

PNPM_VERSION=12.4.2
NODE_ONLY=0
[[ "${1:-}" == "--node" ]] && NODE_ONLY=1

step() { printf '\n==> %s\n' "$*"; }
as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

# System packages (Debian). Browser tests drive Debian's Chromium (never a downloaded browser).
APT_PACKAGES=()
if [[ $NODE_ONLY -eq 0 ]]; then
  APT_PACKAGES+=(chromium)  # browser tests of apps/storefront (WASM + SwiftShader WebGPU)
fi
missing=()
for p in "${APT_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  step "apt-get install ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if ((node_major < 20)); then
  echo "Node.js 20 or newer is required (found: $(node --version 2>/dev/null || echo none))." >&2
  exit 1
fi

if [[ "$(pnpm --version 2>/dev/null || true)" != "$PNPM_VERSION" ]]; then
  step "installing pnpm $PNPM_VERSION"
  as_root npm install -g --no-fund --no-audit "pnpm@$PNPM_VERSION" >/dev/null
fi

step "pnpm install (frozen lockfile)"
pnpm install --frozen-lockfile

step "building packages"
pnpm run build

if [[ $NODE_ONLY -eq 1 ]]; then
  exit 0
fi

# Python (training/): a virtualenv in .venv with exact pins from training/requirements.lock.
PY=${PYTHON:-python3}
stamp=.venv/.molorec-lock-$(sha256sum training/requirements.lock | cut -c1-16)
if [[ ! -f $stamp ]]; then
  step "Python virtualenv in .venv (torch, transformers, peft, onnxruntime: a few minutes the first time)"
  [[ -x .venv/bin/python ]] || "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade "pip==26.3"
  .venv/bin/python -m pip install -q -r training/requirements.lock
  rm -f .venv/.molorec-lock-*
  touch "$stamp"
fi
.venv/bin/python -m pip install -q --no-deps -e training
echo
echo "setup done."
