"""The JupyterLab extension as installed and as unit-tested, without a browser.

``jupyter labextension list`` (the environment's, as a user runs it) shows the prebuilt agh_nb
extension enabled: ``pip install -e .`` (scripts/setup.sh) put it into
``<prefix>/share/jupyter/labextensions/agh_nb`` through hatchling's shared-data. The frontend unit
tests (extension/test/: the SSE parser, ``Last-Event-ID`` resumption, the tail's rows) run under
Node's own test runner, offline, in a few seconds.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXTENSION = REPO / "extension"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def test_the_prebuilt_extension_is_installed_and_enabled() -> None:
    installed = Path(sys.prefix) / "share" / "jupyter" / "labextensions" / "agh_nb"
    package = json.loads((installed / "package.json").read_text(encoding="utf-8"))
    assert package["name"] == "agh_nb" and package["jupyterlab"]["_build"]["load"].startswith("static/remoteEntry."), package
    assert json.loads((installed / "install.json").read_text(encoding="utf-8"))["packageName"] == "agh-nb"
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER")}
    out = subprocess.run(
        [sys.executable, "-m", "jupyter", "labextension", "list"],
        capture_output=True, text=True, timeout=120, env=env, check=True,
    )
    text = ANSI.sub("", out.stdout + out.stderr)
    assert re.search(r"agh_nb v0\.1\.0\s+enabled\s+OK\s+\(python, agh-nb\)", text), text


def test_frontend_unit_tests() -> None:
    node = shutil.which("node")
    jlpm = Path(sys.prefix) / "bin" / "jlpm"
    if node is None or not (EXTENSION / "node_modules" / ".bin" / "tsc").exists():
        pytest.fail("Node.js and extension/node_modules are needed: run bash scripts/setup.sh (it builds the extension)")
    env = {**os.environ, "PATH": f"{jlpm.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    out = subprocess.run([str(jlpm), "test"], cwd=EXTENSION, capture_output=True, text=True, timeout=120, env=env)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-6000:]
    counts = dict(re.findall(r"^# (pass|fail) (\d+)$", text, re.MULTILINE))
    assert counts.get("fail") == "0" and int(counts.get("pass", "0")) >= 14, text[-3000:]
