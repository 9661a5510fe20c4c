"""``python -m agh_nb.quickstart`` (what ``scripts/quickstart.sh`` runs): it executes the quickstart
notebook and its closing hint opens the executed copy, not the repository's notebook, whose
outputs were saved on another machine (issue 12, section 5)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

pytestmark = pytest.mark.timeout(400)


def test_the_closing_hint_opens_the_executed_notebook(tmp_path: Path) -> None:
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("AGH_NB_SERVER", "JPY_PARENT_PID", "MPLBACKEND")}
    env.update(AGH_HOME=str(home), TMPDIR=str(tmp))
    out = subprocess.run(
        [sys.executable, "-m", "agh_nb.quickstart"], env=env, capture_output=True, text=True, timeout=380
    )
    assert out.returncode == 0, out.stderr[-3000:]
    executed = home / "notebooks" / "quickstart.ipynb"
    hint = out.stdout.strip().splitlines()[-1]
    jupyter = Path(sys.executable).parent / "jupyter"
    assert hint == f"quickstart: open the executed notebook in JupyterLab with: {jupyter} lab {executed}", hint
    nb = nbformat.read(executed, as_version=4)
    assert all(c.get("execution_count") for c in nb.cells if c.cell_type == "code"), "every cell ran"
    assert "agh_nb repository" in nb.cells[-1].source, "the last cell's link works from the executed copy too"
