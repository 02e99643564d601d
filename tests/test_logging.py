"""configure_logging: one JSON object per event, secrets masked, levels filtered."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
import structlog

import exporter.redact
from exporter.log import configure_logging, get_logger
from exporter.redact import register_secret

PASSWORD = "s3cr3t-pw"
URL = f"postgresql://exporter:{PASSWORD}@db.example:5432/app"
REQUIRED_KEYS = {"component", "event", "level", "timestamp"}


@pytest.fixture(autouse=True)
def restore_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Undo configure_logging after each test: root handlers, root level, structlog defaults."""
    monkeypatch.setattr(exporter.redact, "_secrets", set())
    root = logging.getLogger()
    level = root.level
    yield
    root.handlers[:] = [
        handler
        for handler in root.handlers
        if not isinstance(handler.formatter, structlog.stdlib.ProcessorFormatter)
    ]
    root.setLevel(level)
    structlog.reset_defaults()


@pytest.fixture
def stream() -> io.StringIO:
    """JSON logging at info level into a string buffer."""
    buffer = io.StringIO()
    configure_logging("info", "json", stream=buffer)
    return buffer


def events(buffer: io.StringIO) -> list[dict[str, Any]]:
    """Parse the buffer, requiring exactly one JSON object per line."""
    parsed: list[dict[str, Any]] = []
    for line in buffer.getvalue().splitlines():
        event = json.loads(line)
        assert isinstance(event, dict), line
        parsed.append(event)
    return parsed


def raise_with_url() -> None:
    raise RuntimeError(f"connection failed: {URL}")


def test_every_event_is_one_json_line(stream: io.StringIO) -> None:
    """Each event, even one with newlines in it, is exactly one line holding one JSON object."""
    log = get_logger("checkpointer")
    log.info("first")
    log.warning("second", detail="line one\nline two")
    logging.getLogger("psycopg.pool").warning("third\nspans lines")
    text = stream.getvalue()
    assert text.endswith("\n")
    assert len(text.splitlines()) == 3
    assert [event["event"] for event in events(stream)] == ["first", "second", "third\nspans lines"]


def test_every_event_has_the_required_keys(stream: io.StringIO) -> None:
    """structlog and standard-library events carry component, event, level and a UTC timestamp."""
    get_logger("sidecar").info("sidecar_started", port=9877)
    get_logger("sidecar").error("sidecar_failed")
    logging.getLogger("psycopg.pool").warning("pool is full")
    parsed = events(stream)
    assert len(parsed) == 3
    for event in parsed:
        assert set(event) >= REQUIRED_KEYS, event
        stamp = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
        offset = stamp.utcoffset()
        assert offset is not None
        assert offset.total_seconds() == 0
    assert [(e["component"], e["level"]) for e in parsed] == [
        ("sidecar", "info"),
        ("sidecar", "error"),
        ("psycopg.pool", "warning"),
    ]
    assert parsed[0]["port"] == 9877


def test_password_in_fields_is_masked(stream: io.StringIO) -> None:
    """Passwords in string, nested and sequence fields are masked."""
    get_logger("embedded").info(
        "embedded_database_started",
        url=URL,
        nested={"dsn": f"host=db password={PASSWORD}", "hosts": [URL]},
        pair=(URL, "plain"),
    )
    text = stream.getvalue()
    assert PASSWORD not in text
    (event,) = events(stream)
    assert event["url"] == "postgresql://exporter:***@db.example:5432/app"
    assert event["nested"]["dsn"] == "host=db password=***"
    assert event["nested"]["hosts"] == ["postgresql://exporter:***@db.example:5432/app"]
    assert event["pair"] == ["postgresql://exporter:***@db.example:5432/app", "plain"]


def test_non_string_field_is_masked(stream: io.StringIO) -> None:
    """An exception (or other object) passed as a field does not leak its password."""
    try:
        raise_with_url()
    except RuntimeError as exc:
        get_logger("factory").warning("checkpointer_fallback", error=exc, attempts=3, ok=False)
    assert PASSWORD not in stream.getvalue()
    (event,) = events(stream)
    assert "RuntimeError" in event["error"]
    assert "***" in event["error"]
    assert (event["attempts"], event["ok"]) == (3, False)


def test_password_in_event_is_masked(stream: io.StringIO) -> None:
    """A password in the event text itself is masked."""
    get_logger("cli").info(f"connecting to {URL}")
    (event,) = events(stream)
    assert PASSWORD not in stream.getvalue()
    assert event["event"] == "connecting to postgresql://exporter:***@db.example:5432/app"


