"""The bubblewrap sandbox (issue 11): real processes run in it, and what they can reach.

Each attack runs a real shell inside a real sandbox built from a ``SandboxPolicy``; each check
would fail on an unconfined process (``test_the_same_attacks_succeed_without_the_sandbox``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from agh_nb.adapters import sandbox
from agh_nb.adapters.sandbox import Confinement, Launch, SandboxUnavailableError, confinement, unconfined
from agh_nb.config import Settings
from agh_nb.core.sandbox_policy import SandboxPolicy, sandbox_policy

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the sandbox is Linux-only")

SECRET = "vault-key-material-0123456789"


def bwrap() -> str:
    found = shutil.which("bwrap")
    assert found, "bubblewrap is missing: run scripts/setup.sh as root (apt-get install bubblewrap)"
    return found


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    """A user home with agent state and a dotfile, an AGH_HOME with a vault key, a workspace,
    and a directory outside everything."""
    home = tmp_path / "user"
    (home / ".agent-state").mkdir(parents=True)
    (home / ".bashrc").write_text("# dotfile\n")
    agh = tmp_path / "agh-home"
    (agh / "sessions" / "sess_other").mkdir(parents=True)
    (agh / "vault.key").write_text(SECRET)
    (agh / "sessions" / "sess_other" / "meta.json").write_text('{"secret": "%s"}' % SECRET)
    ws = tmp_path / "ws"
    ws.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "file").write_text("outside contents\n")
    return {"home": home, "agh": agh, "ws": ws, "outside": outside}


def policy(tree: dict[str, Path], **changes: object) -> SandboxPolicy:
    settings = Settings(sandbox_writable=("~/.agent-state",))
    base = sandbox_policy(
        settings, None, workspace=str(tree["ws"]), permissions="approve-all", agh_home=str(tree["agh"]), home=str(tree["home"])
    )
    from dataclasses import replace

    return replace(base, **changes)  # type: ignore[arg-type]


def run(launch: Launch, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            launch.argv, env=launch.env, cwd=launch.cwd, pass_fds=launch.pass_fds,
            capture_output=True, text=True, timeout=timeout,
        )
    finally:
        launch.close()


def shell(box: Confinement | None, script: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/"), **(env or {})}
    argv = ["/bin/sh", "-c", script]
    return run(box.launch(argv, env, str(cwd)) if box else unconfined(argv, env, str(cwd)))


KEEP = (sys.prefix, sys.base_prefix, os.path.realpath(sys.executable))
"""What the driver keeps visible for an agent run by this interpreter (its home may be hidden)."""


def confine(p: SandboxPolicy) -> Confinement:
    return Confinement(p, bwrap(), keep=KEEP)


ATTACKS = [
    pytest.param("cat {agh}/vault.key", id="read-vault-key"),
    pytest.param("cat {agh}/sessions/sess_other/meta.json", id="read-other-session"),
    pytest.param("ls {agh} | grep -q vault.key && echo {secret_marker}", id="list-agh-home"),
    pytest.param("cat /proc/{host_pid}/root{agh}/vault.key", id="proc-root-of-host"),
    pytest.param("cat /proc/{host_pid}/cwd/../agh-home/vault.key", id="proc-cwd-of-host"),
]


@pytest.mark.parametrize("attack", ATTACKS)
def test_agh_home_and_host_processes_are_invisible(tree: dict[str, Path], attack: str) -> None:
    script = attack.format(agh=tree["agh"], host_pid=os.getpid(), secret_marker=SECRET)
    result = shell(confine(policy(tree)), script, tree["ws"])
    assert SECRET not in result.stdout + result.stderr


@pytest.mark.parametrize("attack", ATTACKS[:2])
def test_the_same_attacks_succeed_without_the_sandbox(tree: dict[str, Path], attack: str) -> None:
    # The control: the attacks above are real, they only fail inside the sandbox.
    script = attack.format(agh=tree["agh"], host_pid=os.getpid(), secret_marker=SECRET)
    assert SECRET in shell(None, script, tree["ws"]).stdout


def test_host_processes_environment_is_out_of_reach(tree: dict[str, Path]) -> None:
    # A host process holding a token in its environment (a Jupyter server, a kernel).
    sleeper = subprocess.Popen(["sleep", "60"], env={"HOST_ONLY_TOKEN": SECRET, "PATH": os.environ["PATH"]})
    script = "cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n' | grep HOST_ONLY_TOKEN"
    try:
        assert SECRET in shell(None, script, tree["ws"]).stdout  # the control: it is there to find
        assert SECRET not in shell(confine(policy(tree)), script, tree["ws"]).stdout
    finally:
        sleeper.kill()
        sleeper.wait()


def test_only_the_workspace_and_agent_state_are_writable(tree: dict[str, Path]) -> None:
    box = confine(policy(tree))
    home = tree["home"]
    script = (
        f"echo a > {tree['ws']}/made && echo ws-ok; "
        f"echo b > {home}/.agent-state/login && echo state-ok; "
        f"echo c > {tree['outside']}/new; echo d > {home}/.bashrc; cp {tree['ws']}/made {tree['outside']}/; "
        f"mkdir {home}/.newdir; echo e > /etc/agh-nb-test; true"
    )
    result = shell(box, script, tree["ws"])
    assert "ws-ok" in result.stdout and "state-ok" in result.stdout, result.stderr
    assert (tree["ws"] / "made").read_text() == "a\n"
    assert (home / ".agent-state" / "login").read_text() == "b\n"
    assert not (tree["outside"] / "new").exists() and not (tree["outside"] / "made").exists()
    assert (home / ".bashrc").read_text() == "# dotfile\n"
    assert not (home / ".newdir").exists() and not Path("/etc/agh-nb-test").exists()
    assert "Read-only file system" in result.stderr


def test_deny_all_makes_the_workspace_read_only(tree: dict[str, Path]) -> None:
    (tree["ws"] / "keep").write_text("original\n")
    box = confine(policy(tree, workspace_writable=False))
    result = shell(box, f"cat keep; echo changed > keep; echo new > {tree['ws']}/new", tree["ws"])
    assert result.stdout.startswith("original")
    assert (tree["ws"] / "keep").read_text() == "original\n" and not (tree["ws"] / "new").exists()


def test_agh_home_inside_the_workspace_is_still_hidden(tmp_path: Path, tree: dict[str, Path]) -> None:
    agh = tree["ws"] / ".agh-nb"
    agh.mkdir()
    (agh / "vault.key").write_text(SECRET)
    box = confine(policy(tree, hidden=(str(agh),)))
    result = shell(box, f"cat {agh}/vault.key; echo w > {tree['ws']}/ok && echo wrote", tree["ws"])
    assert SECRET not in result.stdout and "wrote" in result.stdout


def test_workspace_inside_agh_home_is_visible_but_not_the_rest(tree: dict[str, Path]) -> None:
    ws = tree["agh"] / "projects" / "p"
    ws.mkdir(parents=True)
    box = confine(policy(tree, workspace=str(ws)))
    result = shell(box, f"echo hi > {ws}/f && echo wrote; cat {tree['agh']}/vault.key", ws)
    assert "wrote" in result.stdout and SECRET not in result.stdout
    assert (ws / "f").read_text() == "hi\n"


def test_private_tmp_and_run(tree: dict[str, Path], tmp_path: Path) -> None:
    marker = Path("/tmp") / f"agh-sandbox-marker-{os.getpid()}"
    marker.write_text(SECRET)
    try:
        result = shell(confine(policy(tree)), f"cat {marker}; ls /run; echo x > /tmp/inside && echo tmp-writable", tree["ws"])
    finally:
        marker.unlink()
    assert SECRET not in result.stdout and "tmp-writable" in result.stdout
    assert not Path("/tmp/inside").exists()


def test_an_interpreter_kept_under_tmp_is_bound_back_alone(tree: dict[str, Path]) -> None:
    # A checkout or virtualenv under /tmp (a clean clone there): what the agent runs from comes back
    # read-only inside the private /tmp; nothing else of the host's /tmp does.
    base = Path("/tmp") / f"agh-sandbox-venv-{os.getpid()}"
    (base / "venv" / "bin").mkdir(parents=True)
    tool = base / "venv" / "bin" / "tool"
    tool.write_text("#!/bin/sh\necho tool-ran\n")
    tool.chmod(0o755)
    (base / "sibling").write_text(SECRET)
    try:
        box = Confinement(policy(tree), bwrap(), keep=(*KEEP, str(base / "venv")))
        result = shell(box, f"{tool}; cat {base}/sibling; touch {base}/venv/new && echo venv-writable", tree["ws"])
    finally:
        shutil.rmtree(base)
    assert "tool-ran" in result.stdout, result.stderr
    assert SECRET not in result.stdout and "venv-writable" not in result.stdout


def test_jupyter_runtime_dir_is_hidden(tree: dict[str, Path]) -> None:
    runtime = tree["home"] / "jrt"
    runtime.mkdir()
    (runtime / "kernel-1.json").write_text(SECRET)
    box = Confinement(policy(tree), bwrap(), keep=KEEP, environ={"JUPYTER_RUNTIME_DIR": str(runtime)})
    assert SECRET not in shell(box, f"cat {runtime}/kernel-1.json", tree["ws"]).stdout


def test_network_off_cuts_a_host_loopback_server(tree: dict[str, Path]) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    probe = f"{sys.executable} -c \"import socket; socket.create_connection(('127.0.0.1', {port}), 5); print('connected')\""
    try:
        on = shell(confine(policy(tree, network=True)), probe, tree["ws"])
        off = shell(confine(policy(tree, network=False)), probe, tree["ws"])
    finally:
        server.close()
    assert "connected" in on.stdout, on.stderr
    assert "connected" not in off.stdout and "ConnectionRefusedError" in off.stderr


def test_environment_values_stay_off_the_command_line(tree: dict[str, Path]) -> None:
    launch = confine(policy(tree)).launch(["/bin/true"], {"API_KEY": SECRET}, str(tree["ws"]))
    try:
        assert SECRET not in " ".join(launch.argv) and launch.env == {}
    finally:
        launch.close()
    result = shell(confine(policy(tree)), "echo $API_KEY; echo ${LD_PRELOAD:-none}", tree["ws"], {"API_KEY": SECRET, "LD_PRELOAD": "/nonexistent.so"})
    # Inside, the value is there; bubblewrap itself ran with an empty environment (the preload
    # named by the agent did not apply to it, or it would have failed to start).
    assert result.stdout.split() == [SECRET, "/nonexistent.so"]


def test_the_process_dies_with_its_parent(tree: dict[str, Path]) -> None:
    # A parent that spawns a sandboxed sleeper, prints its pid, then is SIGKILLed.
    script = f"""
