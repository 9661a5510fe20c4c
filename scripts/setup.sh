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
# Install agh_nb and its test tools with uv when it can be had (from PyPI, into the venv): it
# resolves and installs the ~150 packages in parallel, several times faster than pip on a fresh
# machine. pip stays the fallback (AGH_NB_NO_UV=1 forces it). Both are idempotent.
pip_install() {
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e '.[test]'
}
uv_install() {
  [ -x .venv/bin/uv ] || .venv/bin/python -m pip install --quiet uv || return 1
  # editables: hatchling's editable wheel (dev-mode-exact) requires it, but adds that requirement
  # only when it builds the wheel; uv resolves from pyproject.toml's static metadata and misses it.
  .venv/bin/uv pip install --quiet --python .venv/bin/python -e '.[test]' 'editables~=0.3'
}
# ---- The JupyterLab extension (extension/: the "Agent sessions" sidebar) ----------------------------
# Node.js builds it here, before the Python install below copies extension/labextension/ into the
# venv (the wheel ships it built: users need no Node.js). Skipped when extension/.build-hash matches
# what the build reads; pip's build hook (hatch-jupyter-builder) is then told not to build again.
labext_hash() {
  (cd extension && find package.json yarn.lock .yarnrc.yml tsconfig.json src style -type f -print0 \
    | LC_ALL=C sort -z | xargs -0 sha256sum) | sha256sum | cut -d' ' -f1
}
labext_node_ok() {  # the builder (rspack) needs Node.js ^20.19 or >= 22.12
  command -v node >/dev/null 2>&1 && node -e '
    const [a, b] = process.versions.node.split(".").map(Number);
    process.exit((a === 20 && b >= 19) || (a === 22 && b >= 12) || a > 22 ? 0 : 1)'
}
labext_want="$(labext_hash)"
if [ -n "${AGH_NB_SKIP_LABEXTENSION:-}" ]; then
  echo "setup: not building the JupyterLab extension (AGH_NB_SKIP_LABEXTENSION is set)" >&2
elif [ -f extension/labextension/static/style.js ] && [ -x extension/node_modules/.bin/tsc ] \
    && [ "$(cat extension/.build-hash 2>/dev/null)" = "$labext_want" ]; then
  echo "setup: the JupyterLab extension is up to date (extension/.build-hash)" >&2
else
  if ! command -v node >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Debian's nodejs and npm to build the JupyterLab extension (apt-get)" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null \
      || echo "setup: apt-get install nodejs npm failed" >&2
  fi
  if labext_node_ok; then
    labext_start=$(date +%s%N)
    # jlpm (JupyterLab's pinned yarn) and the jupyter-builder command come with jupyter-builder
    # (a dependency of jupyterlab, installed here first so that the build can come before the rest).
    if [ ! -x .venv/bin/jlpm ]; then
      if [ "${AGH_NB_NO_UV:-0}" != 1 ] && { [ -x .venv/bin/uv ] || .venv/bin/python -m pip install --quiet uv; }; then
        .venv/bin/uv pip install --quiet --python .venv/bin/python 'jupyter-builder>=1.2,<2'
      else
        .venv/bin/python -m pip install --quiet 'jupyter-builder>=1.2,<2'
      fi
    fi
    labext_log="$(mktemp)"
    if ! (cd extension && PATH="$PWD/../.venv/bin:$PATH" && jlpm install --immutable && jlpm build:prod) >"$labext_log" 2>&1; then
      tail -n 40 "$labext_log" >&2
      echo "setup: building the JupyterLab extension failed (the lines above are from jlpm; full log:" \
        "$labext_log); AGH_NB_SKIP_LABEXTENSION=1 bash scripts/setup.sh installs agh_nb without it" >&2
      exit 1
    fi
    rm -f "$labext_log"
    echo "$labext_want" > extension/.build-hash
    echo "setup: built the JupyterLab extension in $(( ($(date +%s%N) - labext_start) / 1000000 )) ms" >&2
  else
    echo "setup: Node.js ^20.19 or >= 22.12 is needed to build the Agent sessions sidebar" \
      "(found: $(node --version 2>/dev/null || echo none)); installing agh_nb without it" >&2
  fi
fi
export HATCH_JUPYTER_BUILDER_SKIP_NPM=1
# ---- end of the JupyterLab extension ----------------------------------------------------------------
if [ "${AGH_NB_NO_UV:-0}" = 1 ]; then
  pip_install
elif ! uv_install; then
  echo "setup: installing with uv failed; installing with pip instead" >&2
  pip_install
fi
# Bytecode for the venv and agh_nb: uv, unlike pip, does not compile what it installs, and where
# PYTHONDONTWRITEBYTECODE is set (as on this project's machines) Python never writes it either, so
# every kernel, agent, server and CLI process compiled some 200 modules from source: a kernel with
# agh_nb loaded started in 1.45 s instead of 0.79 s. Packages' own tests are left out. The first run
# takes about 13 s on 2 cores; compileall skips what is up to date (2 s on a rerun).
.venv/bin/python -m compileall -q -j 0 -x '/tests/' .venv/lib agh_nb >/dev/null \
  || echo "setup: compiling bytecode failed for some files (everything still runs, more slowly)" >&2
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
