#!/usr/bin/env bash
# Every test of the project: TypeScript (type checks, unit tests, conformance suites) and
# Python (the exporter against transformers + PEFT, data prep, baselines).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> Format and lint (Biome for TypeScript/JavaScript/JSON, ruff for Python)"
pnpm exec biome ci .
.venv/bin/ruff check .
.venv/bin/ruff format --check .

echo
echo "==> TypeScript: typecheck + tests"
pnpm exec turbo run typecheck test --output-logs=errors-only

echo
echo "==> Benchmark helpers: node --test (bench/lib)"
node --test bench/lib/generation.test.mjs

echo
echo "==> Python: pytest training/"
.venv/bin/python -m pytest training -p no:cacheprovider
