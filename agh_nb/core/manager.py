"""The session manager: creates sessions, routes prompts and stops, and knows which are live.

Owns: workspace and permission resolution, the live-session table, and reads that overlay live
records on stored ones. Runs on the runtime loop; store reads go through ``asyncio.to_thread``.
Imports no third-party library.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from agh_nb.config import (
    DEFAULT_PERMISSION_MODE,
    PERMISSION_MODES,
    AgentDefinition,
    McpServerDef,
    Settings,
    find_agent,
    optional_ref,
)
from agh_nb.core.approvals import ApprovalBroker
from agh_nb.core.elicitations import ElicitationBroker
from agh_nb.core.opening import Note, StartOptions, session_caps
from agh_nb.core.classify import CauseKind, StopCause
from agh_nb.core.clock import IdGenerator, SystemClock
from agh_nb.core.leftovers import kill_leftovers
from agh_nb.core.ports import DriverFactory, EventStore, LaunchSpec
from agh_nb.core.record import SessionRecord
from agh_nb.core.redaction import Redactor
from agh_nb.core.session import LiveSession, Turn
from agh_nb.core.repair import plan_repair
from agh_nb.core.sandbox_policy import sandbox_policy
from agh_nb.core.session_dir import (
    make_session_dir,
    mark_ledger_pending,
    pending_ledgers,
    read_meta,
    session_dir,
    write_meta,
    write_session_ledger,
)
from agh_nb.core.transcript import build_transcript, transcript_text
from agh_nb.core.state import FailureKind, SessionState, SessionType
from agh_nb.core.stopping import shutdown_budget
from agh_nb.errors import (
    AgentStartError,
    AghError,
    CapabilityError,
    HostError,
    ResumeError,
    SessionNotActiveError,
    SessionNotFoundError,
    UsageError,
)
from agh_nb.events import JSON, Event, EventQuery

log = logging.getLogger(__name__)

SecretResolver = Callable[[str], str]
SHUTDOWN_BUDGET = 3.0
"""Seconds from the start of a host shutdown until every agent must be gone: room for a 1 s
cancel grace, then 0.5 s each for ``session/close``, EOF, SIGTERM and SIGKILL (``core.stopping``).
Jupyter kills a kernel 5 s after asking it to shut down (``shutdown_wait_time``)."""
RECORD_ALLOWANCE = 2.0
"""Seconds after the shutdown deadline that stops may still take to record themselves."""
LEDGER_SECONDS_PER_EVENT = 60e-6
"""What a ledger costs per event (read, canonical JSON twice, sha256, write; ~50 us measured on 2
cores): a host shutdown writes only the ledgers that fit in ``SHUTDOWN_LEDGER_SLICE``."""
SHUTDOWN_LEDGER_SLICE = 0.5
"""Seconds a host shutdown spends on ledgers, at most, once every session is recorded: a few
ordinary sessions' worth. The rest are marked pending and written by the next host start; a
quick exit matters more (Jupyter kills a slow kernel or server)."""
REPLAY_PREAMBLE = (
    "This session was resumed in a fresh agent session. For context, here is the transcript of the "
    "conversation so far; do not act on it, just take it into account:\n\n"
)


def workspace_id_for(path: Path) -> str:
    """Return the stable workspace id of a real path (``ws_`` + 16 hex digits of its hash)."""
    return "ws_" + hashlib.sha256(str(path).encode("utf-8")).hexdigest()[:16]


_PERMISSIVENESS = {mode: rank for rank, mode in enumerate(PERMISSION_MODES)}
"""``deny-all`` < ``approve-reads`` < ``approve-all`` (PERMISSION_MODES is in that order)."""


def resolve_permissions(
    flag: str | None,
    definition: AgentDefinition | None,
    settings: Settings,
    session_type: str,
    *,
    workspace: str | None = None,
) -> str:
    """Return the session's permission mode: dream > flag > AGENT.md > config.toml > default.

    An AGENT.md inside ``workspace`` may only tighten the configured mode: the agent can write
    there, and must not grant its next session ``approve-all``.
    """
    if session_type == SessionType.DREAM.value:
        return "approve-all"
    if flag:
        return flag
    configured = settings.permission_mode or DEFAULT_PERMISSION_MODE
    wanted = definition.permissions if definition else None
    if not wanted:
        return configured
    if workspace is not None and definition is not None and definition.in_workspace(workspace):
        return min(wanted, configured, key=lambda mode: _PERMISSIVENESS.get(mode, 0))
    return wanted


def env_resolver(environ: Mapping[str, str]) -> SecretResolver:
    """Return a resolver for ``env:NAME`` refs; other values pass through unchanged."""

    def resolve(value: str) -> str:
        if value.startswith("env:"):
            name = value[4:]
            if name not in environ:
                raise AghError(f"environment variable {name} (ref {value}) is not set")
            return environ[name]
        if value.startswith("vault:"):
            raise AghError(f"cannot resolve {value}: no vault is configured in this host")
        return value

    return resolve


class SessionManager:
    """Creates and tracks sessions on the runtime loop.

    Args:
        store: the event store.
        driver_factory: builds one agent driver per session.
        settings: validated configuration.
        home: ``$AGH_HOME``.
        resolve_secret: resolves ``env:``/``vault:`` values of an AGENT.md ``env`` at spawn.
        redactor: where the secrets a session's agent was given stay registered for as long as
            the session runs (a ref rotated or deleted meanwhile: the agent still has the value).
        clock, ids, redact: collaborators with real defaults.
    """

    def __init__(
        self,
        *,
        store: EventStore,
        driver_factory: DriverFactory,
        settings: Settings,
        home: Path,
        resolve_secret: SecretResolver | None = None,
        clock: SystemClock | None = None,
        ids: IdGenerator | None = None,
        redact: Callable[[str], str] = str,
        redact_json: Callable[[Any], Any] = lambda value: value,
        host_pid: int | None = None,
        redactor: Redactor | None = None,
    ) -> None:
        self._store = store
        self._driver_factory = driver_factory
        self._settings = settings
        self._home = home
        self._resolve_secret = resolve_secret or env_resolver(os.environ)
        self._clock = clock or SystemClock()
        self._ids = ids or IdGenerator()
        self._redact = redact
        self._redact_json = redact_json
        self._host_pid = host_pid if host_pid is not None else os.getpid()
        self._live: dict[str, LiveSession] = {}
        self._redactor = redactor
        self._pins: dict[str, list[tuple[str, str]]] = {}  # session id -> (value, label) pinned
        self._resuming: dict[str, asyncio.Future[SessionRecord]] = {}
        self._closing = False  # the host shuts down: no session starts any more
        self._catch_up: asyncio.Task[int] | None = None
        self.approvals = ApprovalBroker(timeout=settings.approval_timeout)
        self.elicitations = ElicitationBroker(timeout=settings.approval_timeout)

    @property
    def settings(self) -> Settings:
        """The configuration in force."""
        return self._settings

    async def create(
        self,
        *,
        agent_name: str,
        cwd: str | None = None,
        name: str | None = None,
        permissions: str | None = None,
        session_type: str = "user",
        mode: str | None = None,
        model: str | None = None,
        auth: str | None = None,
        parent: SessionRecord | None = None,
    ) -> SessionRecord:
        """Create a session and start its agent; return the ``active`` record.

        ``mode`` and ``model`` are set once the ACP session is open, ``auth`` is an
        ``authenticate`` method run before it opens; ``parent`` makes the session a fork of it
        (``session/fork`` of the parent's ACP session; see ``fork``).

        Raises:
            UsageError: for a bad ``--permissions`` or session type (nothing is created).
            AgentStartError: the session exists, ``stopped`` with a classified failure.
        """
        self._refuse_when_closing()
        if permissions is not None and permissions not in PERMISSION_MODES:
            raise UsageError(f"--permissions must be one of {', '.join(PERMISSION_MODES)}, got {permissions!r}")
        if session_type not in {t.value for t in SessionType}:
            raise UsageError(f"session type must be one of {', '.join(t.value for t in SessionType)}")
        raw_path = Path(cwd).expanduser() if cwd else Path(os.getcwd())
        workspace = Path(os.path.realpath(raw_path.absolute()))
        now = self._clock.now()
        record = SessionRecord(
            id=self._ids.session_id(),
            name=name,
            agent_name=agent_name,
            type=session_type,
            workspace_id=workspace_id_for(workspace),
            workspace_path=str(workspace),
            permissions=resolve_permissions(permissions, None, self._settings, session_type),
            state=SessionState.STARTING,
            created_at=now,
            updated_at=now,
            host_pid=self._host_pid,
            parent_id=parent.id if parent else None,
            acp_state=dict(parent.acp_state) if parent else {},
        )
        await asyncio.to_thread(make_session_dir, self._home, record.id)
        await self._store.save_session(record)
        live = self._track(record)
        try:
            spec, definition = await asyncio.to_thread(self._launch_spec, agent_name, workspace)
        except AghError as exc:
            await live.fail_start(FailureKind.STARTUP_FAILURE, str(exc))
            raise AgentStartError(f"session {record.id} could not start: {exc}", session_id=record.id) from None
        resolved = resolve_permissions(permissions, definition, self._settings, session_type, workspace=spec.cwd)
        live.set_permissions(resolved)
        spec = self._confine(spec, definition, record.id, resolved)
        self._pin_secrets(record.id, spec)
        options = StartOptions(mode=mode, model=model, auth=auth, fork_from=parent.acp_session_id if parent else None)
        started = await live.start(spec, options=options)
        if parent is not None:
            await live.note(
                Note(
                    "fork",
                    f"forked from session {parent.id} (ACP session {parent.acp_session_id} -> {started.acp_session_id})",
                    {"parent_id": parent.id, "parent_acp_session_id": parent.acp_session_id},
                )
            )
        capped = session_type != SessionType.DREAM.value and resolved not in (definition.permissions, permissions)
        if definition.permissions and capped:
            # Said once, where the user looks (the timeline): the definition was not obeyed.
            await live.note(
                Note(
                    "permissions",
                    f"runs {resolved}, not the {definition.permissions} its AGENT.md asks for: a definition inside "
                    f"the workspace cannot loosen config.toml's mode (pass --permissions, or define the agent in "
                    f"$AGH_HOME/agents/{definition.name}/AGENT.md)",
                    {"asked": definition.permissions, "granted": resolved},
                )
            )
        return live.record

    async def fork(self, session_id: str, *, name: str | None = None) -> SessionRecord:
        """Make a new session on a fork of ``session_id``'s ACP session (``session/fork``).

        The fork runs its own agent process (same agent, workspace and permissions), records its
        ``parent_id`` and a ``system`` event naming the parent.

        Raises:
            SessionNotFoundError: no such session.
            CapabilityError: the session has no ACP session yet, or its agent cannot fork (one line).
            AgentStartError: the fork could not start (it is stopped with a failure).
        """
        parent = await self.get(session_id)
        if not parent.acp_session_id:
            raise CapabilityError(f"session {session_id} has no ACP session to fork (it never started)")
        if session_caps(parent.acp_caps).get("fork") is None:
            raise CapabilityError(
                f"session {session_id} cannot be forked: agent {parent.agent_name!r} does not offer "
                "session/fork (no sessionCapabilities.fork)"
            )
        return await self.create(
            agent_name=parent.agent_name,
            cwd=parent.workspace_path,
            name=name or f"fork of {parent.name or parent.id}",
            permissions=parent.permissions if parent.type != SessionType.DREAM.value else None,
            session_type=parent.type,
            parent=parent,
        )

    async def resume(
        self, session_id: str, *, replay_transcript: bool = False, auth: str | None = None
    ) -> SessionRecord:
        """Resume a stopped session under the same AGH id (idempotent on a live session).

        Raises:
            SessionNotFoundError: no such session.
            ResumeError: naming the prerequisite that failed (metadata, workspace, agent, events).
            AgentStartError: the agent could not be started or loaded (the session is stopped again).
        """
        live = self._live.get(session_id)
        if live is not None and live.record.state is SessionState.STOPPING:
            await live.stop()  # a stop under way finishes first; then the session resumes
            live = None
        if live is not None:
            return live.record
        # One resume at a time per session: a second caller (another notebook, the HTTP API)
        # waits for the first one's outcome instead of spawning a second agent.
        running = self._resuming.get(session_id)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[SessionRecord] = asyncio.get_running_loop().create_future()
        self._resuming[session_id] = future
        try:
            started = await self._resume(session_id, replay_transcript=replay_transcript, auth=auth)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: a failure nobody else waited for is not "never retrieved"
            raise
        else:
            future.set_result(started)
            return started
        finally:
            self._resuming.pop(session_id, None)

    async def _resume(self, session_id: str, *, replay_transcript: bool, auth: str | None = None) -> SessionRecord:
        self._refuse_when_closing()
        await self.repair(session_id, dry_run=False)
        record = await self.get(session_id)
        spec, definition, events = await asyncio.to_thread(self._check_resumable, record)
        live = self._track(record)
        await live.prepare_resume()
        spec = self._confine(spec, definition, session_id, record.permissions)
        self._pin_secrets(session_id, spec)
        started = await live.start(spec, resume=True, options=StartOptions(auth=auth))
        if replay_transcript and started.acp_session_id != record.acp_session_id:
            text = transcript_text(build_transcript(events))
            if text.strip():
                await live.submit(REPLAY_PREAMBLE + text, replay=True)
        return started

    def _check_resumable(self, record: SessionRecord) -> tuple[LaunchSpec, AgentDefinition, list[Event]]:
        sid = record.id
        if read_meta(self._home, sid) is None:
            raise ResumeError(
                f"cannot resume {sid}: its metadata ({session_dir(self._home, sid) / 'meta.json'}) is missing or unreadable",
                session_id=sid,
            )
        workspace = Path(record.workspace_path)
        if not workspace.is_dir():
            raise ResumeError(
                f"cannot resume {sid}: its workspace {workspace} no longer exists (restore it, or start a new session)",
                session_id=sid,
            )
        try:
            spec, definition = self._launch_spec(record.agent_name, workspace)
        except AghError as exc:
            raise ResumeError(f"cannot resume {sid}: {exc}", session_id=sid) from None
        events = self._store.query_events(sid, EventQuery())
        if not events:
            raise ResumeError(f"cannot resume {sid}: it has no stored events to resume from", session_id=sid)
        return spec, definition, events

    async def repair(self, session_id: str, *, dry_run: bool) -> JSON:
        """Plan (and unless ``dry_run``, apply) crash and transcript repair of a session.

        A session this host runs needs no repair; any other session not ``stopped`` was left by a
        dead host (only one host can hold the store).
        """
        if session_id in self._live:
            return {"session_id": session_id, "empty": True, "record": None, "events": [], "applied": False}
        record = await self.get(session_id)
        if not dry_run and record.state is not SessionState.STOPPED:
            # Its host died: whatever it spawned for the session (agent, terminals) may still run.
            await asyncio.to_thread(kill_leftovers, session_dir(self._home, session_id), session_id)
        events = await asyncio.to_thread(self._store.query_events, session_id, EventQuery())
        plan = plan_repair(record, events, self._clock.now())
        doc = plan.to_dict() | {"applied": False}
        if dry_run or plan.empty:
            return doc
        repaired = plan.record.apply(record) if plan.record else record
        await self._store.save_session(repaired)
        for draft in plan.events:
            await self._store.append_durable(repaired, draft)
        await asyncio.to_thread(write_meta, self._home, repaired)
        await asyncio.to_thread(write_session_ledger, self._home, repaired, self._store)
        log.info("repaired session %s (%d events appended)", session_id, len(plan.events))
        return doc | {"applied": True}

    async def repair_stale(self) -> list[str]:
        """Repair every session left by a dead host (called when the host starts)."""
        repaired = []
        for record in await asyncio.to_thread(self._store.list_sessions):
            if record.state is not SessionState.STOPPED and record.id not in self._live:
                doc = await self.repair(record.id, dry_run=False)
                if doc.get("applied"):
                    repaired.append(record.id)
        return repaired

    def _launch_spec(self, agent_name: str, workspace: Path) -> tuple[LaunchSpec, AgentDefinition]:
        if not workspace.exists():
            raise AghError(f"workspace {workspace} does not exist (pass an existing directory with --cwd)")
        if not workspace.is_dir():
            raise AghError(f"workspace {workspace} is not a directory (pass a directory with --cwd)")
        definition = find_agent(agent_name, home=self._home, workspace=workspace)
        refs = definition.secret_refs()
        if refs and definition.in_workspace(str(workspace)):
            # Before any ref is resolved: what an agent (or a cloned repository) wrote in the
            # workspace must not hand the next agent the user's keys.
            raise AghError(
                f"agent {definition.name!r} is defined inside the workspace ({definition.source}), which agents "
                f"can write, so its secret refs are not resolved ({', '.join(refs[:3])}); define it in "
                f"$AGH_HOME/agents/{definition.name}/AGENT.md to give it secrets"
            )
        secrets: list[tuple[str, str]] = []
        env = self._resolve_values(definition.env.items(), secrets)
        servers = tuple(
            McpServerDef(
                name=s.name,
                transport=s.transport,
                command=s.command,
                args=s.args,
                env=tuple(self._resolve_values(s.env, secrets).items()),
                url=s.url,
                headers=tuple(self._resolve_values(s.headers, secrets).items()),
            )
            for s in definition.mcp_servers
        )
        spec = LaunchSpec(
            agent_name=definition.name,
            argv=definition.argv(),
            cwd=str(workspace),
            env=env,
            secrets=tuple(secrets),
            mcp_servers=servers,
            auth_method=definition.auth,
        )
        return spec, definition

    def _resolve_values(self, items: Any, secrets: list[tuple[str, str]]) -> dict[str, str]:
        """Resolve ``env:``/``vault:`` refs of (name, value) pairs; an optional ref (``env:X?``)
        that resolves to nothing leaves its name out. Resolved secrets are added to ``secrets``."""
        out: dict[str, str] = {}
        for key, raw in items:
            value, optional = optional_ref(raw)
            try:
                out[key] = self._resolve_secret(value)
            except AghError:
                if optional:
                    continue
                raise
            if value.startswith(("vault:", "env:")):
                secrets.append((value, out[key]))
        return out
    def _confine(self, spec: LaunchSpec, definition: AgentDefinition, session_id: str, permissions: str) -> LaunchSpec:
        """The launch with its session, its process book and its sandbox policy."""
        policy = sandbox_policy(
            self._settings,
            definition,
            workspace=spec.cwd,
            permissions=permissions,
            agh_home=str(self._home),
            home=os.path.expanduser("~"),
        )
        state_dir = str(session_dir(self._home, session_id))
        return dataclasses.replace(spec, session_id=session_id, state_dir=state_dir, sandbox=policy)

    def _pin_secrets(self, session_id: str, spec: LaunchSpec) -> None:
        """Keep the values handed to this session's agent redacted until the session stops."""
        if self._redactor is None:
            return
        pins = self._pins.setdefault(session_id, [])
        for ref, value in spec.secrets:
            label = f"{ref}@{session_id}"
            if self._redactor.register(value, label):
                pins.append((value, label))
            else:
                log.warning("the value of %s is shorter than 4 characters and cannot be redacted", ref)

    def _unpin_secrets(self, session_id: str) -> None:
        if self._redactor is not None:
            for value, label in self._pins.pop(session_id, []):
                self._redactor.unregister(value, label)

    def _refuse_when_closing(self) -> None:
        if self._closing:
            raise HostError("the agh_nb host is shutting down: no session starts any more")

    def _track(self, record: SessionRecord) -> LiveSession:
        live = LiveSession(
            record,
            store=self._store,
            driver=self._driver_factory(),
            settings=self._settings,
            home=self._home,
            on_stopped=self._forget,
            approvals=self.approvals,
            elicitations=self.elicitations,
            clock=self._clock,
            ids=self._ids,
            redact=self._redact,
            redact_json=self._redact_json,
            stream_view=self._redactor.stream_view if self._redactor is not None else lambda: None,
        )
        self._live[record.id] = live
        return live

    def _forget(self, session: LiveSession) -> None:
        if self._live.get(session.session_id) is session:
            self._live.pop(session.session_id, None)
        self._unpin_secrets(session.session_id)

    async def prompt(self, session_id: str, text: str, *, interrupt: bool = False) -> Turn:
        """Queue a prompt on a live session (see ``LiveSession.submit``)."""
        if not text.strip():
            raise UsageError("the prompt is empty: give the text to send")
        return await (await self._require_live(session_id)).submit(text, interrupt=interrupt)

    async def stop(self, session_id: str, *, detail: str | None = None) -> SessionRecord:
        """Stop a session (user stop); stopping a stopped session returns its record."""
        live = self._live.get(session_id)
        if live is None:
            return await self.get(session_id)
        return await live.stop(StopCause(CauseKind.USER, detail=detail))

    async def stop_all(
        self, *, detail: str, budget: float = SHUTDOWN_BUDGET, allowance: float = RECORD_ALLOWANCE
    ) -> list[str]:
        """Stop every live session at once (host shutdown); return the ids left unstopped.

        No new session starts from here on. Every agent first stops being recorded (what it
        still streams is read and dropped), then all stops run in parallel with one shared
        deadline, ``budget`` seconds away, by which every agent must be gone: a short cancel
        grace, ``session/close`` or EOF, then SIGTERM and SIGKILL of its process group (see
        ``shutdown_budget``). Each is then recorded ``stopped`` as usual. A stop still running
        ``allowance`` seconds after the deadline is given up: the agent is killed and the
        session left for the next host start to repair, with a ``timeout`` failure saying so.
        Returns once no stop task of this host runs.
        """
        self._closing = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        if self._catch_up is not None and not self._catch_up.done():
            self._catch_up.cancel()  # the ledger it is writing finishes in its thread; the rest wait
            await asyncio.wait({self._catch_up})
        cause = StopCause(CauseKind.USER, detail=detail)
        sessions = list(self._live.values())
        for session in sessions:
            session.quiesce()
        for session in sessions:
            session.begin_stop(cause, shutdown_budget(deadline))
        tasks = {task: s for s in sessions if (task := s.stop_task) is not None}
        if tasks:
            await asyncio.wait(tasks, timeout=max(0.0, deadline + allowance - loop.time()))
        unstopped: list[str] = []
        late = [s for task, s in tasks.items() if not task.done()]
        if late:
            why = f"the host shut down and its {budget:g}s budget (+{allowance:g}s to record) ran out"
            await asyncio.gather(*(s.abandon_stop(why) for s in late), return_exceptions=True)
        for task, session in tasks.items():
            failed = task.exception() if task.done() and not task.cancelled() else None
            if failed is not None:
                log.error("stopping session %s at shutdown failed: %r", session.session_id, failed)
            if session.record.state is not SessionState.STOPPED:
                unstopped.append(session.session_id)
        ledgers = [s.record for s in sessions if s.ledger_deferred and s.record.state is SessionState.STOPPED]
        if ledgers:
            # Marked first (a file each, milliseconds): what the budget leaves unwritten, the next
            # host start writes (``catch_up_ledgers``).
            await asyncio.to_thread(self._mark_ledgers, ledgers)
        room = min(SHUTDOWN_LEDGER_SLICE, deadline + allowance - loop.time())
        if ledgers and room > 0:
            await asyncio.to_thread(self._write_ledgers, ledgers, time.monotonic() + room)
        if unstopped:
            log.warning(
                "%d session(s) could not be stopped in time; the next host start repairs them: %s",
                len(unstopped), ", ".join(unstopped),
            )
        return unstopped

    def _mark_ledgers(self, records: list[SessionRecord]) -> None:
        for record in records:
            try:
                mark_ledger_pending(self._home, record.id)
            except OSError as exc:
                log.error("cannot mark the ledger of %s as pending: %s", record.id, exc)

    def _write_ledgers(self, records: list[SessionRecord], until: float) -> None:
        """Write the ledgers a host shutdown deferred, each only if it fits before monotonic
        ``until`` (its cost estimated from its event count); the others stay marked pending."""
        left = 0
        for record in records:
            try:
                newest = self._store.query_events(record.id, EventQuery(limit=1))
                cost = (newest[0].sequence if newest else 0) * LEDGER_SECONDS_PER_EVENT
                if time.monotonic() + cost >= until:
                    left += 1
                    continue
                write_session_ledger(self._home, record, self._store)
            except OSError as exc:  # the session is stopped either way; it stays marked
                log.error("writing the ledger of %s failed: %s", record.id, exc)
        if left:
            log.info("%d ledger(s) left to the next host start: the host shutdown is out of time", left)

    def start_ledger_catch_up(self) -> None:
        """Write, in the background, the ledgers an earlier host shutdown left pending."""
        if self._catch_up is None and not self._closing:
            self._catch_up = asyncio.get_running_loop().create_task(self.catch_up_ledgers(), name="ledger-catch-up")

    async def catch_up_ledgers(self) -> int:
        """Write the ledger of every stopped session marked pending, oldest first; return how many.

        One at a time, in a thread; stops early when the host shuts down. A session running
        again (resumed) is skipped: its own stop writes its ledger.
        """
        written = 0
        for session_id in await asyncio.to_thread(pending_ledgers, self._home):
            if self._closing:
                break
            record = await asyncio.to_thread(self._store.get_session, session_id)
            if record is None or record.state is not SessionState.STOPPED or session_id in self._live:
                continue
            try:
                if await asyncio.to_thread(write_session_ledger, self._home, record, self._store, only_pending=True):
                    written += 1
            except Exception as exc:  # noqa: BLE001 - the next start tries again; never a task failure
                log.error("writing the pending ledger of %s failed: %s", session_id, exc)
        if written:
            log.info("wrote %d ledger(s) an earlier host shutdown left pending", written)
        return written

    async def approve(self, session_id: str, request_id: str, decision: str) -> dict[str, object]:
        """Decide a pending permission request of a session (from any surface)."""
        await self.get(session_id)
        return await self.approvals.decide(request_id, decision, session_id=session_id)

    async def change(
        self,
        session_id: str,
        *,
        mode: str | None = None,
        model: str | None = None,
        options: dict[str, str] | None = None,
    ) -> SessionRecord:
        """Set the mode, model or config options of a live session (``session set``)."""
        if mode is None and model is None and not options:
            raise UsageError("session set: say what to set: --mode M, --model X or --option KEY=VALUE")
        return await (await self._require_live(session_id)).change(mode=mode, model=model, options=options)

    async def auth(self, session_id: str, method: str) -> SessionRecord:
        """Run ``authenticate METHOD`` by hand and retry what failed (``session auth``).

        On an active session the method is simply run. A stopped session is resumed with it
        (``authenticate`` before its ACP session is reopened); when it had stopped because its
        prompt needed authentication, that prompt is sent again.
        """
        live = self._live.get(session_id)
        if live is not None and live.record.state is SessionState.ACTIVE:
            return await live.authenticate(method)
        record = await self.get(session_id)
        retry = await asyncio.to_thread(self._failed_auth_prompt, record)
        started = await self.resume(session_id, auth=method)
        if retry is not None:
            await self.prompt(session_id, retry)
        return started

    def _failed_auth_prompt(self, record: SessionRecord) -> str | None:
        """The text of the prompt whose ``auth_failure`` stopped ``record``, if one did."""
        if record.failure is None or record.failure.kind is not FailureKind.AUTH_FAILURE:
            return None
        events = self._store.query_events(record.id, EventQuery())
        failed = [e for e in events if e.type == "error" and (e.content.get("failure") or {}).get("kind") == "auth_failure"]
        if not failed or failed[-1].turn_id is None:
            return None
        asked = [e for e in events if e.type == "user_message" and e.turn_id == failed[-1].turn_id]
        return str(asked[0].content.get("text") or "") or None if asked else None

    async def answer(
        self, session_id: str, request_id: str, values: dict[str, str] | None, *, action: str = "accept"
    ) -> JSON:
        """Answer a pending elicitation of a session (``session answer``)."""
        await self.get(session_id)
        return await self.elicitations.answer(request_id, values, session_id=session_id, action=action)

    def live(self, session_id: str) -> LiveSession | None:
        """Return the live session, if this host runs it."""
        return self._live.get(session_id)

    async def get(self, session_id: str) -> SessionRecord:
        """Return the freshest record of a session.

        Raises:
            SessionNotFoundError: when no session has that id.
        """
        live = self._live.get(session_id)
        if live is not None:
            return live.record
        record = await asyncio.to_thread(self._store.get_session, session_id)
        if record is None:
            raise SessionNotFoundError(
                f"no session {session_id!r}: list sessions with %agh session list", session_id=session_id
            )
        return record

    async def list(self) -> list[SessionRecord]:
        """Return every session, oldest first, live records overlaid on stored ones."""
        stored = await asyncio.to_thread(self._store.list_sessions)
        return [self._live[r.id].record if r.id in self._live else r for r in stored]

    async def _require_live(self, session_id: str) -> LiveSession:
        live = self._live.get(session_id)
        if live is None:
            record = await self.get(session_id)  # raises SessionNotFoundError
            raise SessionNotActiveError(
                f"session {session_id} is {record.state.value}, not active: resume it first "
                f"(%agh session resume {session_id})",
                session_id=session_id,
            )
        return live
