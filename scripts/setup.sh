#!/usr/bin/env bash
# Create .venv (Python >= 3.11) and install agh_nb with its test tools. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
"$PY" - <<'PYCHECK'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"agh_nb needs Python 3.11 or newer; {sys.executable} is {sys.version.split()[0]} (set PYTHON=python3.11)")
PYCHECK
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'
