"""``python -m agh_nb.quickstart``: execute the quickstart notebook against the demo agent.

Owns: running ``notebooks/quickstart.ipynb`` in a real kernel (nbclient), saving the executed
copy under ``$AGH_HOME/notebooks/``, and printing where everything is.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agh_nb.config import agh_home
from agh_nb.core.private import make_private_dirs

REPO_NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def main(argv: list[str] | None = None) -> int:
    """Execute the notebook; return 0 when every cell ran."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    parser = argparse.ArgumentParser(prog="python -m agh_nb.quickstart")
    parser.add_argument("notebook", nargs="?", default=str(REPO_NOTEBOOKS / "quickstart.ipynb"))
    parser.add_argument("--timeout", type=int, default=300, help="seconds allowed per cell")
    args = parser.parse_args(argv)
    source = Path(args.notebook)
    if not source.is_file():
        print(f"quickstart: no notebook at {source}", file=sys.stderr)
        return 1
    home = agh_home()
    out_dir = make_private_dirs(home / "notebooks")  # under $AGH_HOME: owner-only (SPEC 7)
    target = out_dir / source.name
    target.touch(mode=0o600)
    target.chmod(0o600)  # an older copy may be wider; nbformat.write keeps the mode
    nb = nbformat.read(source, as_version=4)
    client = NotebookClient(nb, timeout=args.timeout, kernel_name="python3", resources={"metadata": {"path": str(source.parent)}})
    print(f"quickstart: executing {source} against the built-in demo agent ...", flush=True)
    try:
        client.execute()
    except CellExecutionError as exc:
        nbformat.write(nb, target)
        print(f"quickstart: a cell failed; the partial notebook is at {target}\n{exc}", file=sys.stderr)
        return 1
    nbformat.write(nb, target)
    errors = [
        out.get("text", "")
        for cell in nb.cells
        for out in cell.get("outputs", [])
        if out.get("name") == "stderr" and "agh: error" in out.get("text", "")
    ]
    if errors:
        print(f"quickstart: the notebook reported errors; see {target}:\n" + "".join(errors), file=sys.stderr)
        return 1
    print(f"quickstart: done. Executed notebook: {target}")
    print(f"quickstart: sessions and events are in {home / 'agh.duckdb'} (query with: .venv/bin/agh-nb sql \"SELECT * FROM sessions\")")
    # The executed copy, not the repository's notebook: that one holds outputs saved on another machine.
    print(f"quickstart: open the executed notebook in JupyterLab with: {_jupyter()} lab {target}")
    return 0


def _jupyter() -> str:
    """The ``jupyter`` beside this interpreter (the venv's), else plain ``jupyter``."""
    candidate = Path(sys.executable).parent / "jupyter"
    return str(candidate) if candidate.exists() else "jupyter"


if __name__ == "__main__":
    raise SystemExit(main())
