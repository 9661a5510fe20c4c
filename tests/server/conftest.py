"""Fixtures: a real Jupyter server subprocess per module (``server``) or per need (``server_factory``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.server.harness import Server, start_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server (and AGH_HOME) shared by the tests of a module."""
    srv = start_server(tmp_path_factory.mktemp("server"))
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start extra servers in this test; all are stopped afterwards."""
    started: list[Server] = []

    def make(name: str = "srv", **kwargs: Any) -> Server:
        srv = start_server(tmp_path / name, **kwargs)
        started.append(srv)
        return srv

    try:
        yield make
    finally:
        for srv in started:
            srv.stop()
