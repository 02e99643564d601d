"""The migrations collector against a real database: missing, current, behind, ahead, elsewhere."""

from __future__ import annotations

import psycopg
import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from prometheus_client import CollectorRegistry

from exporter.checkpointer.instrumented import instrument
from exporter.checkpointer.placement import Placement
from exporter.checkpointer.routing import routing_saver
from exporter.collectors.base import ScrapeContext
from exporter.collectors.migrations import (
    LIBRARY_VERSION,
    TABLES,
    MigrationsCollector,
    expected_version,
    migrations_families,
)
from exporter.database import exporter_pool
from exporter.factory import prepare_schema
from exporter.settings import Settings
from tests.samples import Samples, samples_of, value
from tests.serving import scrape_once

DATABASE_VERSION = "langgraph_checkpointer_migrations_database_version"
LIBRARY = "langgraph_checkpointer_migrations_library_version"
BEHIND = "langgraph_checkpointer_migrations_behind"
AHEAD = "langgraph_checkpointer_migrations_ahead"
EXPECTED = "langgraph_checkpointer_migrations_expected_version"
TABLE_EXISTS = "langgraph_checkpointer_migrations_table_exists"


async def collect(settings: Settings, collector: MigrationsCollector | None = None) -> Samples:
    """One run of the collector (a fresh one unless given) through the exporter's own pool."""
    assert settings.postgres_connection_string is not None
    collector = collector or MigrationsCollector()
    pool = exporter_pool(settings.postgres_connection_string, settings)
    await pool.open(wait=True)
    try:
        return samples_of(await collector.collect(ScrapeContext(settings, pool)))
    finally:
        await pool.close()


def tables_existing(samples: Samples) -> dict[str, float]:
    return {table: value(samples, TABLE_EXISTS, table=table) for table in TABLES}


@pytest.fixture
async def migrated(settings: Settings, dsn: str) -> Settings:
    """Settings whose schema LangGraph's setup() has fully migrated."""
    await prepare_schema(dsn, settings)
    return settings


def test_families_compare_the_schema_with_the_expected_version() -> None:
    """Behind and ahead follow the schema against the writer's expected version; no recorded
    version is -1 and behind it."""
    cases = {None: (-1, 1, 0), 3: (3, 1, 0), 9: (9, 0, 0), 10: (10, 0, 1)}
    for recorded, (version, behind, ahead) in cases.items():
        samples = samples_of(migrations_families({"checkpoints": True}, recorded, 9, 9))
        assert value(samples, DATABASE_VERSION) == version
        assert value(samples, LIBRARY) == 9
        assert value(samples, EXPECTED) == 9
        assert value(samples, BEHIND) == behind
        assert value(samples, AHEAD) == ahead
        assert tables_existing(samples) == {
            table: float(table == "checkpoints") for table in TABLES
        }


def test_an_unknown_expectation_is_never_behind_nor_ahead() -> None:
    """Standalone with no expected version: neither behind nor ahead of the sidecar's own
    library, whatever the schema's level, and no expected_version series."""
    for recorded in (None, 4, 8, 9, 10):
        samples = samples_of(migrations_families({"checkpoints": True}, recorded, 9))
        assert (value(samples, BEHIND), value(samples, AHEAD)) == (0, 0)
        assert value(samples, LIBRARY) == 9
        assert not any(name == EXPECTED for name, _ in samples)


async def test_the_expected_version_comes_from_the_setting_else_the_in_process_saver() -> None:
    """The setting wins; else a PostgreSQL saver's own MIGRATIONS; else (memory) unknown."""

    class OlderSaver(AsyncPostgresSaver):
        MIGRATIONS = AsyncPostgresSaver.MIGRATIONS[:5]

    registry = CollectorRegistry()
    postgres = instrument(AsyncPostgresSaver(conn=None), registry)  # type: ignore[arg-type]  # never connects
    older = instrument(OlderSaver(conn=None), registry)  # type: ignore[arg-type]  # never connects
    memory = instrument(InMemorySaver(), registry)
    assert expected_version(None, None) is None
    assert expected_version(None, postgres) == LIBRARY_VERSION
    assert expected_version(None, older) == 4
    assert expected_version(None, memory) is None
    assert expected_version(7, postgres) == 7


async def test_behind_a_routing_saver_its_postgresql_saver_says_what_it_expects() -> None:
    """A rollout below 100 % routes to PostgreSQL and memory: the PostgreSQL saver's library
    level is still what the schema's writer expects."""

    class OlderSaver(AsyncPostgresSaver):
        MIGRATIONS = AsyncPostgresSaver.MIGRATIONS[:5]

    memory = InMemorySaver()
    router = routing_saver(
        shards=[OlderSaver(conn=None)],  # type: ignore[arg-type]  # never connects
        memory=memory,
        placement=Placement(10.0),
        in_postgres=None,
        in_memory=lambda thread_id: thread_id in memory.storage,
    )
    assert expected_version(None, instrument(router, CollectorRegistry())) == 4


async def test_no_context_database_yields_nothing(settings: Settings) -> None:
    """Without a configured database the collector produces no families."""
    assert await MigrationsCollector().collect(ScrapeContext(settings)) == []


async def test_a_fresh_database_has_no_tables_and_is_behind(settings: Settings) -> None:
    """Before setup(): every table is reported missing, version -1, behind an expected
    version, without failing; with none known, not behind."""
    expecting = settings.replace(migrations_expected=LIBRARY_VERSION)
    samples = await collect(expecting)
    assert tables_existing(samples) == dict.fromkeys(TABLES, 0.0)
    assert value(samples, DATABASE_VERSION) == -1
    assert value(samples, LIBRARY) == LIBRARY_VERSION
    assert value(samples, EXPECTED) == LIBRARY_VERSION
    assert value(samples, BEHIND) == 1
    assert value(samples, AHEAD) == 0
    assert value(await collect(settings), BEHIND) == 0


