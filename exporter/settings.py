"""Every setting the exporter reads: its variable, flag, default and validation.

The table :data:`SPECS` is the single source for the CLI flags, the environment
variables and the README's configuration table (a test keeps them equal).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from psycopg.conninfo import conninfo_to_dict

from exporter.redact import register_secret
from exporter.web_config import WebConfig, load_web_config

PREFIX = "CHECKPOINT_EXPORTER_"
DEFAULT_SCHEMA = "workflow_checkpoints"
DEFAULT_PORT = 9877
# Every collector, by name; `exporter.collectors.ALL` must hold exactly these (a test checks).
COLLECTORS = (
    "activity",
    "canary",
    "integrity",
    "migrations",
    "pool",
    "recovery",
    "statements",
    "tables",
    "workflows",
)

# Unquoted PostgreSQL identifiers only: the schema also goes into a libpq
# `options` string, where anything needing quotes would need escaping twice.
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_INTEGER = re.compile(r"^[+-]?[0-9]+$")
# A sign is accepted so that a negative duration is reported as out of range.
_DURATION = re.compile(r"^(?P<number>[+-]?\d+(?:\.\d+)?)(?P<unit>ms|s|m|h|d)?$")
# One label of a host name; underscores too, since container and service names use them.
_HOST_LABEL = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0, None: 1.0}


class SettingsError(ValueError):
    """A setting has a value the exporter cannot use; the message names it."""


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """Where the HTTP server binds; an empty host means every interface."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "checkpoint-exporter" / "pgdata"


@dataclass(frozen=True, slots=True)
class Settings:
    """Validated, immutable configuration shared by the library, sidecar and CLI."""

    use_postgres_saver: bool = True
    postgres_connection_string: str | None = field(default=None, repr=False)
    postgres_schema: str = DEFAULT_SCHEMA
    listen_address: ListenAddress = ListenAddress("", DEFAULT_PORT)
    telemetry_path: str = "/metrics"
    web_read_header_timeout: float = 10.0
    web_idle_timeout: float = 120.0
    web_max_connections: int = 256
    log_level: str = "info"
    log_format: str = "auto"
    data_dir: Path = field(default_factory=_default_data_dir)
    pool_min_size: int = 1
    pool_max_size: int = 10
    pool_timeout: float = 30.0
    prepare_threshold: int | None = 0
    application_name: str = "langgraph-checkpointer"
    fallback_to_memory: bool = False
    connect_timeout: float = 5.0
    collector_timeout: float = 5.0
    health_timeout: float = 0.75
    exporter_pool_size: int = 5
    collectors: tuple[str, ...] = COLLECTORS
    leader_election: bool = True
    tables_interval: float = 60.0
    migrations_expected: int | None = None
    tracking: bool = True
    tracking_flush_interval: float = 1.0
    stuck_after: float = 900.0
    prune_threshold: int = 1000
    canary_interval: float = 30.0
    canary_timeout: float = 5.0
    recovery_limit: int = 100
    integrity_batch: int = 200
    integrity_orphan_grace: float = 60.0
    integrity_interval: float = 10.0
    web_config_file: WebConfig | None = None
    web_healthz_open: bool = True

    @classmethod
    def load(
        cls,
        environ: Mapping[str, str] | None = None,
        flags: Mapping[str, str | None] | None = None,
    ) -> Settings:
        """Build settings from the environment and flags (a flag beats its variable).

        Raises :class:`SettingsError` naming the first bad setting.
        """
        environ = os.environ if environ is None else environ
        flags = flags or {}
        register_environment_secrets(environ)
        values: dict[str, Any] = {}
        for spec in SPECS:
            raw = flags.get(spec.field)
            if raw is None:
                raw = environ.get(spec.env)
            if raw is None:
                continue
            try:
                values[spec.field] = spec.parse(raw)
            except ValueError as exc:
                raise SettingsError(f"{spec.describe()}: {exc}") from None
        return cls(**values)

    def __post_init__(self) -> None:
        """Hold settings built in code to the rules that env and flags are held to."""
        for spec in SPECS:
            validate = getattr(spec.parse, "validate", None)
            if validate is None:
                continue
            try:
                validate(getattr(self, spec.field))
            except ValueError as exc:
                raise SettingsError(f"{spec.describe()}: {exc}") from None
        self.check()

    def check(self) -> None:
        """Reject combinations no single value can catch."""
        if self.pool_min_size > self.pool_max_size:
            raise SettingsError(
                f"{_spec('pool_min_size').describe()}: must not exceed "
                f"{_spec('pool_max_size').env} ({self.pool_max_size}), got {self.pool_min_size}"
            )
        if self.telemetry_path in RESERVED_PATHS:
            raise SettingsError(
                f"{_spec('telemetry_path').describe()}: {self.telemetry_path} is already served"
            )

    def replace(self, **changes: Any) -> Settings:
        """Return a copy with ``changes`` applied and checked."""
        return dataclasses.replace(self, **changes)

    @property
    def embedded(self) -> bool:
        """Whether the exporter must start its own PostgreSQL (no connection string given)."""
        return self.use_postgres_saver and self.postgres_connection_string is None


