"""Choosing an auth method and saying what each needs (core.auth), over the methods real agents
advertise (codex-acp 0.16.0, claude-agent-acp 0.23.1, gemini-cli 0.61.0; REAL-AGENTS.md)."""

from __future__ import annotations

import pytest

from agh_nb.core.auth import auth_failure_summary, choose_method, describe_method, methods_view

CODEX = [
    {"id": "chatgpt", "name": "Login with ChatGPT", "description": "Use your ChatGPT login"},
    {"type": "env_var", "id": "codex-api-key", "name": "Use CODEX_API_KEY", "vars": [{"name": "CODEX_API_KEY"}]},
    {"type": "env_var", "id": "openai-api-key", "name": "Use OPENAI_API_KEY", "vars": [{"name": "OPENAI_API_KEY"}]},
]
CLAUDE = [{"description": "Run `claude /login` in the terminal", "name": "Log in with Claude", "id": "claude-login", "type": "terminal", "args": ["--cli"]}]
GEMINI = [
    {"id": "oauth-personal", "name": "Log in with Google"},
    {"id": "gemini-api-key", "name": "Gemini API key", "_meta": {"api-key": {"provider": "google"}}},
]


@pytest.mark.parametrize(
    ("methods", "env", "configured", "chosen"),
    [
        (CODEX, {"OPENAI_API_KEY"}, None, "openai-api-key"),
        (CODEX, {"CODEX_API_KEY", "OPENAI_API_KEY"}, None, "codex-api-key"),
        (CODEX, set(), None, None),
        (CLAUDE, {"ANTHROPIC_API_KEY"}, None, None),
        (GEMINI, {"GEMINI_API_KEY"}, "gemini-api-key", "gemini-api-key"),
        (GEMINI, {"GEMINI_API_KEY"}, "not-offered", None),
        (GEMINI, {"GEMINI_API_KEY"}, None, None),
    ],
    ids=["codex-openai", "codex-first-fitting", "codex-no-key", "claude-terminal-only", "gemini-configured", "configured-not-offered", "gemini-unnamed"],
)
def test_choose_method(methods: list[dict[str, object]], env: set[str], configured: str | None, chosen: str | None) -> None:
    assert choose_method(methods, env, configured) == chosen


def test_an_optional_variable_is_not_needed() -> None:
    method = {"type": "env_var", "id": "k", "name": "K", "vars": [{"name": "A"}, {"name": "B", "optional": True}]}
    assert choose_method([method], {"A"}, None) == "k"


def test_the_summary_names_every_method_and_what_it_needs() -> None:
    summary = auth_failure_summary("codex", CODEX, ["codex-acp"], "session/new answered -32000 Authentication required")
    assert summary == (
        "agent 'codex' needs authentication (session/new answered -32000 Authentication required); it offers: "
        "chatgpt (Login with ChatGPT: name it in its AGENT.md `auth`, or run %agh session auth ID chatgpt); "
        "codex-api-key (set CODEX_API_KEY in its AGENT.md env); openai-api-key (set OPENAI_API_KEY in its AGENT.md env)"
    )
    assert describe_method(CLAUDE[0], ["claude-agent-acp"]) == (
        "claude-login (run `claude-agent-acp --cli` in a terminal and log in; the agent says: Run `claude /login` in the terminal)"
    )
    assert "offers no auth method" in auth_failure_summary("x", [], ["x"], "session/prompt answered -32000")


def test_methods_view_keeps_what_each_needs_and_drops_meta() -> None:
    assert methods_view(GEMINI + CLAUDE) == [
        {"id": "oauth-personal", "name": "Log in with Google", "type": "agent"},
        {"id": "gemini-api-key", "name": "Gemini API key", "type": "agent"},
        {"id": "claude-login", "name": "Log in with Claude", "type": "terminal", "args": ["--cli"], "description": "Run `claude /login` in the terminal"},
    ]
