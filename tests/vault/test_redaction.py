"""Redaction: the registry of secret values and everything that scrubs with it (SPEC 6)."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator

import pytest

from agh_nb.core.redaction import (
    MIN_SECRET_LENGTH,
    RedactingFilter,
    Redactor,
    install_log_redaction,
    redact_strings,
)

SECRET = "sk-test-0123456789abcdef"
LABEL = "vault:providers/openai"


@pytest.fixture
def redactor() -> Redactor:
    r = Redactor()
    assert r.register(SECRET, LABEL)
    return r


def test_nothing_registered_returns_the_same_object() -> None:
    r = Redactor()
    text = "nothing to hide here"
    assert r.redact(text) is text
    obj = {"a": [text]}
    assert r.redact_json(obj) is obj


def test_registered_values_are_replaced_by_their_label(redactor: Redactor) -> None:
    out = redactor.redact(f"auth failed for {SECRET}; retry {SECRET}")
    assert out == f"auth failed for [redacted:{LABEL}]; retry [redacted:{LABEL}]"


def test_longest_value_wins_when_values_overlap() -> None:
    r = Redactor()
    r.register("abcd", "vault:mcp/short")
    r.register("abcdefgh", "vault:mcp/long")
    assert r.redact("xx abcdefgh abcd") == "xx [redacted:vault:mcp/long] [redacted:vault:mcp/short]"


@pytest.mark.parametrize("value", ["", "a", "ab", "abc"], ids=["empty", "one", "two", "three"])
def test_values_shorter_than_the_minimum_are_ignored(value: str) -> None:
    r = Redactor()
    assert len(value) < MIN_SECRET_LENGTH
    assert r.register(value, "vault:mcp/x") is False
    assert len(r) == 0
    assert r.redact("abc abc") == "abc abc"


def test_regex_metacharacters_are_literal() -> None:
    r = Redactor()
    r.register("a.b*c(d)", "vault:hooks/x")
    assert r.redact("a.b*c(d) axbbbc(d)") == "[redacted:vault:hooks/x] axbbbc(d)"


def test_json_escaped_form_is_redacted_too() -> None:
    r = Redactor()
    value = 'pa"ss\\word'
    r.register(value, "vault:bridges/x")
    text = json.dumps({"stderr": f"bad token {value}"})
    assert "ss\\\\word" in text
    assert r.redact(text) == json.dumps({"stderr": "bad token [redacted:vault:bridges/x]"})


def test_unregister_stops_redaction(redactor: Redactor) -> None:
    redactor.unregister(SECRET)
    assert redactor.redact(SECRET) == SECRET
    assert redactor.labels() == []


def test_a_value_held_by_two_labels_stays_redacted_until_both_go() -> None:
    r = Redactor()
    r.register(SECRET, "vault:providers/a")
    r.register(SECRET, "vault:providers/b")
    r.unregister(SECRET, "vault:providers/a")
    assert r.redact(SECRET) == "[redacted:vault:providers/b]"
    r.unregister(SECRET, "vault:providers/b")
    assert r.redact(SECRET) == SECRET


def test_unregistering_unknown_values_is_harmless(redactor: Redactor) -> None:
    redactor.unregister("never-registered")
    redactor.unregister(SECRET, "vault:mcp/other-label")
    assert redactor.redact(SECRET) == f"[redacted:{LABEL}]"


def test_redact_json_walks_dicts_lists_and_tuples(redactor: Redactor) -> None:
    obj = {"summary": f"x {SECRET}", SECRET: 1, "list": [SECRET, 2, None, (SECRET, True)], "n": 3.5}
    out = redactor.redact_json(obj)
    hidden = f"[redacted:{LABEL}]"
    assert out == {"summary": f"x {hidden}", hidden: 1, "list": [hidden, 2, None, (hidden, True)], "n": 3.5}
    assert obj["summary"] == f"x {SECRET}"  # the input is not modified


@pytest.mark.parametrize(
    "secret",
    ["sk-test-0123456789abcdef", 'with"quote', "back\\slash", "tab\there", "sécrète-1234", "12345678"],
    ids=["plain", "quote", "backslash", "control", "non-ascii", "digits"],
)
@pytest.mark.parametrize(
    "obj",
    [
        {"text": "{s}", "raw": {"content": {"text": "a{s}b"}}},
        {"{s}": 1, "n": [2, None, True, 3.5]},
        {"list": ["x", ("y", "{s}")], 7: "{s}"},
        {"split": ["{head}", "{tail}"], "clean": "nothing here"},
        {"surrogate": "\ud800 {s}"},
        {"surrogate": "\ud800 clean"},
        {"big": 2**70, "text": "{s}"},
        {"number": 12345678, "text": "clean"},
        {"json": '{{"key": "{s}"}}'},
        {"escaped": "{escaped}"},
    ],
    ids=["text-and-raw", "key", "list-tuple-int-key", "split", "surrogate", "surrogate-clean",
         "huge-int", "number", "json-text", "escaped-form"],
)
def test_redact_json_gives_what_walking_gives(secret: str, obj: dict[object, object]) -> None:
    # redact_json may search the value's JSON text first (issue 14); whatever the secret's
    # characters, the result must be exactly the walk's, and a clean value comes back as itself.
    r = Redactor()
    assert r.register(secret, LABEL)
    escaped = json.dumps(secret)[1:-1]
    fill = {"s": secret, "head": secret[:3], "tail": secret[3:], "escaped": escaped}

    def filled(value: object) -> object:
        if isinstance(value, str):
            return value.format(**fill) if "{" in value else value
        if isinstance(value, dict):
            return {filled(k): filled(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(filled(v) for v in value)
        return value

    value = filled(obj)
    assert r.redact_json(value) == redact_strings(value, r.redact)


@pytest.mark.parametrize(
    "obj",
    [
        {"text": "clean", "raw": {"content": {"text": "also clean"}, "_meta": {"at": 1.5, "i": 3}}},
        {"list": ["x", ("y", None)], 7: "z", "split": ["sk-test-", "0123456789abcdef"]},
    ],
)
def test_redact_json_returns_a_clean_value_itself(redactor: Redactor, obj: dict[object, object]) -> None:
    assert redactor.redact_json(obj) is obj  # nothing walked or copied (the per-event hot path)


def test_repr_and_labels_never_show_values(redactor: Redactor) -> None:
    assert SECRET not in repr(redactor)
    assert redactor.labels() == [LABEL]
    assert bool(Redactor()) is True  # an empty registry is not falsy


def test_concurrent_registration_and_redaction() -> None:
    r = Redactor()
    values = [f"secret-value-{i:04d}" for i in range(200)]
    errors: list[BaseException] = []

    def writer() -> None:
        for i, v in enumerate(values):
            r.register(v, f"vault:mcp/k{i}")

    def reader() -> None:
        try:
            for _ in range(300):
                r.redact("secret-value-0001 and secret-value-0199")
        except BaseException as exc:  # pragma: no cover - a failure is reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert r.redact("secret-value-0001 secret-value-0199") == "[redacted:vault:mcp/k1] [redacted:vault:mcp/k199]"


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO, logging.Handler]]:
    logger = logging.getLogger("agh_nb.tests_redaction.child")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield logger, stream, handler
    finally:
        logger.removeHandler(handler)
        logger.propagate = True


def test_redacting_filter_formats_then_redacts(
    redactor: Redactor, captured: tuple[logging.Logger, io.StringIO, logging.Handler]
) -> None:
    logger, stream, handler = captured
    handler.addFilter(RedactingFilter(redactor))
    logger.info("token %s rejected (%d)", SECRET, 401)
    try:
        raise RuntimeError(f"boom {SECRET}")
    except RuntimeError:
        logger.exception("failed")
    out = stream.getvalue()
    assert SECRET not in out
    assert f"token [redacted:{LABEL}] rejected (401)" in out
    assert f"RuntimeError: boom [redacted:{LABEL}]" in out


def test_install_log_redaction_covers_child_loggers_and_uninstalls(
    redactor: Redactor, captured: tuple[logging.Logger, io.StringIO, logging.Handler]
) -> None:
    logger, stream, _ = captured
    other = logging.getLogger("not_agh_nb.tests_redaction")
    before = logging.getLogRecordFactory()
    uninstall = install_log_redaction(redactor, logger_name="agh_nb")
    try:
        logger.warning("key %s", SECRET)
        assert other.makeRecord(other.name, logging.INFO, "f", 1, "%s", (SECRET,), None).getMessage() == SECRET
    finally:
        uninstall()
        uninstall()  # idempotent
    assert logging.getLogRecordFactory() is before
    logger.warning("after %s", SECRET)
    lines = stream.getvalue().splitlines()
    assert lines[0] == f"agh_nb.tests_redaction.child key [redacted:{LABEL}]"
    assert lines[1].endswith(SECRET)


def test_filter_leaves_records_alone_when_nothing_is_registered() -> None:
    record = logging.LogRecord("agh_nb", logging.INFO, "f", 1, "value %s", ("x",), None)
    assert RedactingFilter(Redactor()).filter(record) is True
    assert record.args == ("x",)


def test_log_redaction_covers_every_logger_by_default(redactor: Redactor) -> None:
    # The ACP SDK logs a notification it cannot validate, payload included, on the root logger.
    uninstall = install_log_redaction(redactor)
    try:
        for name in ("root", "acp.connection", "asyncio", "agh_nb.core.session"):
            logger = logging.getLogger(None if name == "root" else name)
            record = logger.makeRecord(logger.name, logging.ERROR, "f", 1, "bad update %s", (SECRET,), None)
            assert record.getMessage() == f"bad update [redacted:{LABEL}]", name
    finally:
        uninstall()
