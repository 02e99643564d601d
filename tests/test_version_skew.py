"""No false alarms beside savers at a lower migration level: older Python releases, the JS saver.

Each schema is built by replaying the migrations recorded from the released
package (tests/schemas/savers/, made by record.py), exactly as that release's
``setup()`` runs them, and filled through that release's own write statements
in the layout its saver writes. The sidecar then runs every collector that
reads the checkpoint tables against it: nothing may fail, page or warn.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
from langgraph.checkpoint.base.id import uuid6
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.postgres.base import BasePostgresSaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from prometheus_client import CollectorRegistry
from psycopg import sql
from psycopg.types.json import Jsonb
from structlog.testing import capture_logs

from exporter import Sidecar
from exporter.collectors.canary import CanaryCollector
from exporter.collectors.integrity import IntegrityCollector
from exporter.collectors.migrations import LIBRARY_VERSION, MigrationsCollector
from exporter.collectors.recovery import RecoveryCollector
from exporter.collectors.tables import TablesCollector
from exporter.database import checkpointer_connect_kwargs
from exporter.settings import Settings
from exporter.workflows import schema as workflow_schema
from exporter.workflows.canary import SUCCESS
from exporter.workflows.saver_schema import SAVER_COLUMNS, read_saver_schema
from tests.samples import Samples, parse_metrics, samples_of, scrape_context, value
from tests.targets import recovery_check
from tests.waiting import eventually

RECORDED = Path(__file__).resolve().parent / "schemas" / "savers"
SUCCESS_GAUGE = "langgraph_checkpointer_scrape_collector_success"
THREADS = ("app-thread-1", "app-thread-2")
TURNS = 5  # canary turns a test lets pass on an unsupported schema


def recorded(name: str) -> dict[str, Any]:
    """One release's recorded migrations and write statements."""
    data: dict[str, Any] = json.loads((RECORDED / f"{name}.json").read_text())
    return data


def current_minus_task_path() -> dict[str, Any]:
    """The installed saver's migrations but the last (task_path), with 2.0.8's write statements."""
    older = recorded("python-2.0.8")
    migrations = list(BasePostgresSaver.MIGRATIONS)
    assert "task_path" in migrations[-1]
    return {
        **older,
        "version": f"{LIBRARY_VERSION} minus task_path",
        "source": "the installed langgraph-checkpoint-postgres, MIGRATIONS[:-1]",
        "migrations": migrations[:-1],
    }


@dataclass(frozen=True)
class Writer:
    """A saver release: its recorded SQL, its migration level and its checkpoint layout."""

    name: str
    record: dict[str, Any]
    layout: str  # "python2": all values in blobs; "js": JSON blobs, int versions; "current"

    @property
    def level(self) -> int:
        return len(self.record["migrations"]) - 1

    def statement(self, name: str, schema: str) -> str:
        """A recorded statement in psycopg's placeholders, with the schema it names."""
        text: str = self.record["statements"][name]
        return self._adapt(text, schema)

    def _adapt(self, text: str, schema: str) -> str:
        if self.record.get("schema_qualified"):
            quoted = sql.Identifier(schema).as_string(None)
            text = text.replace(f'"{self.record["schema_placeholder"]}"', quoted)
        if self.record["placeholder"] == "$n":
            text = re.sub(r"\$\d+", "%s", text)
        return text

    def setup(self, dsn: str, schema: str) -> None:
        """Run the recorded migrations as the release's setup() does: each, then its row."""
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            if not self.record.get("schema_qualified"):
                conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
            for v, migration in enumerate(self.record["migrations"]):
                if migration.strip():
                    conn.execute(self._adapt(migration, schema))
                record = self._adapt(self.record["record_migration"], schema)
                if "{v}" in record:
                    conn.execute(record.replace("{v}", str(v)))
                else:
                    conn.execute(record, (v,))


WRITERS = (
    Writer("python-2.0.0", recorded("python-2.0.0"), "python2"),
    Writer("python-2.0.8", recorded("python-2.0.8"), "python2"),
    Writer("js-1.0.5", recorded("js-1.0.5"), "js"),
    Writer("current-minus-task-path", current_minus_task_path(), "current"),
)


def _python_version(step: int) -> str:
    return f"{step:032}.{random.random():016}"


