"""structlog setup: one JSON event per line off a terminal, secrets masked."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor

from exporter.redact import redact

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def _redact_values(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, MutableMapping):
        return {key: _redact_values(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_values(item) for item in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    # Anything else (an exception, say) is rendered by repr() after this processor.
    return redact(repr(value))


def redact_event(_: Any, __: str, event_dict: EventDict) -> EventDict:
    """Mask passwords in every field, including rendered tracebacks."""
    return {key: _redact_values(value) for key, value in event_dict.items()}


def _default_component(_: Any, __: str, event_dict: EventDict) -> EventDict:
    # Records from other libraries (psycopg_pool, langgraph) carry their logger name.
    if "component" not in event_dict:
        record = event_dict.get("_record")
        event_dict["component"] = record.name if record is not None else "exporter"
    return event_dict


def configure_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Route structlog and standard-library logging through one redacting renderer."""
    stream = stream or sys.stderr
    as_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    renderer: Processor = (
        structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer()
    )
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        processors=[
            _default_component,
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redact_event,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS[level])


def get_logger(component: str) -> structlog.stdlib.BoundLogger:
    """A logger whose events carry ``component`` (``checkpointer``, ``sidecar``, ...)."""
    # A lazy proxy: module-level loggers must pick up the configuration made later.
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(component, component=component)
    return logger
