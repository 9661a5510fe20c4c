"""TerminalManager with real subprocesses: output, exit codes, signals, truncation at character
boundaries, the environment allowlist, process groups, release and aclose without leaks."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from agh_nb.adapters.terminals import (
    DEFAULT_OUTPUT_BYTE_LIMIT,
    TerminalManager,
    TerminalsClosedError,
    UnknownTerminalError,
)
from agh_nb.errors import AghError

T = TypeVar("T")
PY = sys.executable
TEST_TIMEOUT = 30.0


def run(test: Callable[[], Awaitable[T]]) -> T:
    """Run one async test body on a fresh loop, bounded so a hung child fails instead of hanging."""

    async def bounded() -> T:
        async with asyncio.timeout(TEST_TIMEOUT):
            return await test()

    return asyncio.run(bounded())


async def until(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.02)


def alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (killed, not yet reaped by init) counts as dead."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def only_this_task_left() -> bool:
    return asyncio.all_tasks() == {asyncio.current_task()}


@pytest.fixture
def cwd(tmp_path: Path) -> Path:
    return tmp_path.resolve()


async def finished(terminals: TerminalManager, command: str, args: list[str], cwd: Path, **kw: object) -> tuple[str, bool, object]:
    """Create, wait for exit, return ``output()``."""
    tid = await terminals.create(command, args, cwd=cwd, env=kw.pop("env", {}), output_byte_limit=kw.pop("limit", None))  # type: ignore[arg-type]
    await terminals.wait_for_exit(tid)
    return tuple(terminals.output(tid))  # type: ignore[return-value]


# -- output and exit ---------------------------------------------------------------------------


def test_echo_output_and_exit_code_zero(cwd: Path) -> None:
    async def body() -> None:
        async with TerminalManager() as terminals:
            tid = await terminals.create("echo", ["hello", "world"], cwd=cwd, env={}, output_byte_limit=None)
            assert tid.startswith("term_") and len(tid) == len("term_") + 16
            status = await terminals.wait_for_exit(tid)
            assert status == {"exit_code": 0, "signal": None}
            assert terminals.output(tid) == ("hello world\n", False, {"exit_code": 0, "signal": None})
            assert terminals.ids == [tid]
        assert only_this_task_left()

    run(body)


@pytest.mark.parametrize("code", [pytest.param(1, id="exit-1"), pytest.param(3, id="exit-3"), pytest.param(255, id="exit-255")])
def test_exit_code_is_reported(cwd: Path, code: int) -> None:
    async def body() -> None:
        async with TerminalManager() as terminals:
            assert await finished(terminals, "sh", ["-c", f"exit {code}"], cwd) == ("", False, {"exit_code": code, "signal": None})

    run(body)


def test_stdout_and_stderr_are_one_stream_in_order(cwd: Path) -> None:
    async def body() -> None:
        async with TerminalManager() as terminals:
            output, _, _ = await finished(terminals, "sh", ["-c", "echo out1; echo err >&2; echo out2"], cwd)
            assert output == "out1\nerr\nout2\n"

    run(body)


def test_output_while_running_then_exit_status(cwd: Path) -> None:
    async def body() -> None:
        async with TerminalManager() as terminals:
            go = cwd / "go"
            script = f"import os,sys,time\nprint('first', flush=True)\nwhile not os.path.exists({str(go)!r}): time.sleep(0.01)\nprint('second')"
            tid = await terminals.create(PY, ["-c", script], cwd=cwd, env={}, output_byte_limit=None)
            await until(lambda: terminals.output(tid).output == "first\n")
            assert terminals.output(tid).exit_status is None
            go.touch()
            assert await terminals.wait_for_exit(tid) == {"exit_code": 0, "signal": None}
            assert terminals.output(tid).output == "first\nsecond\n"

    run(body)


def test_wait_for_exit_waits_and_concurrent_waiters_agree(cwd: Path) -> None:
    async def body() -> None:
        async with TerminalManager() as terminals:
            tid = await terminals.create("sh", ["-c", "sleep 0.3; exit 7"], cwd=cwd, env={}, output_byte_limit=None)
            started = time.monotonic()
            a, b = await asyncio.gather(terminals.wait_for_exit(tid), terminals.wait_for_exit(tid))
            assert time.monotonic() - started >= 0.25
            assert a == b == {"exit_code": 7, "signal": None}
            assert await terminals.wait_for_exit(tid) == a  # after exit: immediate

    run(body)


def test_cwd_is_respected(cwd: Path) -> None:
    async def body() -> None:
        (cwd / "sub").mkdir()
        async with TerminalManager() as terminals:
            output, _, _ = await finished(terminals, "pwd", [], cwd / "sub")
            assert output == f"{cwd / 'sub'}\n"

    run(body)


# -- kill and signals --------------------------------------------------------------------------


def test_kill_reports_the_signal_and_keeps_the_terminal(cwd: Path) -> None:
    async def body() -> None:
        async with TerminalManager() as terminals:
            tid = await terminals.create("sh", ["-c", "echo ready; exec sleep 60"], cwd=cwd, env={}, output_byte_limit=None)
            await until(lambda: terminals.output(tid).output == "ready\n")
            await terminals.kill(tid)
            assert terminals.output(tid) == ("ready\n", False, {"exit_code": None, "signal": "SIGKILL"})
            assert await terminals.wait_for_exit(tid) == {"exit_code": None, "signal": "SIGKILL"}
            await terminals.kill(tid)  # killing an exited terminal is harmless
            assert terminals.output(tid).exit_status == {"exit_code": None, "signal": "SIGKILL"}

    run(body)


def test_signal_from_elsewhere_is_reported_by_name(cwd: Path) -> None:
    async def body() -> None:
        async with TerminalManager() as terminals:
            tid = await terminals.create("sh", ["-c", "kill -TERM $$"], cwd=cwd, env={}, output_byte_limit=None)
            assert await terminals.wait_for_exit(tid) == {"exit_code": None, "signal": "SIGTERM"}

    run(body)


def test_kill_reaches_the_whole_process_group(cwd: Path) -> None:
    async def body() -> None:
        async with TerminalManager() as terminals:
            tid = await terminals.create("sh", ["-c", "sleep 60 & echo $!; wait"], cwd=cwd, env={}, output_byte_limit=None)
            await until(lambda: terminals.output(tid).output.endswith("\n"))
            grandchild = int(terminals.output(tid).output)
            assert alive(grandchild)
            await terminals.kill(tid)
            await until(lambda: not alive(grandchild), timeout=5)

    run(body)


def test_exit_is_reported_even_if_a_grandchild_keeps_the_pipe_open(cwd: Path) -> None:
    async def body() -> None:
        async with TerminalManager(drain_timeout=0.2) as terminals:
            tid = await terminals.create("sh", ["-c", "sleep 60 & echo $!"], cwd=cwd, env={}, output_byte_limit=None)
            assert await terminals.wait_for_exit(tid) == {"exit_code": 0, "signal": None}
            grandchild = int(terminals.output(tid).output)
            assert alive(grandchild)
            await terminals.release(tid)  # the group still holds the pipe: release kills it
            await until(lambda: not alive(grandchild), timeout=5)
        assert only_this_task_left()

    run(body)


def test_release_cuts_off_a_grandchild_that_left_the_group(cwd: Path) -> None:
    escaped: list[int] = []

    async def body() -> None:
        script = (
            "import subprocess, sys\n"
            "p = subprocess.Popen(['sleep', '60'], start_new_session=True)\n"
            "print(p.pid, flush=True)"
        )
        async with TerminalManager(drain_timeout=0.2) as terminals:
            tid = await terminals.create(PY, ["-c", script], cwd=cwd, env={}, output_byte_limit=None)
            await terminals.wait_for_exit(tid)
            escaped.append(int(terminals.output(tid).output))
            await terminals.release(tid)  # must not hang on, or leak, the pipe the escapee holds
        assert only_this_task_left()

    try:
        run(body)
    finally:
        for pid in escaped:  # a process this test started, by its id
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


# -- truncation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("char", "limit"),
    [
        pytest.param("é", 11, id="2-byte-odd-limit"),
        pytest.param("€", 10, id="3-byte-limit-not-multiple"),
        pytest.param("€", 11, id="3-byte-limit-off-by-two"),
        pytest.param("🙂", 9, id="4-byte-limit-off-by-one"),
        pytest.param("🙂", 10, id="4-byte-limit-off-by-two"),
        pytest.param("🙂", 11, id="4-byte-limit-off-by-three"),
        pytest.param("a", 10, id="ascii"),
    ],
)
def test_truncation_keeps_the_tail_on_a_character_boundary(cwd: Path, char: str, limit: int) -> None:
    async def body() -> None:
        # Written in small odd-sized pieces so cuts happen in many places, not once at the end.
        script = (
            "import sys, time\n"
            f"data = ('START' + {char!r} * 3000 + 'END').encode()\n"
            "for i in range(0, len(data), 7):\n"
            "    sys.stdout.buffer.write(data[i:i+7]); sys.stdout.buffer.flush()\n"
        )
        async with TerminalManager() as terminals:
            output, truncated, status = await finished(terminals, PY, ["-c", script], cwd, limit=limit)
            assert status == {"exit_code": 0, "signal": None}
            assert truncated is True
            assert "\ufffd" not in output
            assert output.endswith("END")
            assert set(output[:-3]) <= {char}
            width = len(char.encode())
            assert len(output.encode()) == 3 + (limit - 3) // width * width  # the most whole chars that fit

    run(body)


def test_output_at_the_limit_is_not_truncated(cwd: Path) -> None:
    async def body() -> None:
        async with TerminalManager() as terminals:
            assert await finished(terminals, "printf", ["%s", "abcdefghij"], cwd, limit=10) == (
                "abcdefghij",
                False,
                {"exit_code": 0, "signal": None},
            )
            output, truncated, _ = await finished(terminals, "printf", ["%s", "abcdefghijk"], cwd, limit=10)
            assert (output, truncated) == ("bcdefghijk", True)

    run(body)


def test_zero_limit_keeps_nothing(cwd: Path) -> None:
    async def body() -> None:
        async with TerminalManager() as terminals:
            output, truncated, _ = await finished(terminals, "echo", ["x"], cwd, limit=0)
            assert (output, truncated) == ("", True)

    run(body)


def test_default_limit_is_one_mebibyte(cwd: Path) -> None:
    async def body() -> None:
        script = "import sys; sys.stdout.write('x' * (3 * 1024 * 1024) + 'END')"
        async with TerminalManager() as terminals:
            output, truncated, _ = await finished(terminals, PY, ["-c", script], cwd)
            assert truncated and output.endswith("END") and len(output) == DEFAULT_OUTPUT_BYTE_LIMIT

    run(body)


def test_a_character_still_arriving_is_held_back(cwd: Path) -> None:
    async def body() -> None:
        sent, go = cwd / "sent", cwd / "go"
        script = (
            "import os, sys, time\n"
            "sys.stdout.buffer.write(b'a\\xe2\\x82'); sys.stdout.buffer.flush()\n"
            f"open({str(sent)!r}, 'w').close()\n"
            f"while not os.path.exists({str(go)!r}): time.sleep(0.01)\n"
            "sys.stdout.buffer.write(b'\\xac')\n"
        )
        async with TerminalManager() as terminals:
            tid = await terminals.create(PY, ["-c", script], cwd=cwd, env={}, output_byte_limit=None)
            await until(lambda: sent.exists() and terminals.output(tid).output == "a")
            await asyncio.sleep(0.1)
            assert terminals.output(tid).output == "a"  # not "a\ufffd"
            go.touch()
            await terminals.wait_for_exit(tid)
            assert terminals.output(tid).output == "a€"

    run(body)


def test_invalid_utf8_from_the_command_is_replaced(cwd: Path) -> None:
    async def body() -> None:
        async with TerminalManager() as terminals:
            output, _, _ = await finished(terminals, "printf", ["ok\\377\\376\\342"], cwd)
            assert output == "ok\ufffd\ufffd\ufffd"  # the trailing partial character shows once exited

    run(body)


# -- environment -------------------------------------------------------------------------------


def test_parent_environment_does_not_leak(cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET_X", "from-the-parent")
    monkeypatch.setenv("HOME", "/home/allowed")

    async def body() -> None:
        async with TerminalManager() as terminals:
            output, _, _ = await finished(terminals, "env", [], cwd)
            names = {line.split("=", 1)[0] for line in output.splitlines()}
            assert "SECRET_X" not in names
            assert "HOME=/home/allowed" in output.splitlines()
            assert names <= {"PATH", "HOME", "LANG", "LC_ALL", "TERM", "TMPDIR", "USER", "LOGNAME", "SHELL", "PWD", "SHLVL", "_"}
            output, _, _ = await finished(terminals, "env", [], cwd, env={"SECRET_X": "given", "EXTRA": "1"})
            assert {"SECRET_X=given", "EXTRA=1"} <= set(output.splitlines())

    run(body)


def test_environment_source_is_a_collaborator(cwd: Path) -> None:
    async def body() -> None:
        fake = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", "AWS_SECRET_ACCESS_KEY": "nope"}
        async with TerminalManager(environ=fake) as terminals:
            output, _, _ = await finished(terminals, "env", [], cwd, env={"LANG": "override"})
            lines = set(output.splitlines())
            assert f"PATH={fake['PATH']}" in lines and "LANG=override" in lines
            assert not any(line.startswith("AWS_") for line in lines)

    run(body)


# -- errors ------------------------------------------------------------------------------------


def test_release_forgets_the_terminal(cwd: Path) -> None:
    async def body() -> None:
        async with TerminalManager() as terminals:
            tid = await terminals.create("sleep", ["60"], cwd=cwd, env={}, output_byte_limit=None)
            await terminals.release(tid)
            assert terminals.ids == []
            with pytest.raises(UnknownTerminalError, match=f"unknown terminal '{tid}'") as info:
                terminals.output(tid)
            assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError) and isinstance(info.value, AghError)
            assert str(info.value).startswith("unknown terminal")  # not KeyError's quoted repr
            for call in (terminals.wait_for_exit, terminals.kill, terminals.release):
                with pytest.raises(UnknownTerminalError):
                    await call(tid)
            with pytest.raises(UnknownTerminalError):
                terminals.output("term_never")
        assert only_this_task_left()

    run(body)


def test_release_while_waiting_fails_the_waiter_cleanly(cwd: Path) -> None:
    async def body() -> None:
        async with TerminalManager() as terminals:
            tid = await terminals.create("sleep", ["60"], cwd=cwd, env={}, output_byte_limit=None)
            waiter = asyncio.create_task(terminals.wait_for_exit(tid), name="test-waiter")
            await asyncio.sleep(0.05)
            await terminals.release(tid)
            # The release killed it, so the waiter sees the kill rather than an error.
            assert await waiter == {"exit_code": None, "signal": "SIGKILL"}

    run(body)


@pytest.mark.parametrize(
    ("command", "where", "message"),
    [
        pytest.param("definitely-not-a-command-xyz", None, "command not found: 'definitely-not-a-command-xyz'", id="command-missing"),
        pytest.param("./missing.sh", None, "command not found: './missing.sh'", id="relative-command-missing"),
        pytest.param("echo", "nowhere", "working directory .* does not exist", id="cwd-missing"),
    ],
)
def test_spawn_failures_are_clear(cwd: Path, command: str, where: str | None, message: str) -> None:
    async def body() -> None:
        async with TerminalManager() as terminals:
            with pytest.raises(FileNotFoundError, match=message):
                await terminals.create(command, [], cwd=cwd / where if where else cwd, env={}, output_byte_limit=None)
            assert terminals.ids == []
        assert only_this_task_left()

    run(body)


def test_not_executable_is_permission_error(cwd: Path) -> None:
    script = cwd / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)  # execve wants an x bit even from root

    async def body() -> None:
        async with TerminalManager() as terminals:
            with pytest.raises(PermissionError):
                await terminals.create(str(script), [], cwd=cwd, env={}, output_byte_limit=None)

    run(body)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"output_byte_limit": -1}, "output_byte_limit must be a non-negative integer", id="negative-limit"),
        pytest.param({"env": {"A=B": "x"}}, "invalid environment variable 'A=B'", id="env-name-with-equals"),
        pytest.param({"env": {"": "x"}}, "invalid environment variable ''", id="env-name-empty"),
    ],
)
def test_invalid_arguments_raise_value_error(cwd: Path, kwargs: dict[str, object], message: str) -> None:
    async def body() -> None:
        args: dict[str, object] = {"cwd": cwd, "env": {}, "output_byte_limit": None} | kwargs
        async with TerminalManager() as terminals:
            with pytest.raises(ValueError, match=message):
                await terminals.create("echo", [], **args)  # type: ignore[arg-type]

    run(body)


# -- aclose ------------------------------------------------------------------------------------


def test_aclose_kills_everything_and_leaves_no_tasks(cwd: Path) -> None:
    async def body() -> None:
        terminals = TerminalManager()
        ids = []
        for _ in range(3):
            tid = await terminals.create("sh", ["-c", "echo $$; exec sleep 60"], cwd=cwd, env={}, output_byte_limit=None)
            ids.append(tid)
        await until(lambda: all(terminals.output(t).output.endswith("\n") for t in ids))
        pids = [int(terminals.output(t).output) for t in ids]
        assert all(alive(p) for p in pids)
        started = time.monotonic()
        await terminals.aclose()
        assert time.monotonic() - started < 5
        assert not any(alive(p) for p in pids)
        assert terminals.ids == []
        assert only_this_task_left()
        await terminals.aclose()  # idempotent
        with pytest.raises(TerminalsClosedError, match="closed"):
            await terminals.create("echo", [], cwd=cwd, env={}, output_byte_limit=None)
        with pytest.raises(UnknownTerminalError):
            terminals.output(ids[0])

    run(body)


def test_ids_come_from_the_collaborator(cwd: Path) -> None:
    async def body() -> None:
        counter = iter(range(1, 100))
        async with TerminalManager(new_id=lambda: f"term_{next(counter)}") as terminals:
            first = await terminals.create("true", [], cwd=cwd, env={}, output_byte_limit=None)
            second = await terminals.create("true", [], cwd=cwd, env={}, output_byte_limit=None)
            assert (first, second) == ("term_1", "term_2")

    run(body)