async def fill(writer: Writer, dsn: str, settings: Settings) -> None:
    """Two threads of two checkpoints each, with blobs and pending writes, as ``writer`` writes
    them; both threads tracked as running in workflow_metadata, for the recovery check."""
    schema = settings.postgres_schema
    if writer.layout == "current":
        await _fill_current(writer, dsn, settings)
    else:
        # The application's pool has the schema on its search_path, as exporter pools do.
        with psycopg.connect(dsn, autocommit=True, options=f"-c search_path={schema}") as conn:
            for thread_id in THREADS:
                _fill_recorded(writer, conn, schema, thread_id)
    async with await psycopg.AsyncConnection.connect(
        dsn, **checkpointer_connect_kwargs(dsn, settings)
    ) as conn:
        await workflow_schema.migrate(conn, schema)
        table = sql.Identifier(schema, workflow_schema.TABLE)
        for thread_id in THREADS:
            await conn.execute(
                sql.SQL(
                    "INSERT INTO {} (thread_id, status, first_activity, last_activity)"
                    " VALUES (%s, 'running', now(), now())"
                ).format(table),
                (thread_id,),
            )


def _fill_recorded(writer: Writer, conn: psycopg.Connection[Any], schema: str, thread: str) -> None:
    """What a 2.0.x Python saver or the JS saver stores for two steps of one thread."""
    js = writer.layout == "js"
    serde = JsonPlusSerializer()

    def dump(value: Any) -> tuple[str, bytes]:
        if js:
            return "json", json.dumps(value).encode()
        return serde.dumps_typed(value)

    blobs_sql = writer.statement("UPSERT_CHECKPOINT_BLOBS_SQL", schema)
    checkpoints_sql = writer.statement("UPSERT_CHECKPOINTS_SQL", schema)
    writes_sql = writer.statement("INSERT_CHECKPOINT_WRITES_SQL", schema)
    versions: dict[str, Any] = {}
    parent: str | None = None
    for step in (1, 2):
        values = {"messages": [f"hello {step}"] * step, "count": step}
        new = {name: step if js else _python_version(step) for name in values}
        if step == 2:
            new.pop("count")  # unchanged in the second step: no new version, no new blob
        versions.update(new)
        for channel, version in new.items():
            conn.execute(blobs_sql, (thread, "", channel, str(version), *dump(values[channel])))
        checkpoint_id = str(uuid6(clock_seq=-1))
        checkpoint: dict[str, Any] = {
            "v": 4 if js else 1,
            "id": checkpoint_id,
            "ts": "2025-01-01T00:00:00+00:00",
            "channel_versions": dict(versions),
            "versions_seen": {"agent": dict(versions)},
        }
        if not js:
            checkpoint["pending_sends"] = []
        metadata: dict[str, Any] = {"source": "loop", "step": step, "parents": {}}
        conn.execute(
            checkpoints_sql,
            (thread, "", checkpoint_id, parent, Jsonb(checkpoint), Jsonb(metadata)),
        )
        for idx, (channel, item) in enumerate([("messages", f"reply {step}"), ("count", step)]):
            conn.execute(
                writes_sql, (thread, "", checkpoint_id, "task-1", idx, channel, *dump(item))
            )
        parent = checkpoint_id


async def _fill_current(writer: Writer, dsn: str, settings: Settings) -> None:
    """The installed saver's own put (which names no task_path), and 2.0.8's write insert."""
    schema = settings.postgres_schema
    kwargs = checkpointer_connect_kwargs(dsn, settings)
    async with await psycopg.AsyncConnection.connect(dsn, **kwargs) as conn:
        saver = AsyncPostgresSaver(conn=conn)
        writes_sql = writer.statement("INSERT_CHECKPOINT_WRITES_SQL", schema)
        for thread in THREADS:
            config: Any = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
            versions: dict[str, Any] = {}
            for step in (1, 2):
                values = {"messages": [f"hello {step}"] * step, "count": step}
                new: dict[str, str | int | float] = {name: _python_version(step) for name in values}
                versions.update(new)
                checkpoint: Any = {
                    "v": 4,
                    "id": str(uuid6(clock_seq=-1)),
                    "ts": "2025-01-01T00:00:00+00:00",
                    "channel_values": values,
                    "channel_versions": dict(versions),
                    "versions_seen": {"agent": dict(versions)},
                    "updated_channels": sorted(new),
                }
                metadata: Any = {"source": "loop", "step": step, "parents": {}}
                config = await saver.aput(config, checkpoint, metadata, new)
                checkpoint_id = config["configurable"]["checkpoint_id"]
                for idx, item in enumerate(saver._dump_writes(  # the 2.0.8 row layout
                    thread, "", checkpoint_id, "task-1", "", [("messages", f"reply {step}")]
                )):  # fmt: skip
                    _, _, _, task_id, _task_path, _idx, channel, kind, blob = item
                    await conn.execute(
                        writes_sql, (thread, "", checkpoint_id, task_id, idx, channel, kind, blob)
                    )


