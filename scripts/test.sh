#!/usr/bin/env bash
# Set up (if needed), then run the test suite on both cores.
#   bash scripts/test.sh          everything (what CI runs)
#   bash scripts/test.sh --fast   the fast lane: core, adapters, vault, config, store, agents (< 2 min)
# Any other argument goes to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
args=()
for a in "$@"; do
  if [ "$a" = "--fast" ]; then
    args+=(-m "core or adapters or vault or config or store or agents")
  else
    args+=("$a")
  fi
done
exec .venv/bin/python -m pytest -n 2 --dist loadfile ${args[@]+"${args[@]}"}
