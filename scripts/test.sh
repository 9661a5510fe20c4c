#!/usr/bin/env bash
# Set up (if needed), then check and test on both cores.
#   bash scripts/test.sh          what CI runs: setup, strict mypy, the import-linter layers, every test
#   bash scripts/test.sh --fast   the inner loop: the fast lane only (core, adapters, vault, config,
#                                 store, agents; under 2 minutes), no static checks
# Any other argument goes to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
fast=0
args=()
for a in "$@"; do
  if [ "$a" = "--fast" ]; then
    fast=1
    args+=(-m "core or adapters or vault or config or store or agents")
  else
    args+=("$a")
  fi
done
if [ "$fast" -eq 0 ]; then
  echo "== mypy (strict, the package)"
  .venv/bin/python -m mypy --config-file pyproject.toml
  echo "== import-linter (.importlinter: layers point downward)"
  .venv/bin/lint-imports --config .importlinter
  echo "== pytest"
fi
exec .venv/bin/python -m pytest -n 2 --dist loadfile ${args[@]+"${args[@]}"}