import os, subprocess, sys, signal
sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
from agh_nb.adapters.sandbox import Confinement
from agh_nb.core.sandbox_policy import SandboxPolicy
p = SandboxPolicy(mode="auto", network=True, workspace={str(tree['ws'])!r}, workspace_writable=True, home={str(tree['home'])!r})
launch = Confinement(p, {bwrap()!r}).launch(["/bin/sh", "-c", "echo $$; exec sleep 600"], {{"PATH": "/usr/bin:/bin"}}, {str(tree['ws'])!r})
child = subprocess.Popen(launch.argv, env=launch.env, cwd=launch.cwd, pass_fds=launch.pass_fds, stdout=subprocess.PIPE, text=True)
print(child.pid, flush=True)
child.stdout.readline()
os.kill(os.getpid(), signal.SIGKILL)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    bwrap_pid = int(proc.stdout.split()[0])
    # Everything in the sandbox's pid namespace dies with bubblewrap (SIGKILL by --die-with-parent).
    from tests.conftest import wait_until

    wait_until(lambda: not _alive(bwrap_pid), timeout=20)
    assert not any("sleep 600" in _cmdline(pid) for pid in _pids())


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_required_without_bubblewrap_says_why(tree: dict[str, Path]) -> None:
    missing = str(tree["outside"] / "no-bwrap")
    with pytest.raises(SandboxUnavailableError, match="required.*no-bwrap.*not an executable file"):
        asyncio.run(confinement(policy(tree, mode="required", bwrap=missing)))
    assert asyncio.run(confinement(policy(tree, mode="auto", bwrap=missing))) is None
    assert asyncio.run(confinement(policy(tree, mode="off"))) is None
    assert isinstance(asyncio.run(confinement(policy(tree, mode="required"))), Confinement)


