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
# ACP agents written by other projects, for tests/test_third_party.py (npm registry only).
if command -v npm >/dev/null 2>&1; then
  (cd tests/third_party && npm install --silent --no-audit --no-fund --no-package-lock >/dev/null)
else
  echo "setup: npm not found; tests/test_third_party.py will fail until Node.js and npm are installed" >&2
fi
# Debian's bubblewrap: the sandbox of agent processes and their terminals ([sandbox] in config.toml).
if ! command -v bwrap >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Debian's bubblewrap for the agent sandbox (apt-get)" >&2
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null; }; then
      echo "setup: apt-get install bubblewrap failed; agents will run unsandboxed and the sandbox tests will fail" >&2
    fi
  else
    echo "setup: bwrap is missing and we are not root; agents run unsandboxed (as root: apt-get install bubblewrap)" >&2
  fi
fi
# Debian's Chromium for tests/browser (Playwright drives /usr/bin/chromium; no browser download).
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Debian's chromium for tests/browser (apt-get)" >&2
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }; then
      echo "setup: apt-get install chromium failed; tests/browser will fail under CI and be skipped elsewhere" >&2
    fi
  else
    echo "setup: /usr/bin/chromium is missing and we are not root; tests/browser will be skipped (as root: apt-get install chromium)" >&2
  fi
fi