def test_password_in_traceback_is_masked(stream: io.StringIO) -> None:
    """log.exception renders the traceback with the password masked."""
    try:
        raise_with_url()
    except RuntimeError:
        get_logger("checkpointer").exception("save_failed")
    assert PASSWORD not in stream.getvalue()
    (event,) = events(stream)
    assert event["level"] == "error"
    assert event["exception"].startswith("Traceback (most recent call last):")
    assert "RuntimeError: connection failed: postgresql://exporter:***@" in event["exception"]


def test_registered_secret_is_masked_in_free_text(stream: io.StringIO) -> None:
    """A registered secret (POSTGRES_PASSWORD) is masked even outside a URL."""
    register_secret(PASSWORD)
    get_logger("cli").warning("odd value", value=f"the word {PASSWORD}")
    (event,) = events(stream)
    assert PASSWORD not in stream.getvalue()
    assert event["value"] == "the word ***"


def test_standard_library_records_are_masked(stream: io.StringIO) -> None:
    """Records from other libraries' loggers are masked in message, arguments, extras, traceback."""
    pool = logging.getLogger("psycopg.pool")
    pool.warning("error connecting in 'pool-1': %s", f"host=db password={PASSWORD}")
    pool.warning("configured", extra={"conninfo": URL})
    try:
        raise_with_url()
    except RuntimeError:
        pool.error("pool failed", exc_info=True)
    assert PASSWORD not in stream.getvalue()
    first, second, third = events(stream)
    assert first["component"] == "psycopg.pool"
    assert first["event"] == "error connecting in 'pool-1': host=db password=***"
    assert second["conninfo"] == "postgresql://exporter:***@db.example:5432/app"
    assert "RuntimeError: connection failed: postgresql://exporter:***@" in third["exception"]


def test_debug_is_hidden_at_info(stream: io.StringIO) -> None:
    """At info level, debug events are dropped from structlog and standard-library loggers."""
    get_logger("sidecar").debug("hidden")
    logging.getLogger("psycopg.pool").debug("hidden too")
    get_logger("sidecar").info("shown")
    assert [event["event"] for event in events(stream)] == ["shown"]


def test_warning_level_hides_info() -> None:
    """At warning level, info is dropped and warning and error are kept."""
    buffer = io.StringIO()
    configure_logging("warning", "json", stream=buffer)
    log = get_logger("scrape")
    log.info("hidden")
    log.warning("kept")
    logging.getLogger("langgraph").error("kept too")
    assert [event["event"] for event in events(buffer)] == ["kept", "kept too"]


def test_debug_level_shows_debug() -> None:
    """At debug level, debug events are emitted."""
    buffer = io.StringIO()
    configure_logging("debug", "json", stream=buffer)
    get_logger("sidecar").debug("visible")
    (event,) = events(buffer)
    assert (event["event"], event["level"]) == ("visible", "debug")


def test_auto_format_is_json_off_a_terminal() -> None:
    """With format auto and a stream that is not a terminal, events are JSON."""
    buffer = io.StringIO()
    configure_logging("info", "auto", stream=buffer)
    get_logger("cli").info("hello")
    (event,) = events(buffer)
    assert event["event"] == "hello"


def test_console_format_masks_passwords() -> None:
    """The console renderer masks passwords in fields and tracebacks too."""
    buffer = io.StringIO()
    configure_logging("info", "console", stream=buffer)
    try:
        raise_with_url()
    except RuntimeError:
        get_logger("cli").exception("failed", url=URL)
    text = buffer.getvalue()
    assert "failed" in text
    assert "RuntimeError" in text
    assert "postgresql://exporter:***@db.example:5432/app" in text
    assert PASSWORD not in text


def test_configuring_twice_keeps_one_handler() -> None:
    """Reconfiguring replaces the handler, so events are not written twice."""
    first, second = io.StringIO(), io.StringIO()
    configure_logging("info", "json", stream=first)
    configure_logging("info", "json", stream=second)
    get_logger("cli").info("once")
    assert first.getvalue() == ""
    assert len(events(second)) == 1


def test_logger_configured_later_is_picked_up() -> None:
    """A logger created before configure_logging still uses the configuration made later."""
    log = get_logger("early")
    buffer = io.StringIO()
    configure_logging("info", "json", stream=buffer)
    log.info("late", url=URL)
    (event,) = events(buffer)
    assert (event["component"], event["url"]) == (
        "early",
        "postgresql://exporter:***@db.example:5432/app",
    )
