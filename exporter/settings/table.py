"""The settings table: the Settings class, one field per setting with everything about it.

Each field holds its type, its parser, its default, its variable, its flag and its help, once.
Loading, the checks on settings built in code, ``--help`` and the README's configuration table
are all read from these fields through :data:`SPECS`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exporter.settings.parsers import (
    Boolean,
    Choice,
    DurationIn,
    IntegerIn,
    IntegerOrNone,
    NumberIn,
)
from exporter.settings.spec import Computed, SettingsError, Spec, read, setting, specs
from exporter.settings.values import (
    COLLECTORS,
    ApplicationName,
    Collectors,
    ConnectionString,
    DataDir,
    ListenAddress,
    ListenAddressParser,
    LiteralPath,
    OptionalKey,
    Patterns,
    Schema,
    WebConfigFile,
    default_data_dir,
    register_environment_secrets,
)
from exporter.web_config import WebConfig

PREFIX = "CHECKPOINT_EXPORTER_"
DEFAULT_SCHEMA = "workflow_checkpoints"
DEFAULT_PORT = 9877
RESERVED_PATHS = frozenset({"/", "/healthz", "/readyz", "/api/health/checkpointer"})


@dataclass(frozen=True, slots=True)
class Settings:
    """Validated, immutable configuration shared by the library, sidecar and CLI.

    Built from text by :meth:`load`, or in code with keywords; either way every value is held
    to the same rules, and a bad one raises SettingsError naming its variable.
    """

    use_postgres_saver: bool = setting(
        Boolean(),
        True,
        env="USE_POSTGRES_SAVER",
        flag="--use-postgres-saver",
        help="Feature flag: persist checkpoints in PostgreSQL (`false` selects the in-memory "
        "saver).",
    )
    postgres_connection_string: str | None = setting(
        ConnectionString(),
        None,
        env="POSTGRES_CONNECTION_STRING",
        flag=None,
        help="PostgreSQL URL or conninfo. Unset: the exporter starts its own PostgreSQL. "
        "Environment only, so the password never shows in the process list.",
        shown="(embedded)",
        repr=False,
    )
    postgres_schema: str = setting(
        Schema(),
        DEFAULT_SCHEMA,
        env="POSTGRES_SCHEMA",
        flag="--postgres.schema",
        help="Schema holding the checkpoint tables.",
    )
    listen_address: ListenAddress = setting(
        ListenAddressParser(),
        ListenAddress("", DEFAULT_PORT),
        env=f"{PREFIX}WEB_LISTEN_ADDRESS",
        flag="--web.listen-address",
        help="Address the HTTP server listens on.",
    )
    telemetry_path: str = setting(
        LiteralPath(),
        "/metrics",
        env=f"{PREFIX}WEB_TELEMETRY_PATH",
        flag="--web.telemetry-path",
        help="Path under which metrics are served, matched as written: `{`, `}`, `%`, `?`, `#` "
        "and spaces are refused.",
    )
    web_read_header_timeout: float = setting(
        DurationIn(0.1, 3600),
        10.0,
        env=f"{PREFIX}WEB_READ_HEADER_TIMEOUT",
        flag="--web.read-header-timeout",
        help="How long a request's headers may take to arrive, from the connection's opening or "
        "the request's first byte; a connection that sends nothing, or its headers a byte at a "
        "time, is closed after it (Go's ReadHeaderTimeout).",
    )
    web_idle_timeout: float = setting(
        DurationIn(0, 3600),
        120.0,
        env=f"{PREFIX}WEB_IDLE_TIMEOUT",
        flag="--web.idle-timeout",
        help="How long a kept-alive connection may wait for its next request (Go's "
        "IdleTimeout). Keep it above the scrape interval, so that Prometheus reuses its "
        "connection; 0 closes it after each answer.",
    )
    web_max_connections: int = setting(
        IntegerIn(1, 65_535),
        256,
        env=f"{PREFIX}WEB_MAX_CONNECTIONS",
        flag="--web.max-connections",
        help="Most connections open at once, lowered at start (with a warning) to leave a "
        "quarter of the file descriptor limit, at least 32, for the rest. At the cap a new "
        "connection closes the longest-open idle one, or is closed itself when every one has a "
        "request in hand.",
    )
    log_level: str = setting(
        Choice(("debug", "info", "warn", "warning", "error"), aliases=(("warn", "warning"),)),
        "info",
        env=f"{PREFIX}LOG_LEVEL",
        flag="--log.level",
        help="Lowest log level emitted.",
    )
    log_format: str = setting(
        Choice(("auto", "json", "console")),
        "auto",
        env=f"{PREFIX}LOG_FORMAT",
        flag="--log.format",
        help="`json` (one event per line), `console`, or `auto`: JSON unless on a terminal.",
    )
    data_dir: Path = setting(
        DataDir(),
        Computed(default_data_dir),
        env=f"{PREFIX}DATA_DIR",
        flag="--embedded.data-dir",
        help="Data directory of the embedded PostgreSQL (kept across restarts).",
        shown="~/.local/share/checkpoint-exporter/pgdata",
    )
    pool_min_size: int = setting(
        IntegerIn(0, 1000),
        1,
        env=f"{PREFIX}POOL_MIN_SIZE",
        flag="--pool.min-size",
        help="Connections the checkpointer pool keeps open.",
    )
    pool_max_size: int = setting(
        IntegerIn(1, 1000),
        10,
        env=f"{PREFIX}POOL_MAX_SIZE",
        flag="--pool.max-size",
        help="Most connections the checkpointer pool opens.",
    )
    pool_timeout: float = setting(
        DurationIn(0.1, 3600),
        30.0,
        env=f"{PREFIX}POOL_TIMEOUT",
        flag="--pool.timeout",
        help="How long a checkpointer operation waits for a pooled connection.",
    )
    prepare_threshold: int | None = setting(
        IntegerOrNone(0, 1_000_000, none=("none", "off", "disabled")),
        0,
        env=f"{PREFIX}PREPARE_THRESHOLD",
        flag="--pool.prepare-threshold",
        help="psycopg prepare_threshold for the checkpointer's and the exporter's connections "
        "(0: prepare on first use, so scrapes skip planning); `none` for PgBouncer in "
        "transaction mode.",
    )
    application_name: str = setting(
        ApplicationName(),
        "langgraph-checkpointer",
        env=f"{PREFIX}APPLICATION_NAME",
        flag="--pool.application-name",
        help="application_name of checkpointer connections, as seen in pg_stat_activity.",
    )
    rollout_percent: float = setting(
        NumberIn(0, 100),
        100.0,
        env=f"{PREFIX}ROLLOUT_PERCENT",
        flag="--rollout.percent",
        help="Share of new threads saved in PostgreSQL, the rest in memory (with "
        "USE_POSTGRES_SAVER=true). A thread stays where its checkpoints are, whatever the "
        "percent later says.",
    )
    rollout_include: tuple[str, ...] = setting(
        Patterns(),
        (),
        env=f"{PREFIX}ROLLOUT_INCLUDE",
        flag="--rollout.include",
        help="Thread ids (comma-separated shell patterns, e.g. `internal-*`) always saved in "
        "PostgreSQL, whatever the percent.",
        shown="(none)",
    )
    rollout_include_key: str | None = setting(
        OptionalKey(),
        None,
        env=f"{PREFIX}ROLLOUT_INCLUDE_KEY",
        flag="--rollout.include-key",
        help="A key of the run's configurable or metadata whose true value saves the thread in "
        "PostgreSQL, whatever the percent.",
        shown="(none)",
    )
    saver_shards: int | None = setting(
        IntegerOrNone(1, 64, ("auto",)),
        None,
        env=f"{PREFIX}SAVER_SHARDS",
        flag="--saver.shards",
        help="AsyncPostgresSaver instances over the one pool, each thread always on the same "
        "one: each holds its own lock, so workflows on different shards do not queue for one. "
        "`auto` is half the pool, from 1 to 4 (4 with the default pool); 1 is one saver.",
    )
    fallback_to_memory: bool = setting(
        Boolean(),
        False,
        env=f"{PREFIX}FALLBACK_TO_MEMORY",
        flag="--fallback-to-memory",
        help="If PostgreSQL is unreachable at start, use the in-memory saver instead of failing "
        "(health reports `degraded`).",
    )
    connect_timeout: float = setting(
        DurationIn(0.1, 600),
        5.0,
        env=f"{PREFIX}CONNECT_TIMEOUT",
        flag="--postgres.connect-timeout",
        help="Timeout for opening a database connection.",
    )
    collector_timeout: float = setting(
        DurationIn(0.05, 600),
        5.0,
        env=f"{PREFIX}COLLECTOR_TIMEOUT",
        flag="--collector.timeout",
        help="Deadline of each collector in a scrape. The exporter's lock_timeout (half of it) "
        "and statement_timeout (80 %) end server-side work before it, so a failure says which "
        "fired.",
    )
    health_timeout: float = setting(
        DurationIn(0.05, 10),
        0.75,
        env=f"{PREFIX}HEALTH_TIMEOUT",
        flag="--health.timeout",
        help="Deadline of the database check behind the health endpoint and `/readyz`, on a "
        "connection of its own: they answer 503 by then, under the 1 s of a Kubernetes probe.",
    )
    exporter_pool_size: int = setting(
        IntegerIn(1, 20),
        5,
        env=f"{PREFIX}EXPORTER_POOL_SIZE",
        flag="--exporter.pool-size",
        help="Connections the exporter itself may use for its queries: one per database-wide "
        "collector lets a scrape run them all at once. Opened on demand; one stays open.",
    )
    collectors: tuple[str, ...] = setting(
        Collectors(),
        COLLECTORS,
        env=f"{PREFIX}COLLECTORS",
        flag="--collectors",
        help="Collectors to run, comma-separated (empty: none); unknown names are an error.",
    )
    leader_election: bool = setting(
        Boolean(),
        True,
        env=f"{PREFIX}LEADER_ELECTION",
        flag="--collector.leader-election",
        help="Run database-wide collectors on one sidecar per database at a time, chosen "
        "through a PostgreSQL advisory lock; `false`: every sidecar collects.",
    )
    tables_interval: float = setting(
        DurationIn(1, 86_400),
        60.0,
        env=f"{PREFIX}TABLES_INTERVAL",
        flag="--collector.tables.interval",
        help="Least time between two samplings of checkpoint sizes and ages (cached in between).",
    )
    migrations_expected: int | None = setting(
        IntegerOrNone(0, 10_000, none=("unknown", "")),
        None,
        env=f"{PREFIX}MIGRATIONS_EXPECTED",
        flag="--migrations.expected",
        help="Migration level the applications writing the schema expect (`len(MIGRATIONS) - "
        "1` of their saver: 9 for langgraph-checkpoint-postgres 3.x, 4 for the JavaScript "
        "saver); `migrations_behind` is 1 only below it. Unset: the in-process application's "
        "saver says, and a standalone sidecar raises no alarm.",
        shown="(unknown)",
    )
    tracking: bool = setting(
        Boolean(),
        True,
        env=f"{PREFIX}TRACKING",
        flag="--tracking.enabled",
        help="Keep `workflow_metadata` current from the instrumented saver (PostgreSQL only): "
        "status, activity, checkpoint count, last error.",
    )
    tracking_flush_interval: float = setting(
        DurationIn(0.01, 60),
        1.0,
        env=f"{PREFIX}TRACKING_FLUSH_INTERVAL",
        flag="--tracking.flush-interval",
        help="How long workflow tracking batches its updates before writing them, off the "
        "checkpoint path.",
    )
    stuck_after: float = setting(
        DurationIn(1, 30 * 86_400),
        900.0,
        env=f"{PREFIX}STUCK_AFTER",
        flag="--workflows.stuck-after",
        help="A running workflow with no checkpoint for this long counts as stuck.",
    )
    prune_threshold: int = setting(
        IntegerIn(1, 1_000_000_000),
        1000,
        env=f"{PREFIX}PRUNE_THRESHOLD",
        flag="--workflows.prune-threshold",
        help="Checkpoints per thread above which the thread counts as a prune candidate.",
    )
    canary_interval: float = setting(
        DurationIn(0, 86_400),
        30.0,
        env=f"{PREFIX}CANARY_INTERVAL",
        flag="--canary.interval",
        help="Time between two canary probes (save, load, compare on a reserved thread); "
        "0 turns the probe off.",
    )
    canary_timeout: float = setting(
        DurationIn(0.05, 600),
        5.0,
        env=f"{PREFIX}CANARY_TIMEOUT",
        flag="--canary.timeout",
        help="Deadline of one canary probe.",
    )
    recovery_limit: int = setting(
        IntegerIn(1, 1_000_000),
        100,
        env=f"{PREFIX}RECOVERY_LIMIT",
        flag="--recovery.limit",
        help="Running and interrupted workflows (newest first) whose latest checkpoint the "
        "recovery check loads per run.",
    )
    integrity_batch: int = setting(
        IntegerIn(1, 1_000_000),
        200,
        env=f"{PREFIX}INTEGRITY_BATCH",
        flag="--integrity.batch",
        help="Threads one integrity step examines; each step resumes where the last stopped "
        "until the whole store is covered.",
    )
    integrity_orphan_grace: float = setting(
        DurationIn(0, 86_400),
        60.0,
        env=f"{PREFIX}INTEGRITY_ORPHAN_GRACE",
        flag="--integrity.orphan-grace",
        help="How old a checkpoint id must be before writes without that checkpoint count as "
        "orphans: under load a step's writes can be saved seconds before its checkpoint.",
    )
    integrity_interval: float = setting(
        DurationIn(0, 86_400),
        10.0,
        env=f"{PREFIX}INTEGRITY_INTERVAL",
        flag="--integrity.interval",
        help="Least time from the start of one integrity step to the next (a scrape starts at "
        "most one); bounds what the checks cost however often Prometheus scrapes.",
    )
    web_config_file: WebConfig | None = setting(
        WebConfigFile(),
        None,
        env=f"{PREFIX}WEB_CONFIG_FILE",
        flag="--web.config.file",
        help="Web configuration file in the format of Prometheus' exporter-toolkit: TLS and "
        "basic auth for every endpoint. Read and checked at start. Unset: plain HTTP, no auth.",
        shown="(none)",
    )
    web_healthz_open: bool = setting(
        Boolean(),
        True,
        env=f"{PREFIX}WEB_HEALTHZ_OPEN",
        flag="--web.healthz-open",
        help="Answer `/healthz` without credentials when the web configuration file has users, "
        "so orchestrators' liveness probes, which cannot send a password, keep working.",
    )

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
        register_environment_secrets(environ)
        return cls(**read(SPECS, environ, flags or {}))

    def __post_init__(self) -> None:
        """Hold settings built in code to the rules that env and flags are held to."""
        for spec in SPECS:
            spec.check(getattr(self, spec.field))
        self.check()

    def check(self) -> None:
        """Reject combinations no single value can catch."""
        if self.pool_min_size > self.pool_max_size:
            raise SettingsError(
                f"{spec_for('pool_min_size').describe()}: must not exceed "
                f"{spec_for('pool_max_size').env} ({self.pool_max_size}), got {self.pool_min_size}"
            )
        if self.saver_shards is not None and self.saver_shards > self.pool_max_size:
            raise SettingsError(
                f"{spec_for('saver_shards').describe()}: must not exceed "
                f"{spec_for('pool_max_size').env} ({self.pool_max_size}), got {self.saver_shards}"
            )
        if self.telemetry_path in RESERVED_PATHS:
            raise SettingsError(
                f"{spec_for('telemetry_path').describe()}: {self.telemetry_path} is already served"
            )

    def replace(self, **changes: Any) -> Settings:
        """Return a copy with ``changes`` applied and checked."""
        return dataclasses.replace(self, **changes)

    @property
    def shards(self) -> int:
        """The saver shards to build: as set, or half the pool from 1 to 4.

        Each shard holds one connection while it works; half the pool leaves the other half
        to the rollout's thread lookup and the application. Past 4 shards a process's one core
        is the limit, and each further shard only holds its connection longer
        (bench/RESULTS.md, "Saver shards").
        """
        if self.saver_shards is not None:
            return self.saver_shards
        return max(1, min(4, self.pool_max_size // 2))

    @property
    def embedded(self) -> bool:
        """Whether the exporter must start its own PostgreSQL (no connection string given)."""
        return self.use_postgres_saver and self.postgres_connection_string is None


# Every setting, in the order of the fields: the rows --help and the README list.
SPECS: tuple[Spec, ...] = specs(Settings)
_BY_FIELD = {spec.field: spec for spec in SPECS}


def spec_for(field: str) -> Spec:
    """The row of the setting held in ``field``."""
    return _BY_FIELD[field]