async def test_a_migrated_schema_matches_the_library(migrated: Settings) -> None:
    """After prepare_schema(): every table exists and both versions agree."""
    samples = await collect(migrated)
    assert tables_existing(samples) == dict.fromkeys(TABLES, 1.0)
    assert value(samples, DATABASE_VERSION) == LIBRARY_VERSION
    assert value(samples, LIBRARY) == LIBRARY_VERSION
    assert value(samples, BEHIND) == 0
    assert value(samples, AHEAD) == 0


async def test_a_missing_last_migration_is_behind(migrated: Settings, dsn: str) -> None:
    """Deleting the last recorded migration makes the schema one version behind."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            f"DELETE FROM {migrated.postgres_schema}.checkpoint_migrations "
            f"WHERE v = (SELECT max(v) FROM {migrated.postgres_schema}.checkpoint_migrations)"
        )
    samples = await collect(migrated.replace(migrations_expected=LIBRARY_VERSION))
    assert value(samples, DATABASE_VERSION) == LIBRARY_VERSION - 1
    assert value(samples, BEHIND) == 1
    assert value(samples, AHEAD) == 0


async def test_a_newer_migration_is_ahead(migrated: Settings, dsn: str) -> None:
    """A migration the installed library does not know makes the schema ahead, not behind."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            f"INSERT INTO {migrated.postgres_schema}.checkpoint_migrations (v) VALUES (%s)",
            (LIBRARY_VERSION + 1,),
        )
    samples = await collect(migrated.replace(migrations_expected=LIBRARY_VERSION))
    assert value(samples, DATABASE_VERSION) == LIBRARY_VERSION + 1
    assert value(samples, BEHIND) == 0
    assert value(samples, AHEAD) == 1


async def test_a_custom_schema_is_read_and_the_default_left_alone(
    settings: Settings, dsn: str
) -> None:
    """With POSTGRES_SCHEMA=custom the collector reads that schema, not the default one."""
    custom = settings.replace(postgres_schema="custom_checkpoints")
    await prepare_schema(dsn, custom)
    samples = await collect(custom)
    assert tables_existing(samples) == dict.fromkeys(TABLES, 1.0)
    assert value(samples, DATABASE_VERSION) == LIBRARY_VERSION
    assert value(samples, BEHIND) == 0
    default = await collect(settings)
    assert tables_existing(default) == dict.fromkeys(TABLES, 0.0)


async def test_a_schema_name_needing_quotes_is_quoted(settings: Settings, dsn: str) -> None:
    """A schema name with capitals and a quote reaches SQL as an identifier, never as text."""
    schema = 'Odd"Schema; DROP'
    quoted = '"Odd""Schema; DROP"'
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {quoted}")
        conn.execute(f"CREATE TABLE {quoted}.checkpoint_migrations (v integer PRIMARY KEY)")
        conn.execute(f"INSERT INTO {quoted}.checkpoint_migrations VALUES (0), (1), (2)")
    # Settings validation refuses such names, so it is forced past; the collector must still be
    # safe with them, on the first scrape and on the later ones, which read the version in the
    # same statement.
    odd = settings.replace(migrations_expected=LIBRARY_VERSION)
    object.__setattr__(odd, "postgres_schema", schema)
    collector = MigrationsCollector()
    for _ in range(2):
        samples = await collect(odd, collector)
        assert value(samples, TABLE_EXISTS, table="checkpoint_migrations") == 1
        assert value(samples, TABLE_EXISTS, table="checkpoints") == 0
        assert value(samples, DATABASE_VERSION) == 2
        assert value(samples, BEHIND) == 1


async def test_one_collector_follows_the_schema_across_scrapes(
    settings: Settings, dsn: str
) -> None:
    """Missing, migrated, behind, dropped and migrated again, seen by one collector in turn."""
    collector = MigrationsCollector()
    schema = settings.postgres_schema
    settings = settings.replace(migrations_expected=LIBRARY_VERSION)

    async def versions() -> tuple[float, float, float]:
        samples = await collect(settings, collector)
        existing = value(samples, TABLE_EXISTS, table="checkpoint_migrations")
        return existing, value(samples, DATABASE_VERSION), value(samples, BEHIND)

    assert await versions() == (0, -1, 1)
    await prepare_schema(dsn, settings)
    assert await versions() == (1, LIBRARY_VERSION, 0)
    assert await versions() == (1, LIBRARY_VERSION, 0)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DELETE FROM {schema}.checkpoint_migrations WHERE v = {LIBRARY_VERSION}")
    assert await versions() == (1, LIBRARY_VERSION - 1, 1)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")
    assert await versions() == (0, -1, 1)
    assert await versions() == (0, -1, 1)
    await prepare_schema(dsn, settings)
    assert await versions() == (1, LIBRARY_VERSION, 0)


async def test_the_sidecar_serves_the_migration_figures(migrated: Settings) -> None:
    """Over HTTP, /metrics carries the versions and the collector's success."""
    samples = await scrape_once(migrated, MigrationsCollector())
    assert value(samples, DATABASE_VERSION) == LIBRARY_VERSION
    assert value(samples, BEHIND) == 0
    assert value(samples, TABLE_EXISTS, table="checkpoint_writes") == 1
    success = "langgraph_checkpointer_scrape_collector_success"
    assert value(samples, success, collector="migrations") == 1
