"""What the package costs to import. Layering (import-linter, ``.importlinter``) and strict mypy are
steps of their own in ``scripts/test.sh``, before pytest, not tests."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_package_is_cheap() -> None:
    code = "import sys, agh_nb; print(any(m in sys.modules for m in ('duckdb', 'acp', 'pandas', 'IPython')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"
