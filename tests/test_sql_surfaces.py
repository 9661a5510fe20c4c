"""The reported SQL bypass (issue 11), on each surface that runs user SQL: a file named after a CTE
defined elsewhere in the same query read other workspaces' ledgers and the vault's ciphertext.
``host.sql`` (embedded host), ``agh-nb sql`` (the read-only opener) and ``%%agh sql`` (a real
kernel) now refuse it in one line; ``POST /agh/api/sql`` is in tests/server/test_bad_input.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agh_nb.api import Host
from agh_nb.errors import QueryError
from agh_nb.runtime import Runtime
from tests.kernel.conftest import open_kernel, write_demo_agent

pytestmark = pytest.mark.timeout(120)


def attacks(home: Path, ledger: Path) -> list[str]:
    vault = home / "vault" / "vault.json"
    return [
        f"WITH x AS (SELECT 1) SELECT * FROM '{ledger}'",
        f"WITH x AS (SELECT 1) SELECT * FROM read_json('{vault}')",
        f"WITH ledger AS (SELECT 1) SELECT * FROM ledger, '{vault}'",
        f"SELECT * FROM read_text('{home / 'vault.key'}')",
    ]


@pytest.fixture
def stopped_home(agh_home: Path, workspace: Path) -> tuple[Path, Path, str]:
    """A home with a stopped session (its ledger), a stored secret and the vault key.

    Returns the home, the ledger, and a line hash found only inside the ledger file (what a
    successful read would show; the ledger's path, echoed in a refusal, names the session).
    """
    host = Host(Runtime.start(home=agh_home))
    try:
        host.vault_put("vault:providers/example", "the-secret-value-0042", kind="api_key")
        record = host.create("demo-fast", cwd=str(workspace))
        host.prompt(record.id, "hello").wait(30)
        stopped = host.stop(record.id)
    finally:
        host.close()
    ledger = next(agh_home.rglob("ledger.jsonl"))
    ciphertext = (agh_home / "vault" / "vault.json").read_text()
    assert stopped.id in ledger.read_text() and "ciphertext" in ciphertext
    return agh_home, ledger, json.loads(ledger.read_text().splitlines()[-1])["hash"]


def test_host_sql_refuses_the_cte_file_read(stopped_home: tuple[Path, Path, str]) -> None:
    home, ledger, marker = stopped_home
    host = Host(Runtime.start(home=home))
    try:
        for query in attacks(home, ledger):
            with pytest.raises(QueryError) as caught:
                host.sql(query)
            assert "\n" not in str(caught.value) and marker not in str(caught.value)
        assert host.sql("SELECT count(*) AS n FROM events")["n"].tolist()[0] > 0
    finally:
        host.close()


def test_agh_nb_sql_refuses_the_cte_file_read(stopped_home: tuple[Path, Path, str]) -> None:
    home, ledger, marker = stopped_home
    env = dict(os.environ, AGH_HOME=str(home))
    env.pop("AGH_NB_SERVER", None)
    for query in attacks(home, ledger):
        proc = subprocess.run(
            [sys.executable, "-m", "agh_nb.cli", "sql", query], env=env, capture_output=True, text=True, timeout=60
        )
        assert proc.returncode != 0 and proc.stdout == "", proc.stdout
        assert proc.stderr.startswith("agh-nb: error:") and proc.stderr.count("\n") == 1, proc.stderr
        assert marker not in proc.stderr and "Traceback" not in proc.stderr


def test_agh_sql_magic_refuses_the_cte_file_read(stopped_home: tuple[Path, Path, str], tmp_path: Path) -> None:
    home, ledger, marker = stopped_home
    write_demo_agent(home)
    with open_kernel(home, tmp_path, tmp_path / "kernel.log") as kernel:
        for query in attacks(home, ledger)[:2]:
            cell = kernel.run(f"%%agh sql\n{query}")
            assert cell.stderr.startswith("agh: error:") and "Traceback" not in cell.stderr, cell.describe()
            assert marker not in cell.stdout + cell.stderr and cell.result is None, cell.describe()
        shown = kernel.ok("%%agh sql\nSELECT count(*) AS n FROM events")
        assert shown.result is not None
