"""The tutorial notebooks (``notebooks/*.ipynb``) run top to bottom in a real kernel, against the demo agent.

Each test executes one notebook (kernel ``python3``) in a fresh ``AGH_HOME`` and a
private ``TMPDIR`` (the notebooks make their workspaces with ``tempfile``), with ``AGH_NB_SERVER``
removed from the kernel's environment so the embedded host is used. The executed copy stays in
memory: the tests never write into the repository. Each notebook runs once, by nbval
(``pytest --nbval-lax``, in a subprocess with that environment): every cell must run, the cells
marked ``# NBVAL_CHECK_OUTPUT`` must print what the saved notebook shows, and the outputs of every
cell (kept by the ``tests/nbval_capture.py`` plugin) must pass the notebook's own checks.

To refresh the outputs saved in the repository (run on purpose, not by pytest)::

    python tests/test_notebooks.py --save            # every notebook
    python tests/test_notebooks.py --save approvals

It executes each notebook the same way, refuses to save outputs that leak a home directory path or
a token, and writes the notebook back in place.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
KERNEL_NAME = "python3"
CELL_TIMEOUT = 180  # seconds per cell; a notebook takes well under a minute on an idle machine
AGH_ERROR = "agh: error:"

pytestmark = pytest.mark.timeout(600)


# -- running a notebook -----------------------------------------------------------------------


def kernel_env(home: Path, tmp: Path) -> dict[str, str]:
    """The kernel's environment: ours, with its own AGH_HOME and TMPDIR, and no server host."""
    env = dict(os.environ)
    for name in ("AGH_NB_SERVER", "JPY_PARENT_PID", "AGH_VAULT_KEY", "MPLBACKEND"):
        env.pop(name, None)
    env["AGH_HOME"] = str(home)
    env["TMPDIR"] = str(tmp)
    return env


def execute_notebook(path: Path, home: Path, tmp: Path, *, record_timing: bool = True) -> Any:
    """Execute ``path`` in a fresh kernel; return the executed notebook (the file is not touched).

    Raises:
        nbclient.exceptions.CellExecutionError: when a cell raises.
    """
    import nbformat
    from nbclient import NotebookClient

    home.mkdir(parents=True, exist_ok=True)
    tmp.mkdir(parents=True, exist_ok=True)
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT,
        kernel_name=KERNEL_NAME,
        record_timing=record_timing,
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute(env=kernel_env(home, tmp))
    return nb


