"""Builds the health document of ``/api/health/checkpointer`` from what the sidecar knows.

Rules, in order; the first that applies decides:

1. ``degraded`` (HTTP 200): the in-memory fallback runs although PostgreSQL
   was requested;
2. ``unhealthy`` (HTTP 503): PostgreSQL is the configured store and did not
   answer the health check (within ``health_timeout``, on a connection of its
   own); ``lastError`` then names the cause;
3. ``unhealthy`` (HTTP 503): the canary failed its last 3 probes in a row
   (``CANARY_UNHEALTHY_AFTER``): checkpoints cannot be saved or read back;
4. ``degraded`` (HTTP 200): the canary's last probe did not succeed (timeout,
   error or mismatch);
5. ``degraded`` (HTTP 200): the checkpointer pool is exhausted (every
   connection busy and requests waiting);
6. ``degraded`` (HTTP 200): the last recovery check found running or interrupted workflows
   whose latest checkpoint does not load;
7. ``degraded`` (HTTP 200): the integrity checks found problems;
8. ``healthy`` (HTTP 200): otherwise.

The canary counts only on the sidecar that ran its last probe (the leader);
elsewhere its figures are reported but judge nothing. A canary that does not
probe because the schema is below what its saver needs (written by another
saver) is reported as ``unsupported`` and judges nothing either. A recovery check that
could not reach the database judges nothing either: rule 2 covers an outage.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal, NotRequired, Protocol, TypedDict, cast

from exporter.causes import CAUSES
from exporter.checkpointer.backend import MEMORY, POSTGRES, Backend
from exporter.checkpointer.instrumented import ErrorRecord
from exporter.contract.schema import Enumerated, Format
from exporter.database import Ping
from exporter.redact import redact
from exporter.workflows.canary import READBACK_RESULTS, RESULTS, SUCCESS, CanaryStatus
from exporter.workflows.recovery import RecoveryReport

Status = Literal["healthy", "degraded", "unhealthy"]
HEALTHY: Final = "healthy"
DEGRADED: Final = "degraded"
UNHEALTHY: Final = "unhealthy"
# lastError's operation while the database does not answer the health check.
DATABASE_CHECK: Final = "database_check"
# The canary's status while the schema is below what its saver needs: not a failure.
UNSUPPORTED: Final = "unsupported"
# Consecutive failed canary probes that make the checkpointer unhealthy rather than degraded.
CANARY_UNHEALTHY_AFTER: Final = 3


# The document's types. exporter/contract/health.schema.json is derived from them, and each
# Annotated hint is what the schema says beyond a plain string (its format, its values).
Timestamp = Annotated[str, Format("date-time")]
Cause = Annotated[str, Enumerated(CAUSES)]
Checkpointer = Annotated[str, Enumerated((POSTGRES, MEMORY))]
CanaryResult = Annotated[str, Enumerated((*RESULTS, UNSUPPORTED))]
Readback = Annotated[str, Enumerated(READBACK_RESULTS)]


class PostgresSection(TypedDict):
    """The configured PostgreSQL; serverVersion, latencyMs, error and cause once checked."""

    enabled: bool
    connected: bool
    connectionString: str | None
    schema: str
    serverVersion: NotRequired[str | None]
    latencyMs: NotRequired[float]
    error: NotRequired[str | None]
    cause: NotRequired[Cause | None]


class PoolSection(TypedDict):
    """The checkpointer pool's connections and waiting requests."""

    size: int
    min: int
    max: int
    available: int
    waiting: int


class FallbackSection(TypedDict):
    """Whether the in-memory saver runs although PostgreSQL was requested, and why."""

    active: bool
    reason: str | None


class LastError(TypedDict):
    """The database's failure while it lasts, else the checkpointer's last failed operation."""

    operation: str
    error: str | None
    cause: Cause | None
    message: str
    at: Timestamp


class CanarySection(TypedDict):
    """The canary's last probe; unsupportedReason only while the schema cannot take it."""

    active: bool
    status: CanaryResult | None
    consecutiveFailures: int
    lastSaveSeconds: float | None
    lastLoadSeconds: float | None
    lastProbeAt: Timestamp | None
    error: str | None
    restartReadback: Readback | None
    unsupportedReason: NotRequired[str]


class RecoverySection(TypedDict):
    """The last recovery check of running and interrupted workflows."""

    checked: int
    recovered: int
    failed: int
    tableExists: bool
    error: str | None
    completedAt: Timestamp
    durationSeconds: float


class IntegritySection(TypedDict):
    """Problems by check in the last completed integrity pass."""

    problems: dict[str, int]
    completedAt: Timestamp | None


class HealthDocument(TypedDict):
    """The health document of /api/health/checkpointer (HTTP 503 only when unhealthy)."""

    status: Status
    checkpointer: Checkpointer
    saver: str | None
    postgres: PostgresSection
    pool: PoolSection | None
    fallback: FallbackSection
    lastError: LastError | None
    canary: CanarySection | None
    recovery: RecoverySection | None
    integrity: IntegritySection | None
    checkedAt: Timestamp


class IntegritySummary(Protocol):
    """What health needs from the integrity checks: problems found, by kind, and when."""

    @property
    def counts(self) -> Mapping[str, int]: ...

    @property
    def completed_at(self) -> float | None: ...


