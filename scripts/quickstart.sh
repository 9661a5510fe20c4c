#!/usr/bin/env bash
# Set up, then execute notebooks/quickstart.ipynb against the built-in demo agent.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m agh_nb.quickstart "$@"
