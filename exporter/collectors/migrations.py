"""Schema version of the checkpoint tables against the one their writers expect.

Produces::

    langgraph_checkpointer_migrations_database_version 9
    langgraph_checkpointer_migrations_library_version 9
    langgraph_checkpointer_migrations_expected_version 9
    langgraph_checkpointer_migrations_behind 0
    langgraph_checkpointer_migrations_ahead 0
    langgraph_checkpointer_migrations_table_exists{table="checkpoints"} 1
    langgraph_checkpointer_migrations_table_exists{table="checkpoint_blobs"} 1
    langgraph_checkpointer_migrations_table_exists{table="checkpoint_writes"} 1
    langgraph_checkpointer_migrations_table_exists{table="checkpoint_migrations"} 1

LangGraph records each migration it ran as a row ``v`` in
``checkpoint_migrations``; the highest is ``database_version`` (-1 while none
is recorded: ``setup()`` never ran). A saver expects ``len(MIGRATIONS) - 1``.
``library_version`` is that of the sidecar's own langgraph-checkpoint-postgres,
which is not the schema's writer: a standalone sidecar shares the database
with applications on other releases, or the JavaScript saver (level 4).
``expected_version`` is the writer's: the application saver's in-process, else
``CHECKPOINT_EXPORTER_MIGRATIONS_EXPECTED`` (the setting wins when both are
known); it is absent while unknown. ``behind`` and ``ahead`` compare the
schema with it, and are 0 while it is unknown: a schema below the sidecar's
own library is no fault of the application writing it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import suppress
from functools import cache
from typing import Any, ClassVar, Final, cast

from langgraph.checkpoint.postgres.base import BasePostgresSaver
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from psycopg import AsyncConnection, errors

from exporter.checkpointer.instrumented import Dispatcher, InstrumentedSaver, dispatches
from exporter.collectors.base import Memo, ScrapeContext
from exporter.sql import checkpoints

PREFIX = "langgraph_checkpointer_migrations_"

TABLES: Final = checkpoints.TABLES

LIBRARY_VERSION: Final = len(BasePostgresSaver.MIGRATIONS) - 1

# Version of a schema with no recorded migration, as LangGraph's setup() counts it.
NO_VERSION: Final = -1

GONE_ERRORS: Final = (errors.UndefinedTable, errors.InvalidSchemaName)


# The statements of a scrape, built once per schema.
tables_exist_query: Final = cache(checkpoints.tables_present)
tables_and_version_query: Final = cache(checkpoints.tables_present_and_level)
schema_version_query: Final = cache(checkpoints.migration_level)


def expected_version(settings_expected: int | None, saver: InstrumentedSaver | None) -> int | None:
    """The level the schema's writer expects: the setting, else the in-process saver's library.

    In-process the application's own saver writes the schema, so its class's
    ``MIGRATIONS`` say what it needs (behind the routing saver, its PostgreSQL saver's);
    a saver that is not PostgreSQL's says nothing.
    """
    if settings_expected is not None:
        return settings_expected
    inner = saver.inner if saver is not None else None
    stores = cast(Dispatcher, inner).stores if dispatches(type(inner)) else (inner,)
    for store in stores:
        if isinstance(store, BasePostgresSaver):
            return len(type(store).MIGRATIONS) - 1
    return None


def migrations_families(
    exists: Mapping[str, bool],
    database_version: int | None,
    library_version: int,
    expected: int | None = None,
) -> list[Metric]:
    """Turn table existence, the recorded version (None: none recorded) and the writer's
    expected version (None: unknown) into families."""
    version = NO_VERSION if database_version is None else database_version
    families: list[Metric] = [
        GaugeMetricFamily(
            PREFIX + "database_version",
            "Highest migration recorded in checkpoint_migrations (-1: none).",
            value=version,
        ),
        GaugeMetricFamily(
            PREFIX + "library_version",
            "Highest migration the sidecar's own langgraph-checkpoint-postgres knows "
            "(not necessarily the schema's writer's).",
            value=library_version,
        ),
    ]
    if expected is not None:
        families.append(
            GaugeMetricFamily(
                PREFIX + "expected_version",
                "Migration level the schema's writer expects: the in-process application's "
                "saver, or CHECKPOINT_EXPORTER_MIGRATIONS_EXPECTED; absent while unknown.",
                value=expected,
            )
        )
    families += [
        GaugeMetricFamily(
            PREFIX + "behind",
            "1 when the schema lacks migrations its writer expects (0 while that is unknown).",
            value=1.0 if expected is not None and version < expected else 0.0,
        ),
        GaugeMetricFamily(
            PREFIX + "ahead",
            "1 when the schema has migrations beyond what its writer expects (0 while unknown).",
            value=1.0 if expected is not None and version > expected else 0.0,
        ),
    ]
    table_exists = GaugeMetricFamily(
        PREFIX + "table_exists",
        "Whether each checkpoint table exists in the schema.",
        labels=["table"],
    )
    for table in TABLES:
        table_exists.add_metric([table], 1.0 if exists.get(table) else 0.0)
    families.append(table_exists)
    return families


class MigrationsCollector:
    """Reads which checkpoint tables exist and the highest recorded migration.

    One statement per scrape once the migrations table has been seen; until
    then (and once after it is dropped) two, so that a schema not set up yet
    never puts an error in the server's log.
    """

    name: ClassVar[str] = "migrations"
    database_wide: ClassVar[bool] = True

    def __init__(self) -> None:
        self._table_seen = False
        # The schema rarely changes: most scrapes hand back the families of the last one.
        self._families = Memo(_families)

    async def collect(self, ctx: ScrapeContext) -> Sequence[Metric]:
        if ctx.database is None:
            return []
        async with ctx.database.connection() as conn:
            exists, version = await self._read(conn, ctx.settings.postgres_schema)
        self._table_seen = exists["checkpoint_migrations"]
        expected = expected_version(ctx.settings.migrations_expected, ctx.saver)
        return self._families((exists, version, expected))

    async def _read(
        self, conn: AsyncConnection[Any], schema: str
    ) -> tuple[dict[str, bool], int | None]:
        if self._table_seen:
            with suppress(*GONE_ERRORS):
                cursor = await conn.execute(tables_and_version_query(schema))
                rows = await cursor.fetchall()
                return _exists(rows), _int(rows[0]["v"] if rows else None)
        cursor = await conn.execute(tables_exist_query(schema))
        exists = _exists(await cursor.fetchall())
        if not exists["checkpoint_migrations"]:
            return exists, None
        cursor = await conn.execute(schema_version_query(schema))
        row = await cursor.fetchone()
        return exists, _int(row["v"] if row else None)


def _families(state: tuple[dict[str, bool], int | None, int | None]) -> list[Metric]:
    exists, version, expected = state
    return migrations_families(exists, version, LIBRARY_VERSION, expected)


def _exists(rows: Iterable[Mapping[str, Any]]) -> dict[str, bool]:
    return {row["name"]: bool(row["exists"]) for row in rows}


def _int(value: Any) -> int | None:
    return None if value is None else int(value)