@asynccontextmanager
async def migrated_connection(
    dsn: str, settings: Settings
) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A connection to a schema the installed saver's setup() has fully migrated."""
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(settings.postgres_schema)))
    kwargs = checkpointer_connect_kwargs(dsn, settings)
    async with await psycopg.AsyncConnection.connect(dsn, **kwargs) as conn:
        await AsyncPostgresSaver(conn=conn).setup()
        yield conn


@pytest.fixture(params=WRITERS, ids=lambda writer: writer.name)
def writer(request: pytest.FixtureRequest) -> Writer:
    chosen: Writer = request.param
    return chosen


@pytest.fixture
async def skewed(writer: Writer, settings: Settings, dsn: str) -> Settings:
    """Settings whose schema ``writer`` set up and filled, at its own migration level."""
    writer.setup(dsn, settings.postgres_schema)
    await fill(writer, dsn, settings)
    return settings.replace(
        canary_interval=0.02,
        leader_election=False,
        integrity_interval=0,
        integrity_orphan_grace=0,
    )


def counting(
    turns: list[int], check: Callable[[], Awaitable[bool]]
) -> Callable[[], Awaitable[bool]]:
    """``check``, counting its calls: one per canary turn on the leader."""

    async def counted() -> bool:
        turns.append(1)
        return await check()

    return counted


async def metrics(sidecar: Sidecar, http: aiohttp.ClientSession) -> Samples:
    async with http.get(sidecar.url + "/metrics") as response:
        assert response.status == 200
        return parse_metrics(await response.text())