def test_a_bubblewrap_that_cannot_sandbox_is_probed_once(tree: dict[str, Path]) -> None:
    fake = tree["outside"] / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to creating new namespace' >&2\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(SandboxUnavailableError, match="cannot create a sandbox here.*No permissions"):
        asyncio.run(confinement(policy(tree, mode="required", bwrap=str(fake))))
    assert (str(fake), True) in sandbox._probes
    fake.write_text("#!/bin/sh\nexit 0\n")  # the verdict is cached: no second probe
    assert asyncio.run(confinement(policy(tree, mode="auto", bwrap=str(fake)))) is None


def test_agent_md_overrides_config(tmp_path: Path) -> None:
    from agh_nb.config import AgentDefinition, SandboxOverride

    settings = Settings(sandbox_mode="auto", sandbox_network=True)
    definition = AgentDefinition(
        name="a", command=("x",), sandbox=SandboxOverride(mode="required", network=False, writable=("~/.a/", "~/.b", "~/.c.json"))
    )
    p = sandbox_policy(settings, definition, workspace="/w", permissions="deny-all", agh_home="/h", home="/u")
    assert (p.mode, p.network, p.workspace_writable) == ("required", False, False)
    assert "/u/.a" in p.writable and "/u/.b" in p.writable and "/u/.claude" in p.writable
    assert p.create == ("/u/.a/", "/u/.c.json")
    assert p.hidden[0] == "/h" and "/u/.agh-nb" in p.hidden
