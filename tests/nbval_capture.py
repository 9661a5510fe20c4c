"""A pytest plugin for the nbval run of tests/test_notebooks.py: keeps what each cell printed.

nbval executes the notebook and compares the marked cells; this plugin writes the outputs of
every executed code cell (nbval's own ``test_outputs``, by code-cell number) to the JSON file
named by ``AGH_NBVAL_CAPTURE``, so the notebook runs once and its outputs are checked too.
"""

from __future__ import annotations

import json
import os
from typing import Any

_captured: dict[int, list[Any]] = {}


def pytest_runtest_teardown(item: Any) -> None:
    outputs = getattr(item, "test_outputs", None)
    cell_num = getattr(item, "cell_num", None)
    if outputs is not None and cell_num is not None:
        _captured[int(cell_num)] = [dict(out) for out in outputs]


def pytest_sessionfinish(session: Any) -> None:
    target = os.environ.get("AGH_NBVAL_CAPTURE")
    if target:
        with open(target, "w", encoding="utf-8") as f:
            json.dump({str(k): v for k, v in sorted(_captured.items())}, f)
