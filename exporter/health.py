"""Builds the health document of ``/api/health/checkpointer`` from what the sidecar knows.

Rules, in order:

- ``unhealthy`` (HTTP 503): PostgreSQL is the configured store and did not
  answer (no fallback is active);
- ``degraded`` (HTTP 200): the in-memory fallback runs although PostgreSQL
  was requested, or the checkpointer pool is exhausted (every connection
  busy and requests waiting);
- ``healthy`` (HTTP 200): otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from exporter.checkpointer.backend import Backend
from exporter.checkpointer.instrumented import ErrorRecord
from exporter.database import Ping
from exporter.redact import redact

HEALTHY, DEGRADED, UNHEALTHY = "healthy", "degraded", "unhealthy"


@dataclass(frozen=True, slots=True)
class HealthInputs:
    """Everything the document is made of, gathered by the sidecar at request time."""

    backend: Backend
    saver: str | None
    ping: Ping | None
    pool_stats: Mapping[str, int] | None
    last_error: ErrorRecord | None


def _pool_exhausted(stats: Mapping[str, int]) -> bool:
    return (
        stats.get("requests_waiting", 0) > 0
        and stats.get("pool_available", 0) == 0
        and stats.get("pool_size", 0) >= stats.get("pool_max", 0)
    )


def status_of(inputs: HealthInputs) -> str:
    """Apply the rules in this module's docstring."""
    if inputs.backend.fallback_reason is not None:
        return DEGRADED
    if inputs.backend.postgres_requested and not (inputs.ping and inputs.ping.ok):
        return UNHEALTHY
    if inputs.pool_stats and _pool_exhausted(inputs.pool_stats):
        return DEGRADED
    return HEALTHY


def health_document(
    inputs: HealthInputs, now: datetime | None = None
) -> tuple[dict[str, Any], int]:
    """The JSON document and its HTTP status (503 only when unhealthy)."""
    backend, ping, stats = inputs.backend, inputs.ping, inputs.pool_stats
    status = status_of(inputs)
    postgres: dict[str, Any] = {
        "enabled": backend.postgres_requested,
        "connected": bool(ping and ping.ok),
        "connectionString": redact(backend.connection_string)
        if backend.connection_string
        else None,
        "schema": backend.schema,
    }
    if ping is not None:
        postgres["serverVersion"] = ping.server_version
        postgres["latencyMs"] = round(ping.seconds * 1000, 3)
        postgres["error"] = ping.error
    pool = None
    if stats is not None:
        pool = {
            "size": stats.get("pool_size", 0),
            "min": stats.get("pool_min", 0),
            "max": stats.get("pool_max", 0),
            "available": stats.get("pool_available", 0),
            "waiting": stats.get("requests_waiting", 0),
        }
    last_error = None
    if inputs.last_error is not None:
        record = inputs.last_error
        last_error = {
            "operation": record.operation,
            "error": record.error,
            "message": record.message,
            "at": record.at.isoformat(),
        }
    document = {
        "status": status,
        "checkpointer": backend.checkpointer,
        "saver": inputs.saver,
        "postgres": postgres,
        "pool": pool,
        "fallback": {
            "active": backend.fallback_reason is not None,
            "reason": backend.fallback_reason,
        },
        "lastError": last_error,
        "checkedAt": (now or datetime.now(UTC)).isoformat(),
    }
    return document, 503 if status == UNHEALTHY else 200
