"""The sandbox of agent processes and their terminals, on Linux: bubblewrap (``bwrap``).

Owns: ``Confinement`` (turns a ``SandboxPolicy`` into a bubblewrap command line and wraps each
spawn in it), ``confinement`` (decides, per policy, whether to sandbox: ``off``, ``auto``,
``required``) and the once-per-host probe of whether bubblewrap works here. Imports no acp;
must not import core.session, runtime, kernel or server.

Inside, the whole file system is visible read-only, except:
- ``/dev`` is a minimal fresh one (null, zero, random, tty...: no disks), ``/proc`` is a fresh one
  of a private pid namespace (no host process, no ``/proc/<pid>/root`` or ``/fd`` into the host);
- ``/tmp``, ``/var/tmp`` and ``/run`` are private, empty tmpfs (the resolver's file is bound back
  when ``/etc/resolv.conf`` points into ``/run``): no host sockets, runtime dirs or temp files;
- other users' homes are empty (except the parts the workspace or the interpreter live in);
- the agent-state paths that exist (``~/.claude``...) are writable;
- the workspace is writable (read-only under ``deny-all``);
- ``$AGH_HOME``, the default ``~/.agh-nb`` and the Jupyter runtime directory (server tokens,
  kernel connection files with their HMAC keys) are replaced by empty tmpfs: not visible at all;
- with ``network = false`` there is no network but a private loopback.
Processes also get their own IPC and UTS namespaces, no capabilities, and die with the host
(``--die-with-parent``; every process of the pid namespace dies with its first one).

The bubblewrap options travel through a memfd (``--args FD``), not the command line: environment
values (API keys) never show in ``ps``. bubblewrap itself runs with an empty environment, so a
variable chosen by the agent (``LD_PRELOAD`` for a terminal) applies only inside.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from agh_nb.config import path_within
from agh_nb.core.sandbox_policy import SandboxPolicy
from agh_nb.errors import AghError

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 10.0
_probes: dict[tuple[str, bool], str | None] = {}
"""(bwrap path, network) -> None when bubblewrap works, else why not: probed once per host."""
_probe_lock: asyncio.Lock | None = None


class SandboxUnavailableError(AghError):
    """Raised when ``[sandbox] mode = "required"`` and bubblewrap cannot sandbox the agent."""


@dataclass
class Launch:
    """One command ready to spawn: argv, environment, working directory and fds to pass.

    ``close()`` (idempotent) closes our copy of the passed fds once the child has been spawned.
    """

    argv: list[str]
    env: dict[str, str]
    cwd: str
    pass_fds: tuple[int, ...] = ()
    _closed: bool = field(default=False, repr=False)

    def close(self) -> None:
        """Close the fds handed to the child (ours only: the child has its copies)."""
        if not self._closed:
            self._closed = True
            for fd in self.pass_fds:
                os.close(fd)


def unconfined(argv: Sequence[str], env: Mapping[str, str], cwd: str) -> Launch:
    """A launch outside any sandbox."""
    return Launch(list(argv), dict(env), cwd)


def _exists(path: str) -> bool:
    return os.path.lexists(path)


def jupyter_runtime_dirs(env: Mapping[str, str], home: str) -> list[str]:
    """Where Jupyter keeps server tokens and kernel connection files (all candidates)."""
    dirs = []
    if env.get("JUPYTER_RUNTIME_DIR"):
        dirs.append(env["JUPYTER_RUNTIME_DIR"])
    data = env.get("JUPYTER_DATA_DIR") or os.path.join(env.get("XDG_DATA_HOME") or os.path.join(home, ".local", "share"), "jupyter")
    dirs.append(os.path.join(data, "runtime"))
    dirs.append(os.path.join(home, ".local", "share", "jupyter", "runtime"))
    try:
        from jupyter_core.paths import jupyter_runtime_dir

        dirs.append(jupyter_runtime_dir())
    except Exception:  # not installed, or a broken config: the candidates above stand
        pass
    return list(dict.fromkeys(os.path.realpath(d) for d in dirs))


class Confinement:
    """Spawns commands inside the bubblewrap sandbox a ``SandboxPolicy`` describes.

    Building one touches the disk (it creates the policy's agent-state directories and looks at
    what exists): do it off the event loop.

    Args:
        policy: what to allow and hide.
        bwrap: the bubblewrap binary (an absolute path).
        keep: paths that must stay visible even inside a hidden home (the agent's interpreter).
        environ: where the Jupyter directories are looked up (default ``os.environ``).
    """

    def __init__(
        self,
        policy: SandboxPolicy,
        bwrap: str,
        *,
        keep: Sequence[str] = (),
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.policy = policy
        self.bwrap = bwrap
        self._create_state_dirs()  # before planning: only existing paths are bound
        self._options = self._plan(policy, keep, os.environ if environ is None else environ)

    @property
    def options(self) -> list[str]:
        """The bubblewrap options (without the environment and the command)."""
        return list(self._options)

    def _create_state_dirs(self) -> None:
        """Create the agent-state paths the policy asks for: directories (``.../``, 0700) and
        JSON files (``{}``, 0600; an agent such as Claude Code fails on a missing or empty one
        it cannot create itself in a read-only home)."""
        for path in self.policy.create:
            try:
                if path.endswith("/"):
                    os.makedirs(path, mode=0o700, exist_ok=True)
                elif not os.path.lexists(path):
                    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    with os.fdopen(fd, "w", encoding="utf-8") as fh:
                        fh.write("{}")
            except FileExistsError:
                pass
            except OSError as exc:
                log.warning("cannot create agent state %s: %s", path, exc.strerror)

    def launch(
        self, argv: Sequence[str], env: Mapping[str, str], cwd: str, *, stdio: tuple[int, int] | None = None
    ) -> Launch:
        """Wrap ``argv`` (run in ``cwd`` with exactly ``env``) in the sandbox.

        Args:
            stdio: ``(read end, write end)`` of two pipes to become the command's stdin and
                stdout. bubblewrap keeps its own stdin and stdout open while the sandbox lives,
                so a command that closes its stdout would never be seen doing it; passed as extra
                fds (which bubblewrap closes in its own processes) and moved into place by a
                ``/bin/sh`` step inside, the pipes belong to the command alone.
        """
        inner_env = dict(env)
        tmpdir = inner_env.get("TMPDIR")
        if tmpdir and not path_within(os.path.realpath(tmpdir), self.policy.workspace):
            inner_env["TMPDIR"] = "/tmp"  # the host's TMPDIR is not visible inside
        options = [*self._options, "--chdir", cwd, "--clearenv"]
        for name, value in inner_env.items():
            options += ["--setenv", name, value]
        data = b"".join(arg.encode("utf-8", "surrogateescape") + b"\0" for arg in options)
        fd = os.memfd_create("agh-nb-bwrap-args", os.MFD_CLOEXEC)
        try:
            _write_all(fd, data)
            os.lseek(fd, 0, os.SEEK_SET)
        except BaseException:
            os.close(fd)
            raise
        command = list(argv)
        fds: tuple[int, ...] = (fd,)
        if stdio is not None:
            command = [*_stdio_mover(*stdio), *command]
            fds = (fd, *stdio)
        # bubblewrap runs with an empty environment: nothing the agent chose applies to it.
        return Launch([self.bwrap, "--args", str(fd), "--", *command], {}, "/", fds)

    @staticmethod
    def _plan(policy: SandboxPolicy, keep: Sequence[str], environ: Mapping[str, str]) -> list[str]:
        home = os.path.realpath(policy.home) if policy.home else ""
        workspace = policy.workspace
        opts = ["--ro-bind", "/", "/", "--dev", "/dev", "--unshare-pid", "--proc", "/proc"]
        opts += ["--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try", "--die-with-parent"]
        if not policy.network:
            opts.append("--unshare-net")
        for private in PRIVATE_DIRS:
            if os.path.isdir(private) and not os.path.islink(private):
                opts += ["--tmpfs", private]
        opts += rebind_private(keep)
        # /etc/resolv.conf is often a symlink into /run (systemd-resolved): bind its target back.
        for name in ("/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf"):
            target = os.path.realpath(name)
            if target != name and path_within(target, "/run") and os.path.exists(target):
                opts += ["--ro-bind", target, target]
        visible = [p for p in (workspace, home, *keep) if p]
        for parent in ("/home",):
            try:
                entries = sorted(os.listdir(parent))
            except OSError:
                entries = []
            for entry in entries:
                path = os.path.join(parent, entry)
                real = os.path.realpath(path)
                if os.path.isdir(path) and not os.path.islink(path) and not any(path_within(v, real) for v in visible):
                    opts += ["--tmpfs", path]
        if os.path.isdir("/root") and not any(path_within(v, "/root") for v in visible):
            opts += ["--tmpfs", "/root"]
        for path in policy.writable:
            # Bound where it really is (a symlinked ~/.claude then resolves to it inside too),
            # and only inside the home: a state path never opens anything else.
            real = os.path.realpath(path)
            if _exists(real) and path_within(real, home or "/") and real != home:
                opts += ["--bind", real, real]
        opts += ["--bind" if policy.workspace_writable else "--ro-bind", workspace, workspace]
        hidden = list(dict.fromkeys([*policy.hidden, *jupyter_runtime_dirs(environ, home)]))
        for path in hidden:
            if os.path.isdir(path):
                opts += ["--tmpfs", path]
            elif _exists(path):
                opts += ["--ro-bind", "/dev/null", path]
        if any(path_within(workspace, h) and workspace != h for h in hidden if os.path.isdir(h)):
            # The workspace lies inside a hidden directory: it alone comes back.
            opts += ["--bind" if policy.workspace_writable else "--ro-bind", workspace, workspace]
        return opts


def _stdio_mover(stdin_fd: int, stdout_fd: int) -> list[str]:
    """A command prefix that makes ``stdin_fd``/``stdout_fd`` the stdin/stdout of what follows.

    bash (Debian's is essential) takes fd numbers past 9, which dash does not; without bash, this
    interpreter does the same in a few lines.
    """
    if os.path.isfile("/bin/bash"):
        move = f"exec 0<&{stdin_fd} 1>&{stdout_fd} {stdin_fd}<&- {stdout_fd}>&- && exec \"$@\""
        return ["/bin/bash", "-c", move, "bash"]
    code = (
        f"import os,sys; os.dup2({stdin_fd},0); os.dup2({stdout_fd},1); os.close({stdin_fd}); "
        f"os.close({stdout_fd}); os.execvp(sys.argv[1], sys.argv[1:])"
    )
    return [sys.executable, "-S", "-c", code]


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


PRIVATE_DIRS = ("/tmp", "/var/tmp", "/run", "/var/run")
"""Replaced by empty tmpfs inside the sandbox."""


def rebind_private(paths: Sequence[str]) -> list[str]:
    """Options binding back, read-only, the paths that lie in a private directory (an agent or a
    virtualenv installed under ``/tmp`` must still run inside)."""
    opts: list[str] = []
    for path in dict.fromkeys(os.path.realpath(p) for p in paths if p):
        if _exists(path) and any(path_within(path, d) for d in PRIVATE_DIRS):
            opts += ["--ro-bind", path, path]
    return opts


def find_bwrap(configured: str | None, which: Callable[[str], str | None] = shutil.which) -> str | None:
    """The bubblewrap binary: the configured path if it is an executable file, else on the PATH."""
    if configured:
        path = os.path.expanduser(configured)
        return path if os.path.isfile(path) and os.access(path, os.X_OK) else None
    return which("bwrap")


async def probe(bwrap: str, *, network: bool) -> str | None:
    """Check once per host (and per network setting) that bubblewrap can build a sandbox here.

    Returns None when it works, else one line saying why not (cached: later calls are free).
    """
    global _probe_lock
    key = (bwrap, network)
    if key in _probes:
        return _probes[key]
    if _probe_lock is None:
        _probe_lock = asyncio.Lock()
    async with _probe_lock:
        if key in _probes:
            return _probes[key]
        argv = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--unshare-pid", "--proc", "/proc"]
        argv += ["--unshare-ipc", "--tmpfs", "/tmp", *rebind_private([sys.prefix, sys.base_prefix, sys.executable])]
        argv += ["--die-with-parent", "--clearenv"]
        if not network:
            argv.append("--unshare-net")
        argv += ["--", sys.executable, "-c", ""]
        reason: str | None
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE, env={},
            )
            _, err = await asyncio.wait_for(proc.communicate(), timeout=PROBE_TIMEOUT)
            lines = err.decode("utf-8", "replace").strip().splitlines()
            reason = None if proc.returncode == 0 else (
                f"{bwrap} cannot create a sandbox here (exit {proc.returncode}"
                + (f": {lines[-1][:200]}" if lines else "")
                + "; unprivileged user namespaces may be disabled)"
            )
        except asyncio.TimeoutError:
            reason = f"{bwrap} did not start a sandbox within {PROBE_TIMEOUT:g}s"
        except OSError as exc:
            reason = f"cannot run {bwrap}: {exc.strerror or exc}"
        _probes[key] = reason
        if reason:
            log.warning("sandbox unavailable: %s", reason)
        return reason


async def confinement(
    policy: SandboxPolicy | None,
    *,
    keep: Sequence[str] = (),
    which: Callable[[str], str | None] = shutil.which,
) -> Confinement | None:
    """The sandbox to run a session's agent and terminals in, or None to run them unconfined.

    ``off`` (or no policy): None. ``auto``: a sandbox where bubblewrap works, else None.
    ``required``: a sandbox, or ``SandboxUnavailableError`` naming why there is none.
    """
    if policy is None or not policy.enabled:
        return None
    reason: str | None
    if not sys.platform.startswith("linux"):
        reason = f"the sandbox needs Linux (bubblewrap); this is {sys.platform}"
        bwrap = None
    else:
        bwrap = find_bwrap(policy.bwrap, which)
        if bwrap is None:
            where = f"{policy.bwrap!r} is not an executable file" if policy.bwrap else "bwrap is not on the PATH"
            reason = f"bubblewrap is not installed ({where}; Debian/Ubuntu: apt-get install bubblewrap)"
        else:
            reason = await probe(bwrap, network=policy.network)
    if reason is None and bwrap is not None:
        return await asyncio.to_thread(Confinement, policy, bwrap, keep=keep)
    if policy.mode == "required":
        raise SandboxUnavailableError(f"the sandbox is required ([sandbox] mode = \"required\") but {reason}")
    return None
