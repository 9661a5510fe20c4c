"""What the sandbox of one session must allow and hide (SPEC 5, 7): a pure decision.

Owns: ``SandboxPolicy`` (the value a launch carries: mode, network, what is writable, what is
hidden) and ``sandbox_policy``, which settles it from ``config.toml`` ``[sandbox]``, the agent
definition's ``sandbox:`` override and the session (workspace, permission mode). How the policy
is enforced (bubblewrap) is the adapters' business. Imports only ``config``; touches no file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from agh_nb.config import AgentDefinition, Settings

PROCESS_TAG = "AGH_NB_SESSION"
"""The environment variable every agent and terminal process carries (the session id): how a host
that starts after a crash tells the processes a dead host left from strangers with a recycled pid."""


@dataclass(frozen=True)
class SandboxPolicy:
    """How one session's agent and terminals are confined.

    Attributes:
        mode: ``auto`` (sandbox where bubblewrap works), ``off`` or ``required``.
        network: False cuts the network (a private network namespace with only loopback).
        workspace: the workspace's real path.
        workspace_writable: False under ``deny-all``: the workspace is read-only too.
        home: the user's home directory (agent state lives there).
        writable: absolute agent-state paths bound writable when they exist.
        create: agent-state paths to create before the agent starts, so an agent can keep its
            state in them the first time it runs: a directory (0700) for a path ending in ``/``,
            a file holding ``{}`` (0600) for one ending in ``.json``.
        hidden: absolute paths that must not be visible at all (``$AGH_HOME`` first).
        bwrap: the bubblewrap binary to use (None: ``bwrap`` on the ``PATH``).
    """

    mode: str
    network: bool
    workspace: str
    workspace_writable: bool
    home: str
    writable: tuple[str, ...] = ()
    create: tuple[str, ...] = ()
    hidden: tuple[str, ...] = ()
    bwrap: str | None = None

    @property
    def enabled(self) -> bool:
        """False when the mode is ``off`` (no sandbox is even tried)."""
        return self.mode != "off"


def _expand(path: str, home: str) -> str:
    """``~/x`` under ``home`` (a trailing ``/`` is dropped)."""
    rest = path[2:] if path.startswith("~/") else path
    return os.path.normpath(os.path.join(home, rest))


def sandbox_policy(
    settings: Settings,
    definition: AgentDefinition | None,
    *,
    workspace: str,
    permissions: str,
    agh_home: str,
    home: str,
) -> SandboxPolicy:
    """Settle the sandbox of a session: the AGENT.md ``sandbox:`` key wins over ``[sandbox]``,
    except that a definition found in the workspace (``<workspace>/.agh/agents``) may only
    tighten it: the agent can write there, so what it says must not open the sandbox for the next
    session (no ``off``, no network the config cut, no writable path of its choosing).

    Args:
        settings: ``config.toml``.
        definition: the agent definition (its ``sandbox`` override, if any).
        workspace: the workspace's real path.
        permissions: the session's permission mode (``deny-all`` makes the workspace read-only).
        agh_home: ``$AGH_HOME`` (never visible inside).
        home: the user's home directory.
    """
    override = definition.sandbox if definition else None
    mode = (override.mode if override and override.mode else None) or settings.sandbox_mode
    network = settings.sandbox_network if override is None or override.network is None else override.network
    extra = override.writable if override else ()
    if definition is not None and definition.in_workspace(workspace):
        mode = "required" if "required" in (mode, settings.sandbox_mode) else settings.sandbox_mode
        network = network and settings.sandbox_network
        extra = ()
    writable = tuple(dict.fromkeys(_expand(p, home) for p in (*settings.sandbox_writable, *extra)))
    create = tuple(_expand(p, home) + ("/" if p.endswith("/") else "") for p in extra if p.endswith(("/", ".json")))
    default_home = _expand("~/.agh-nb", home)
    hidden = tuple(dict.fromkeys((os.path.realpath(agh_home), agh_home, default_home)))
    return SandboxPolicy(
        mode=mode,
        network=network,
        workspace=workspace,
        workspace_writable=permissions != "deny-all",
        home=home,
        writable=writable,
        create=create,
        hidden=hidden,
        bwrap=settings.sandbox_bwrap,
    )
