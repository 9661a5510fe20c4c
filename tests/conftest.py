"""Shared fixtures: a fresh AGH_HOME per test, agent definitions, and an embedded host."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agh_nb.api import Host
from agh_nb.core.private import make_private_dirs
from agh_nb.runtime import Runtime

DEMO = [sys.executable, "-m", "agh_nb.agents.demo"]

# Tests run their own hosts: never talk to a Jupyter server that happens to run this pytest.
os.environ.pop("AGH_NB_SERVER", None)

TESTS = Path(__file__).resolve().parent

# Lanes (pytest markers) by where a test lives; ``scripts/test.sh --fast`` runs FAST_LANES only.
LANE_OF_PATH = {
    "core": "core",
    "adapters": "adapters",
    "adapters/test_duckdb_store.py": "store",
    "vault": "vault",
    "agents": "agents",
    "test_config.py": "config",
    "server": "server",
    "kernel": "kernel",
    "browser": "browser",
    "test_notebooks.py": "notebooks",
    "test_third_party.py": "third_party",
    "test_architecture.py": "architecture",
}
FAST_LANES = ("core", "adapters", "vault", "config", "store", "agents")
"""Every test not in a more specific lane runs real sessions end to end: lane ``sessions``."""


def lane_of(path: Path) -> str:
    """The lane of a test file: the most specific entry of ``LANE_OF_PATH`` that contains it."""
    rel = path.resolve().relative_to(TESTS).as_posix()
    best = ""
    for prefix in LANE_OF_PATH:
        if (rel == prefix or rel.startswith(prefix + "/")) and len(prefix) > len(best):
            best = prefix
    return LANE_OF_PATH.get(best, "sessions")


def pytest_configure(config: pytest.Config) -> None:
    for lane in {*LANE_OF_PATH.values(), "sessions"}:
        config.addinivalue_line("markers", f"{lane}: tests of the {lane} lane (tests/conftest.py LANE_OF_PATH)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(getattr(pytest.mark, lane_of(Path(str(item.path)))))


def write_agent(home: Path, name: str, command: list[str], extra: str = "") -> Path:
    """Write ``$AGH_HOME/agents/<name>/AGENT.md`` with the given argv."""
    directory = make_private_dirs(home / "agents" / name)  # as agh_nb keeps its home (SPEC 7)
    argv = ", ".join(f'"{part}"' for part in command)
    path = directory / "AGENT.md"
    path.write_text(f"---\nname: {name}\ncommand: [{argv}]\n{extra}---\nTest agent {name}.\n", encoding="utf-8")
    path.chmod(0o600)
    return path


def wait_until(predicate: Callable[[], object], timeout: float = 30.0, interval: float = 0.05) -> object:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


@pytest.fixture
def agh_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh ``$AGH_HOME`` for this test."""
    home = tmp_path / "home"
    home.mkdir(mode=0o700)  # private, as agh_nb makes it: an open home is tightened with a warning
    monkeypatch.setenv("AGH_HOME", str(home))
    return home


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """An empty workspace directory."""
    ws = tmp_path / "ws"
    ws.mkdir()
    return ws


@pytest.fixture
def host(agh_home: Path) -> Iterator[Host]:
    """An embedded host on a fresh store; closed (sessions stopped) after the test."""
    h = Host(Runtime.start(home=agh_home))
    try:
        yield h
    finally:
        h.close()