def quiet(logs: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The events logged at warning or above."""
    return [e for e in logs if e.get("log_level") in {"warning", "error", "critical"}]


async def test_a_lower_level_schema_raises_no_alarm(
    writer: Writer, skewed: Settings, dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over several canary turns: canary unsupported (no probe, no failure), health healthy,
    every collector succeeds, integrity finds nothing, recovery loads every workflow, the
    schema is not behind with no expectation, and nothing is logged at warning or above."""
    integrity = IntegrityCollector()
    collectors = (
        CanaryCollector(),
        integrity,
        MigrationsCollector(),
        RecoveryCollector(),
        TablesCollector(),
    )
    with capture_logs() as logs:
        async with (
            Sidecar(skewed, registry=CollectorRegistry(), collectors=collectors) as sidecar,
            aiohttp.ClientSession() as http,
        ):
            canary = sidecar.canary
            assert canary is not None
            turns: list[int] = []
            monkeypatch.setattr(canary, "_tables_ready", counting(turns, canary._tables_ready))
            await eventually(lambda: len(turns) >= TURNS)
            report = await sidecar.check_recovery()
            await metrics(sidecar, http)
            await integrity.wait()
            samples = await metrics(sidecar, http)
            async with http.get(sidecar.url + "/api/health/checkpointer") as response:
                code, document = response.status, await response.json()

    status = canary.status()
    assert (status.unsupported or "").startswith(f"schema at migration {writer.level} lacks")
    assert "checkpoint_writes.task_path" in (status.unsupported or "")
    assert sum(status.probes.values()) == 0
    assert (status.active, status.consecutive_failures, status.readback) == (False, 0, None)
    assert (code, document["status"]) == (200, "healthy")
    assert document["canary"]["status"] == "unsupported"
    assert document["canary"]["unsupportedReason"] == status.unsupported
    assert value(samples, "langgraph_checkpointer_canary_supported") == 0
    for name in ("canary", "integrity", "migrations", "recovery", "tables"):
        assert value(samples, SUCCESS_GAUGE, collector=name) == 1, name

    prefix = "langgraph_checkpointer_"
    assert value(samples, prefix + "migrations_database_version") == writer.level
    assert value(samples, prefix + "migrations_library_version") == LIBRARY_VERSION
    assert value(samples, prefix + "migrations_behind") == 0
    assert value(samples, prefix + "migrations_ahead") == 0
    assert integrity.scanner is not None
    assert integrity.scanner.last_pass is not None
    assert integrity.scanner.last_pass.threads == len(THREADS)
    assert dict(integrity.scanner.last_pass.counts) == dict.fromkeys(
        integrity.scanner.last_pass.counts, 0
    )
    assert value(samples, prefix + "tables_exists", table="checkpoint_writes") == 1
    assert value(samples, prefix + "tables_sample_rows", table="checkpoints") == 2 * len(THREADS)
    assert report is not None
    assert (report.checked, report.recovered, report.failed) == (2, 2, 0)
    assert (report.lower_level, report.unsupported) == (True, None)
    assert value(samples, prefix + "recovery_workflows_failed") == 0
    assert quiet(logs) == []
    assert [e["event"] for e in logs].count("canary_unsupported") == 1


async def test_behind_only_against_a_known_expectation(writer: Writer, skewed: Settings) -> None:
    """Standalone: behind 0 with no expected level, or one the schema has; 1 above it."""
    assert skewed.postgres_connection_string is not None
    dsn = skewed.postgres_connection_string
    cases = {None: 0.0, writer.level: 0.0, LIBRARY_VERSION: 1.0}
    for expected, behind in cases.items():
        async with scrape_context(dsn, skewed.replace(migrations_expected=expected)) as ctx:
            samples = samples_of(await MigrationsCollector().collect(ctx))
        assert value(samples, "langgraph_checkpointer_migrations_behind") == behind, expected
        assert value(samples, "langgraph_checkpointer_migrations_database_version") == writer.level


async def test_the_canary_probes_once_the_schema_is_migrated(settings: Settings, dsn: str) -> None:
    """Unsupported on the current schema minus task_path; once the application's setup() adds
    it, the canary probes and succeeds, and says it is supported again."""
    writer = WRITERS[-1]
    writer.setup(dsn, settings.postgres_schema)
    fast = settings.replace(canary_interval=0.02, leader_election=False)
    with capture_logs() as logs:
        async with Sidecar(fast, registry=CollectorRegistry(), collectors=()) as sidecar:
            canary = sidecar.canary
            assert canary is not None
            await eventually(lambda: canary.status().unsupported is not None)
            kwargs = checkpointer_connect_kwargs(dsn, settings)
            async with await psycopg.AsyncConnection.connect(dsn, **kwargs) as conn:
                await AsyncPostgresSaver(conn=conn).setup()
            await eventually(lambda: canary.status().probes[SUCCESS] >= 2)
            document, code = await sidecar.health()
    assert canary.status().unsupported is None
    assert (document["status"], code) == ("healthy", 200)
    assert "unsupportedReason" not in document["canary"]
    events = [e["event"] for e in logs]
    assert events.index("canary_unsupported") < events.index("canary_supported")
    assert quiet(logs) == []


async def test_the_required_columns_are_those_the_installed_migrations_create(
    settings: Settings, dsn: str
) -> None:
    """SAVER_COLUMNS equals the columns the installed saver's setup() leaves, table by table."""
    async with migrated_connection(dsn, settings) as conn:
        rows = await (
            await conn.execute(
                "SELECT table_name, column_name FROM information_schema.columns"
                " WHERE table_schema = %s AND table_name = ANY(%s) ORDER BY ordinal_position",
                (settings.postgres_schema, list(SAVER_COLUMNS)),
            )
        ).fetchall()
        found: dict[str, set[str]] = {}
        for row in rows:
            found.setdefault(row["table_name"], set()).add(row["column_name"])
        assert found == {table: set(columns) for table, columns in SAVER_COLUMNS.items()}
        schema = await read_saver_schema(conn, settings.postgres_schema)
    assert (schema.supported, schema.missing, schema.migration) == (True, (), LIBRARY_VERSION)


async def test_recovery_reads_the_lower_level_tables_as_the_application_wrote_them(
    writer: Writer, skewed: Settings, dsn: str
) -> None:
    """The recovery check, run on its own, loads both running workflows of ``writer``."""
    check = recovery_check(dsn, skewed)
    with capture_logs() as logs:
        report = await check.run()
    assert (report.checked, report.recovered, report.failed, report.error) == (2, 2, 0, None)
    assert report.lower_level is True
    assert quiet(logs) == []
