"""notebooks/quickstart.ipynb in client mode: its cells run in order in a kernel started by a real
Jupyter server with the agh_nb extension, so every ``%agh`` word and ``agh_nb.get_host()`` go
over the server's HTTP API (``RemoteHost``).

The notebook is read when the test runs (its prose and cells may change); the assertions are on
behaviour: no cell fails or prints ``agh: error:``, the session keeps its id across the resume,
its log is gapless with one ``session_stopped`` per life, and the tail opened in the first life
received the events of the second (it was not ended by the first stop).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.server.harness import Server, start_kernel

pytestmark = pytest.mark.timeout(180)

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "quickstart.ipynb"
BUDGET = 90.0  # seconds for the whole notebook (it takes well under half of that here)

# Run in the kernel after the notebook: what its objects saw, as one JSON document.
PROBE = """
import gc as _gc, json as _json, time as _time
import agh_nb as _agh_nb
_host = _agh_nb.get_host()
_stored = _host.events(s.id)
_tails = [o for o in _gc.get_objects() if type(o).__name__ == "EventTail" and o.session_id == s.id]
_deadline = _time.monotonic() + 15
while _tails and max(_tails[-1].sequences() or [0]) < _stored[-1].sequence and _time.monotonic() < _deadline:
    _time.sleep(0.1)
print(_json.dumps({
    "host": type(_host).__name__,
    "session_id": s.id,
    "state": _host.get(s.id).state.value,
    "stored": [[e.sequence, e.type] for e in _stored],
    "tails": [t.sequences() for t in _tails],
}))
"""


def _code_cells(path: Path) -> list[str]:
    notebook = json.loads(path.read_text(encoding="utf-8"))
    cells = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    return ["".join(c["source"]) if isinstance(c["source"], list) else c["source"] for c in cells]


def _json_documents(text: str) -> list[Any]:
    """The JSON documents a ``-o json`` cell printed (one per command)."""
    decoder, docs, i = json.JSONDecoder(), [], 0
    while True:
        i = text.find("{", i)
        if i < 0:
            return docs
        try:
            doc, i = decoder.raw_decode(text, i)
        except ValueError:
            i += 1
            continue
        docs.append(doc)


def test_quickstart_runs_in_client_mode(server: Server) -> None:
    cells = _code_cells(NOTEBOOK)
    assert any("session resume" in c for c in cells) and any("agh tail" in c for c in cells), "not the quickstart?"
    kernel = start_kernel(server)
    started = time.monotonic()
    records: list[dict[str, Any]] = []
    try:
        for index, code in enumerate(cells):
            out = kernel.run(code, timeout=max(5.0, BUDGET - (time.monotonic() - started)))
            where = f"cell {index}: {code[:80]!r}"
            assert not out["error"], f"{where} raised {out['error']}\n{out['stderr'][-2000:]}"
            printed = out["stdout"] + out["stderr"]
            assert "agh: error:" not in printed, f"{where} printed {printed[-2000:]}"
            if "-o json" in code:
                records += [d for d in _json_documents(out["stdout"]) if isinstance(d, dict) and "state" in d]
        elapsed = time.monotonic() - started
        probe = kernel.json(PROBE)
    finally:
        server.request("DELETE", f"/api/kernels/{kernel.id}")

    assert elapsed < BUDGET, f"the notebook took {elapsed:.0f}s"
    assert probe["host"] == "RemoteHost"  # client mode: the kernel spoke to the server's host
    sid = probe["session_id"]
    assert server.ok("GET", f"/sessions/{sid}")["state"] == probe["state"] == "stopped"

    # One session, two lives: a gapless log in the server's store, a session_stopped per life,
    # user turns on both sides of the first stop.
    stored = server.events(sid)
    assert [[e["sequence"], e["type"]] for e in stored] == probe["stored"]
    assert [e["sequence"] for e in stored] == list(range(1, len(stored) + 1))
    stops = [e["sequence"] for e in stored if e["type"] == "session_stopped"]
    assert len(stops) == 2 and stops[-1] == stored[-1]["sequence"], stops
    prompts = [e["sequence"] for e in stored if e["type"] == "user_message"]
    assert any(p < stops[0] for p in prompts) and any(p > stops[0] for p in prompts), (prompts, stops)
    # The stop records the cells printed (-o json) are this session's, stopped.
    assert records and all(r["id"] == sid and r["state"] == "stopped" for r in records), records

    # The tail widget opened in the first life kept going past the first stop, to the last event.
    assert probe["tails"], "the notebook opened no tail on its session"
    tail = probe["tails"][-1]
    assert stops[0] in tail, f"the tail missed the first stop #{stops[0]}: {tail}"
    assert max(tail) == stored[-1]["sequence"], f"the tail ended at #{max(tail)}, the log at #{stored[-1]['sequence']}"
    assert all(s > stops[0] for s in tail[tail.index(stops[0]) + 1 :]) and len(tail) > tail.index(stops[0]) + 1