RESERVED_PATHS = frozenset({"/", "/healthz", "/readyz", "/api/health/checkpointer"})


@dataclass(frozen=True, slots=True)
class Spec:
    """One setting: where it comes from, how it is parsed, what it means."""

    field: str
    env: str
    flag: str | None
    parse: Callable[[str], Any]
    default: str
    help: str

    def describe(self) -> str:
        return f"{self.env} ({self.flag})" if self.flag else self.env


def _spec(name: str) -> Spec:
    return next(spec for spec in SPECS if spec.field == name)


def register_environment_secrets(environ: Mapping[str, str]) -> None:
    """Mask the passwords the environment holds, before any message can quote them."""
    register_secret(environ.get("POSTGRES_PASSWORD"))
    try:
        params = conninfo_to_dict(environ.get("POSTGRES_CONNECTION_STRING", "").strip())
    except Exception:
        return  # Reported, without the string, when the setting is parsed.
    register_secret(str(params.get("password") or ""))


def parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"expected true or false, got {raw!r}")


@dataclass(frozen=True, slots=True)
class IntegerIn:
    """Parses a whole number within bounds; :meth:`validate` holds typed values to the same."""

    low: int
    high: int

    def __call__(self, raw: str) -> int:
        if not _INTEGER.match(raw.strip()):
            raise ValueError(f"expected a whole number, got {raw!r}")
        return self.validate(int(raw.strip()))

    def validate(self, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected a whole number, got {value!r}")
        if not self.low <= value <= self.high:
            raise ValueError(f"must be between {self.low} and {self.high}, got {value}")
        return value


@dataclass(frozen=True, slots=True)
class DurationIn:
    """Parses a duration within bounds; :meth:`validate` holds typed seconds to the same."""

    low: float
    high: float

    def __call__(self, raw: str) -> float:
        match = _DURATION.match(raw.strip())
        if match is None:
            raise ValueError(f"expected a duration such as 5, 5s or 250ms, got {raw!r}")
        seconds = float(match["number"]) * _UNIT_SECONDS[match["unit"]]
        if not self.low <= seconds <= self.high:
            raise ValueError(f"must be between {self.low:g}s and {self.high:g}s, got {raw.strip()}")
        return seconds

    def validate(self, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected seconds as a number, got {value!r}")
        if not self.low <= value <= self.high:
            raise ValueError(f"must be between {self.low:g}s and {self.high:g}s, got {value:g}s")
        return float(value)


@dataclass(frozen=True, slots=True)
class UnknownOrInteger:
    """Parses a whole number within bounds, or ``unknown`` (or empty) as None."""

    low: int
    high: int

    def __call__(self, raw: str) -> int | None:
        if raw.strip().lower() in {"", "unknown"}:
            return None
        return self.validate(IntegerIn(self.low, self.high)(raw))

    def validate(self, value: Any) -> int | None:
        return None if value is None else IntegerIn(self.low, self.high).validate(value)


def integer_in(low: int, high: int) -> IntegerIn:
    return IntegerIn(low, high)


def duration_in(low: float, high: float) -> DurationIn:
    return DurationIn(low, high)


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {raw!r}")
        return "warning" if value == "warn" else value

    return parse


def parse_listen_address(raw: str) -> ListenAddress:
    host, sep, port_text = raw.strip().rpartition(":")
    if not sep:
        raise ValueError(f"expected host:port or :port, got {raw!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"not a valid IPv6 address in {raw!r}") from None
    elif ":" in host:
        raise ValueError(f"an IPv6 host must be in brackets, got {raw!r}")
    elif host:
        _check_host(host, raw)
    if not (port_text.isascii() and port_text.isdigit()):
        raise ValueError(f"port must be a number, got {port_text!r}")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be between 0 and 65535, got {port}")
    return ListenAddress(host, port)


def _check_host(host: str, raw: str) -> None:
    """Refuse what could never be bound, at start rather than when binding."""
    labels = host.split(".")
    # A name whose last label is a number is an IPv4 address, as URL parsers read it.
    if labels[-1].isascii() and labels[-1].isdigit():
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(f"not a valid IPv4 address in {raw!r}") from None
    elif len(host) > 253 or not all(_HOST_LABEL.match(label) for label in labels):
        raise ValueError(f"not a valid host name in {raw!r}")


@dataclass(frozen=True, slots=True)
class LiteralPath:
    """Parses a literal URL path; :meth:`validate` holds typed values to the same.

    The router is given the path as it is, never as a pattern, so ``{`` and ``}`` are
    refused rather than read as a variable. ``%`` is refused too: requests are routed by
    their decoded path, which a percent escape could never equal.
    """

    def __call__(self, raw: str) -> str:
        return self.validate(raw.strip())

    def validate(self, value: Any) -> str:
        if (
            not isinstance(value, str)
            or not value.startswith("/")
            or not value.isprintable()
            or any(ch.isspace() or ch in "?#%{}" for ch in value)
        ):
            raise ValueError(
                "expected a literal URL path such as /metrics (no spaces, ?, #, % or { }), "
                f"got {value!r}"
            )
        return value


def parse_schema(raw: str) -> str:
    if not _IDENTIFIER.match(raw):
        raise ValueError(
            "expected a lowercase PostgreSQL identifier (letters, digits, underscore; "
            f"at most 63 characters), got {raw!r}"
        )
    return raw


def parse_connection_string(raw: str) -> str:
    value = raw.strip()
    if not value:
        raise ValueError("is empty")
    if "://" in value and not value.startswith(("postgresql://", "postgres://")):
        raise ValueError("a URL must start with postgresql:// or postgres://")
    try:
        params = conninfo_to_dict(value)
    except Exception:
        # The driver's message may quote the string, password included.
        raise ValueError("is not a valid PostgreSQL URL or key=value connection string") from None
    register_secret(str(params.get("password") or ""))
    # libpq only checks the port when connecting; several hosts mean several ports.
    for port in str(params.get("port") or "").split(","):
        if port and not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
            raise ValueError(f"port must be a number between 1 and 65535, got {port!r}")
    return value


def parse_prepare_threshold(raw: str) -> int | None:
    if raw.strip().lower() in {"none", "off", "disabled"}:
        return None
    return integer_in(0, 1_000_000)(raw)


def parse_data_dir(raw: str) -> Path:
    if not raw.strip():
        raise ValueError("is empty")
    path = Path(raw).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path} exists and is not a directory")
    # exists() is False under a regular file too; such a directory can never be created.
    existing = next((p for p in path.absolute().parents if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ValueError(f"{existing} is not a directory")
    return path.absolute()


def parse_collectors(raw: str) -> tuple[str, ...]:
    names = [name.strip() for name in raw.split(",") if name.strip()]
    unknown = sorted(set(names) - set(COLLECTORS))
    if unknown:
        raise ValueError(
            f"unknown collector {', '.join(unknown)!s}; known: {', '.join(COLLECTORS)}"
        )
    return tuple(name for name in COLLECTORS if name in names)


def parse_web_config_file(raw: str) -> WebConfig | None:
    if not raw.strip():
        return None
    return load_web_config(raw.strip())


def parse_application_name(raw: str) -> str:
    # PostgreSQL truncates application_name at 63 bytes and drops non-ASCII.
    if not raw or len(raw) > 63 or not raw.isascii() or not raw.isprintable():
        raise ValueError(f"expected 1 to 63 printable ASCII characters, got {raw!r}")
    return raw


SPECS: tuple[Spec, ...] = (
    Spec(
        "use_postgres_saver",
        "USE_POSTGRES_SAVER",
        "--use-postgres-saver",
        parse_bool,
        "true",
        "Feature flag: persist checkpoints in PostgreSQL (`false` selects the in-memory saver).",
    ),
    Spec(
        "postgres_connection_string",
        "POSTGRES_CONNECTION_STRING",
        None,
        parse_connection_string,
        "(embedded)",
        "PostgreSQL URL or conninfo. Unset: the exporter starts its own PostgreSQL. "
        "Environment only, so the password never shows in the process list.",
    ),
    Spec(
        "postgres_schema",
        "POSTGRES_SCHEMA",
        "--postgres.schema",
        parse_schema,
        DEFAULT_SCHEMA,
        "Schema holding the checkpoint tables.",
    ),
    Spec(
        "listen_address",
        f"{PREFIX}WEB_LISTEN_ADDRESS",
        "--web.listen-address",
        parse_listen_address,
        f":{DEFAULT_PORT}",
        "Address the HTTP server listens on.",
    ),
    Spec(
        "telemetry_path",
        f"{PREFIX}WEB_TELEMETRY_PATH",
        "--web.telemetry-path",
        LiteralPath(),
        "/metrics",
        "Path under which metrics are served, matched as written: `{`, `}`, `%`, `?`, `#` "
        "and spaces are refused.",
    ),
    Spec(
        "web_read_header_timeout",
        f"{PREFIX}WEB_READ_HEADER_TIMEOUT",
        "--web.read-header-timeout",
        duration_in(0.1, 3600),
        "10s",
        "How long a request's headers may take to arrive, from the connection's opening or the "
        "request's first byte; a connection that sends nothing, or its headers a byte at a "
        "time, is closed after it (Go's ReadHeaderTimeout).",
    ),
    Spec(
        "web_idle_timeout",
        f"{PREFIX}WEB_IDLE_TIMEOUT",
        "--web.idle-timeout",
        duration_in(0, 3600),
        "2m",
        "How long a kept-alive connection may wait for its next request (Go's IdleTimeout). "
        "Keep it above the scrape interval, so that Prometheus reuses its connection; 0 closes "
        "it after each answer.",
    ),
    Spec(
        "web_max_connections",
        f"{PREFIX}WEB_MAX_CONNECTIONS",
        "--web.max-connections",
        integer_in(1, 65_535),
        "256",
        "Most connections open at once, lowered at start (with a warning) to leave a quarter of "
        "the file descriptor limit, at least 32, for the rest. At the cap a new connection "
        "closes the longest-open idle one, or is closed itself when every one has a request in "
        "hand.",
    ),
    Spec(
        "log_level",
        f"{PREFIX}LOG_LEVEL",
        "--log.level",
        _choice("debug", "info", "warn", "warning", "error"),
        "info",
        "Lowest log level emitted.",
    ),
    Spec(
        "log_format",
        f"{PREFIX}LOG_FORMAT",
        "--log.format",
        _choice("auto", "json", "console"),
        "auto",
        "`json` (one event per line), `console`, or `auto`: JSON unless on a terminal.",
    ),
    Spec(
        "data_dir",
        f"{PREFIX}DATA_DIR",
        "--embedded.data-dir",
        parse_data_dir,
        "~/.local/share/checkpoint-exporter/pgdata",
        "Data directory of the embedded PostgreSQL (kept across restarts).",
    ),
    Spec(
        "pool_min_size",
        f"{PREFIX}POOL_MIN_SIZE",
        "--pool.min-size",
        integer_in(0, 1000),
        "1",
        "Connections the checkpointer pool keeps open.",
    ),
    Spec(
        "pool_max_size",
        f"{PREFIX}POOL_MAX_SIZE",
        "--pool.max-size",
        integer_in(1, 1000),
        "10",
        "Most connections the checkpointer pool opens.",
    ),
    Spec(
        "pool_timeout",
        f"{PREFIX}POOL_TIMEOUT",
        "--pool.timeout",
        duration_in(0.1, 3600),
        "30s",
        "How long a checkpointer operation waits for a pooled connection.",
    ),
    Spec(
        "prepare_threshold",
        f"{PREFIX}PREPARE_THRESHOLD",
        "--pool.prepare-threshold",
        parse_prepare_threshold,
        "0",
        "psycopg prepare_threshold for the checkpointer's and the exporter's connections "
        "(0: prepare on first use, so scrapes skip planning); `none` for PgBouncer in "
        "transaction mode.",
    ),
    Spec(
        "application_name",
        f"{PREFIX}APPLICATION_NAME",
        "--pool.application-name",
        parse_application_name,
        "langgraph-checkpointer",
        "application_name of checkpointer connections, as seen in pg_stat_activity.",
    ),
    Spec(
        "fallback_to_memory",
        f"{PREFIX}FALLBACK_TO_MEMORY",
        "--fallback-to-memory",
        parse_bool,
        "false",
        "If PostgreSQL is unreachable at start, use the in-memory saver instead of failing "
        "(health reports `degraded`).",
    ),
    Spec(
        "connect_timeout",
        f"{PREFIX}CONNECT_TIMEOUT",
        "--postgres.connect-timeout",
        duration_in(0.1, 600),
        "5s",
        "Timeout for opening a database connection.",
    ),
    Spec(
        "collector_timeout",
        f"{PREFIX}COLLECTOR_TIMEOUT",
        "--collector.timeout",
        duration_in(0.05, 600),
        "5s",
        "Deadline of each collector in a scrape. The exporter's lock_timeout (half of it) and "
        "statement_timeout (80 %) end server-side work before it, so a failure says which fired.",
    ),
    Spec(
        "health_timeout",
        f"{PREFIX}HEALTH_TIMEOUT",
        "--health.timeout",
        duration_in(0.05, 10),
        "750ms",
        "Deadline of the database check behind the health endpoint and `/readyz`, on a "
        "connection of its own: they answer 503 by then, under the 1 s of a Kubernetes probe.",
    ),
    Spec(
        "exporter_pool_size",
        f"{PREFIX}EXPORTER_POOL_SIZE",
        "--exporter.pool-size",
        integer_in(1, 20),
        "5",
        "Connections the exporter itself may use for its queries: one per database-wide "
        "collector lets a scrape run them all at once. Opened on demand; one stays open.",
    ),
    Spec(
        "collectors",
        f"{PREFIX}COLLECTORS",
        "--collectors",
        parse_collectors,
        ",".join(COLLECTORS),
        "Collectors to run, comma-separated (empty: none); unknown names are an error.",
    ),
    Spec(
        "leader_election",
        f"{PREFIX}LEADER_ELECTION",
        "--collector.leader-election",
        parse_bool,
        "true",
        "Run database-wide collectors on one sidecar per database at a time, chosen through "
        "a PostgreSQL advisory lock; `false`: every sidecar collects.",
    ),
    Spec(
        "tables_interval",
        f"{PREFIX}TABLES_INTERVAL",
        "--collector.tables.interval",
        duration_in(1, 86_400),
        "60s",
        "Least time between two samplings of checkpoint sizes and ages (cached in between).",
    ),
    Spec(
        "migrations_expected",
        f"{PREFIX}MIGRATIONS_EXPECTED",
        "--migrations.expected",
        UnknownOrInteger(0, 10_000),
        "(unknown)",
        "Migration level the applications writing the schema expect (`len(MIGRATIONS) - 1` "
        "of their saver: 9 for langgraph-checkpoint-postgres 3.x, 4 for the JavaScript "
        "saver); `migrations_behind` is 1 only below it. Unset: the in-process "
        "application's saver says, and a standalone sidecar raises no alarm.",
    ),
    Spec(
        "tracking",
        f"{PREFIX}TRACKING",
        "--tracking.enabled",
        parse_bool,
        "true",
        "Keep `workflow_metadata` current from the instrumented saver (PostgreSQL only): "
        "status, activity, checkpoint count, last error.",
    ),
    Spec(
        "tracking_flush_interval",
        f"{PREFIX}TRACKING_FLUSH_INTERVAL",
        "--tracking.flush-interval",
        duration_in(0.01, 60),
        "1s",
        "How long workflow tracking batches its updates before writing them, off the "
        "checkpoint path.",
    ),
    Spec(
        "stuck_after",
        f"{PREFIX}STUCK_AFTER",
        "--workflows.stuck-after",
        duration_in(1, 30 * 86_400),
        "15m",
        "A running workflow with no checkpoint for this long counts as stuck.",
    ),
    Spec(
        "prune_threshold",
        f"{PREFIX}PRUNE_THRESHOLD",
        "--workflows.prune-threshold",
        integer_in(1, 1_000_000_000),
        "1000",
        "Checkpoints per thread above which the thread counts as a prune candidate.",
    ),
    Spec(
        "canary_interval",
        f"{PREFIX}CANARY_INTERVAL",
        "--canary.interval",
        duration_in(0, 86_400),
        "30s",
        "Time between two canary probes (save, load, compare on a reserved thread); "
        "0 turns the probe off.",
    ),
    Spec(
        "canary_timeout",
        f"{PREFIX}CANARY_TIMEOUT",
        "--canary.timeout",
        duration_in(0.05, 600),
        "5s",
        "Deadline of one canary probe.",
    ),
    Spec(
        "recovery_limit",
        f"{PREFIX}RECOVERY_LIMIT",
        "--recovery.limit",
        integer_in(1, 1_000_000),
        "100",
        "Running and interrupted workflows (newest first) whose latest checkpoint the recovery "
        "check loads per run.",
    ),
    Spec(
        "integrity_batch",
        f"{PREFIX}INTEGRITY_BATCH",
        "--integrity.batch",
        integer_in(1, 1_000_000),
        "200",
        "Threads one integrity step examines; each step resumes where the last stopped "
        "until the whole store is covered.",
    ),
    Spec(
        "integrity_interval",
        f"{PREFIX}INTEGRITY_INTERVAL",
        "--integrity.interval",
        duration_in(0, 86_400),
        "10s",
        "Least time from the start of one integrity step to the next (a scrape starts at most "
        "one); bounds what the checks cost however often Prometheus scrapes.",
    ),
    Spec(
        "integrity_orphan_grace",
        f"{PREFIX}INTEGRITY_ORPHAN_GRACE",
        "--integrity.orphan-grace",
        duration_in(0, 86_400),
        "60s",
        "How old a checkpoint id must be before writes without that checkpoint count as "
        "orphans: under load a step's writes can be saved seconds before its checkpoint.",
    ),
    Spec(
        "web_config_file",
        f"{PREFIX}WEB_CONFIG_FILE",
        "--web.config.file",
        parse_web_config_file,
        "(none)",
        "Web configuration file in the format of Prometheus' exporter-toolkit: TLS and basic "
        "auth for every endpoint. Read and checked at start. Unset: plain HTTP, no auth.",
    ),
    Spec(
        "web_healthz_open",
        f"{PREFIX}WEB_HEALTHZ_OPEN",
        "--web.healthz-open",
        parse_bool,
        "true",
        "Answer `/healthz` without credentials when the web configuration file has users, "
        "so orchestrators' liveness probes, which cannot send a password, keep working.",
    ),
)