def outputs(nb: Any) -> Iterator[dict[str, Any]]:
    """Every output of every code cell."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            yield from cell.get("outputs", [])


def text_of(nb: Any) -> str:
    """All text a reader sees: streams, plain text and HTML of results and displays, error values."""
    parts: list[str] = []
    for out in outputs(nb):
        if out.get("output_type") == "stream":
            parts.append(out.get("text", ""))
        elif out.get("output_type") == "error":
            parts.append(f"{out.get('ename')}: {out.get('evalue')}")
        for key in ("text/plain", "text/html"):
            value = out.get("data", {}).get(key)
            if value:
                parts.append(value if isinstance(value, str) else "".join(value))
    return "\n".join(parts)


def stderr_lines(nb: Any) -> list[str]:
    """Lines the notebook printed to stderr."""
    return [
        line
        for out in outputs(nb)
        if out.get("output_type") == "stream" and out.get("name") == "stderr"
        for line in out.get("text", "").splitlines()
    ]


def images(nb: Any) -> list[bytes]:
    """The PNG images the notebook showed."""
    return [base64.b64decode(out["data"]["image/png"]) for out in outputs(nb) if "image/png" in out.get("data", {})]


def cell_errors(nb: Any) -> list[str]:
    """Error outputs (none when nbclient finished without raising, but say so plainly if any)."""
    return [f"{out.get('ename')}: {out.get('evalue')}" for out in outputs(nb) if out.get("output_type") == "error"]


# -- notebook-specific facts ------------------------------------------------------------------


def check_quickstart(nb: Any, home: Path, tmp: Path) -> None:
    text = text_of(nb)
    assert "session_stopped" in text
    assert "True active" in text, "resume should bring the same id back, active"
    assert text.count('"stop_reason": "user_canceled"') >= 2, "the session is stopped twice (-o json)"
    assert "end_turn" in text
    assert "#1     user_message" in text, "--follow prints the events as they arrive"
    assert any("application/vnd.jupyter.widget-view+json" in out.get("data", {}) for out in outputs(nb)), "tail widget"
    assert "border:1px solid #d0d7de" in text, "the session card"
    assert re.search(r"Event tail of sess_\w+: \d+ events?, last #\d+ \w+", text), "the tail's plain-text form"
    assert "turn_cost" in text, "token_usage.cost_amount is cumulative: the per-turn cost is shown next to it"
    assert images(nb), "the timeline"


def check_approvals(nb: Any, home: Path, tmp: Path) -> None:
    (written,) = tmp.glob("agh-approvals-*/hello.txt")
    assert written.read_text() == "Hello from the approvals notebook!"
    assert not list(tmp.glob("agh-approvals-*/second.txt")), "the rejected write must not happen"
    text = text_of(nb)
    assert "resolved: allow-once by user" in text, "headless, the auto-approve cell decides"
    assert "resolved: reject-once by user" in text
    assert "second.txt exists: False" in text
    assert sum("application/vnd.jupyter.widget-view+json" in out.get("data", {}) for out in outputs(nb)) >= 2
    assert re.search(r"Approvals for session sess_\w+: ", text), "the panel's plain-text form"

    from agh_nb.api import Reader

    reader = Reader.open(home)
    try:
        rows = reader.sql(
            "SELECT content->>'decision' AS decision, content->'runtime'->>'source' AS source, "
            "content->>'resource' AS resource FROM events "
            "WHERE type = 'permission' AND content->>'decision' IS NOT NULL ORDER BY sequence"
        ).to_dict("records")
    finally:
        reader.close()
    assert [(r["decision"], r["source"]) for r in rows] == [("allow-once", "user"), ("reject-once", "user")]
    assert rows[0]["resource"] == str(written)


def check_analytics(nb: Any, home: Path, tmp: Path) -> None:
    pictures = images(nb)
    assert len(pictures) >= 4, f"expected a chart per question, got {len(pictures)} images"
    assert all(p.startswith(b"\x89PNG") for p in pictures)
    text = text_of(nb)
    for expected in ("prompt_failure", "process_exit", "agent_crashed", "mode:deny-all", "boundary", "execute"):
        assert expected in text, expected
    assert "interrupted" in text, "the crashed call is closed by the stop path, shown as interrupted"
    assert "no result" not in text, "no tool call is left without a result"
    assert "NaN" not in text, "blanks or words read better than NaN"
    # The views: the resumed turn has a cost of its own (issue 12), and the export holds every event.
    resumed = re.search(r"chatty: One more thing after the break\s.*?(\d+\.\d+)\s*$", text, re.MULTILINE)
    assert resumed is None or float(resumed.group(1)) > 0
    assert re.search(r"One more thing after the break", text)
    exported = re.search(r"exported (\d+) events, then 0 more; (\d+) in the files, (\d+) in the store", text)
    assert exported and exported.group(1) == exported.group(2) == exported.group(3), "the export holds every event"


def check_recovery(nb: Any, home: Path, tmp: Path) -> None:
    text = text_of(nb)
    assert "agent_crashed" in text
    assert "daemon crashed while session active" in text
    assert "host exit: -9 SIGKILL" in text
    assert "0o600" in text, "the crash bundle is owner-only"
    # An agent crash seen by a live host: its stop path closed the dangling call; repair plans nothing.
    assert (
        "closed by the stop: Doing something risky | interrupted: the session stopped before the tool call"
        " finished | repair: True" in text
    )
    assert "repair plans: [] | record change: None | empty: True" in text
    # A dead host: repair has work to do, then nothing is left.
    assert "record:  active -> stopped | agent_crashed | daemon crashed while session active" in text
    assert "+ tool_result      interrupted: the session stopped before the tool call finished" in text
    assert "nothing left to repair: True" in text
    assert "gapless: True | session_stopped events: 2" in text
    assert "verified:    True" in text
    assert "mode:        0o400 (read-only)" in text


CHECKS = {
    "quickstart": check_quickstart,
    "approvals": check_approvals,
    "analytics": check_analytics,
    "recovery": check_recovery,
}


# -- tests ------------------------------------------------------------------------------------


def test_every_notebook_has_its_checks() -> None:
    assert [p.stem for p in NOTEBOOKS] == sorted(CHECKS), "add a check for each tutorial notebook"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_and_passes_nbval(path: Path, tmp_path: Path) -> None:
    """One run per notebook, by nbval as a user would run it: every cell runs without error, the
    cells marked ``# NBVAL_CHECK_OUTPUT`` print exactly what the saved notebook shows, and what
    every cell printed (kept by ``tests/nbval_capture.py``) passes the notebook's own checks."""
    import nbformat

    home, tmp = tmp_path / "agh_home", tmp_path / "tmp"
    home.mkdir()
    tmp.mkdir()
    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code"]
    # nbval honours a marker only as a comment line of its own, exactly so.
    checked = [c for c in cells if "# NBVAL_CHECK_OUTPUT" in (line.strip() for line in c.source.splitlines())]
    assert checked, f"{path.name}: mark at least one cell with deterministic output '# NBVAL_CHECK_OUTPUT'"
    assert all(c.outputs for c in checked), f"{path.name}: a checked cell has no saved output to compare with"
    capture = tmp_path / "outputs.json"
    env = kernel_env(home, tmp) | {"AGH_NBVAL_CAPTURE": str(capture)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parent), env.get("PYTHONPATH")]))
    argv = [
        sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env", f"--nbval-cell-timeout={CELL_TIMEOUT}",
        "-p", "no:cacheprovider", "-p", "nbval_capture", "-q", "--rootdir", str(tmp_path), str(path),
    ]
    started = time.monotonic()
    proc = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=540, check=False)
    report = proc.stdout[-6000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, f"nbval failed on {path.name}:\n{report}"
    assert re.search(rf"\b{len(cells)} passed\b", proc.stdout), f"nbval ran a different number of cells:\n{report}"
    import json

    executed = json.loads(capture.read_text(encoding="utf-8"))
    assert len(executed) == len(cells), f"captured {len(executed)} of {len(cells)} cells"
    for number, cell in enumerate(cells):
        cell.outputs = [nbformat.from_dict(out) for out in executed[str(number)]]
    assert not cell_errors(nb)
    agh_errors = [line for line in stderr_lines(nb) if line.startswith(AGH_ERROR)]
    assert not agh_errors, f"{path.name} printed errors: {agh_errors}"
    CHECKS[path.stem](nb, home, tmp)
    print(f"{path.name}: {time.monotonic() - started:.1f}s")


# -- saving executed notebooks into the repository (not a test) --------------------------------

# A saved notebook must not carry a home directory path or anything that looks like a token.
LEAKS = re.compile(r"(?<![\w.-])(?:/root|/home/[^/\s\"']+)\b|\btoken=|[?&]token\b|\"token\"\s*:", re.IGNORECASE)


def leaks_in(nb: Any) -> list[str]:
    """Substrings of the notebook's JSON (outputs and metadata) that must not be published."""
    import nbformat

    blob = nbformat.writes(nb)
    return sorted({m.group(0) for m in LEAKS.finditer(blob)})


def save(names: list[str]) -> int:
    """Execute the notebooks and write them back with their outputs; return an exit code."""
    import nbformat
    from nbclient.exceptions import CellExecutionError

    chosen = [p for p in NOTEBOOKS if not names or p.stem in names or p.name in names]
    if not chosen:
        print(f"no notebook matches {names}; have: {[p.stem for p in NOTEBOOKS]}", file=sys.stderr)
        return 2
    status = 0
    for path in chosen:
        with tempfile.TemporaryDirectory(prefix="agh-nb-") as scratch:
            home, tmp = Path(scratch) / "agh_home", Path(scratch) / "tmp"
            started = time.monotonic()
            try:
                nb = execute_notebook(path, home, tmp, record_timing=False)
            except CellExecutionError as exc:
                print(f"{path.name}: a cell raised; not saved\n{exc}", file=sys.stderr)
                status = 1
                continue
            problems = [line for line in stderr_lines(nb) if line.startswith(AGH_ERROR)]
            problems += [f"leak: {leak}" for leak in leaks_in(nb)]
            if problems:
                print(f"{path.name}: not saved: {problems}", file=sys.stderr)
                status = 1
                continue
            try:
                CHECKS[path.stem](nb, home, tmp)
            except (AssertionError, ValueError) as exc:
                print(f"{path.name}: not saved, a check failed: {exc!r}", file=sys.stderr)
                status = 1
                continue
            nbformat.write(nb, path)
            print(f"{path.name}: saved with outputs ({time.monotonic() - started:.1f}s)")
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tests/test_notebooks.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--save", action="store_true", help="execute and write the notebooks back with outputs")
    parser.add_argument("names", nargs="*", help="notebook names (default: all)")
    args = parser.parse_args(argv)
    if not args.save:
        parser.print_help()
        return 2
    return save(args.names)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    raise SystemExit(main())