@dataclass(frozen=True, slots=True)
class HealthInputs:
    """Everything the document is made of, gathered by the sidecar at request time."""

    backend: Backend
    saver: str | None
    ping: Ping | None
    pool_stats: Mapping[str, int] | None
    last_error: ErrorRecord | None
    canary: CanaryStatus | None = None
    recovery: RecoveryReport | None = None
    integrity: IntegritySummary | None = None


def _pool_exhausted(stats: Mapping[str, int]) -> bool:
    return (
        stats.get("requests_waiting", 0) > 0
        and stats.get("pool_available", 0) == 0
        and stats.get("pool_size", 0) >= stats.get("pool_max", 0)
    )


def _canary_failures(canary: CanaryStatus | None) -> int:
    """Failed probes in a row that count here: none unless this sidecar runs the canary."""
    if canary is None or not canary.active or canary.unsupported is not None:
        return 0
    if canary.last_result in (None, SUCCESS):
        return 0
    return canary.consecutive_failures


def status_of(inputs: HealthInputs) -> Status:
    """Apply the rules in this module's docstring."""
    if inputs.backend.fallback_reason is not None:
        return DEGRADED
    if inputs.backend.postgres_requested and not (inputs.ping and inputs.ping.ok):
        return UNHEALTHY
    canary_failures = _canary_failures(inputs.canary)
    if canary_failures >= CANARY_UNHEALTHY_AFTER:
        return UNHEALTHY
    if canary_failures > 0:
        return DEGRADED
    if inputs.pool_stats and _pool_exhausted(inputs.pool_stats):
        return DEGRADED
    if inputs.recovery is not None and inputs.recovery.failed > 0:
        return DEGRADED
    if inputs.integrity is not None and any(n > 0 for n in inputs.integrity.counts.values()):
        return DEGRADED
    return HEALTHY


def _at(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).isoformat()


def _when(unix: float | None) -> str | None:
    return None if unix is None else _at(unix)


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def canary_section(canary: CanaryStatus | None) -> CanarySection | None:
    """The canary's part of the document (None: the canary is off).

    ``status`` is ``unsupported`` while the schema cannot take the canary's saver,
    and ``unsupportedReason`` (present only then) says which migration level and columns.
    """
    if canary is None:
        return None
    section: CanarySection = {
        "active": canary.active,
        "status": UNSUPPORTED if canary.unsupported is not None else canary.last_result,
        "consecutiveFailures": canary.consecutive_failures,
        "lastSaveSeconds": _seconds(canary.last_save_seconds),
        "lastLoadSeconds": _seconds(canary.last_load_seconds),
        "lastProbeAt": _when(canary.last_probe_at),
        "error": canary.last_error,
        "restartReadback": canary.readback,
    }
    if canary.unsupported is not None:
        section["unsupportedReason"] = canary.unsupported
    return section


def recovery_section(report: RecoveryReport | None) -> RecoverySection | None:
    """The last recovery check (None: none finished yet); thread ids stay in the logs."""
    if report is None:
        return None
    return {
        "checked": report.checked,
        "recovered": report.recovered,
        "failed": report.failed,
        "tableExists": report.table_exists,
        "error": report.error,
        "completedAt": _at(report.completed_at),
        "durationSeconds": round(report.duration_seconds, 6),
    }


def integrity_section(integrity: IntegritySummary | None) -> IntegritySection | None:
    """The integrity checks' last findings (None: not running)."""
    if integrity is None:
        return None
    return {
        "problems": dict(integrity.counts),
        "completedAt": _when(integrity.completed_at),
    }


def _last_error(inputs: HealthInputs, now: datetime) -> LastError | None:
    """The database's failure while it lasts (the cause of everything else), else the
    checkpointer's last failed operation."""
    ping = inputs.ping
    if ping is not None and not ping.ok:
        message = ping.error or ""
        return {
            "operation": DATABASE_CHECK,
            "error": message.partition(": ")[0] or None,
            "cause": ping.cause,
            "message": message,
            "at": now.isoformat(),
        }
    record = inputs.last_error
    if record is None:
        return None
    return {
        "operation": record.operation,
        "error": record.error,
        "cause": None,
        "message": record.message,
        "at": record.at.isoformat(),
    }


def build_document(inputs: HealthInputs, now: datetime | None = None) -> tuple[HealthDocument, int]:
    """The JSON document and its HTTP status (503 only when unhealthy)."""
    backend, ping, stats = inputs.backend, inputs.ping, inputs.pool_stats
    status = status_of(inputs)
    postgres: PostgresSection = {
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
        postgres["cause"] = ping.cause
    pool: PoolSection | None = None
    if stats is not None:
        pool = {
            "size": stats.get("pool_size", 0),
            "min": stats.get("pool_min", 0),
            "max": stats.get("pool_max", 0),
            "available": stats.get("pool_available", 0),
            "waiting": stats.get("requests_waiting", 0),
        }
    now = now or datetime.now(UTC)
    last_error = _last_error(inputs, now)
    document: HealthDocument = {
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
        "canary": canary_section(inputs.canary),
        "recovery": recovery_section(inputs.recovery),
        "integrity": integrity_section(inputs.integrity),
        "checkedAt": now.isoformat(),
    }
    return document, 503 if status == UNHEALTHY else 200


def health_document(
    inputs: HealthInputs, now: datetime | None = None
) -> tuple[dict[str, Any], int]:
    """:func:`build_document` as the routes take it: the same dict, typed as a plain one."""
    document, status = build_document(inputs, now)
    return cast(dict[str, Any], document), status
