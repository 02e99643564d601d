"""Schema version of the checkpoint tables against the one the installed LangGraph expects.

Produces::

    langgraph_checkpointer_migrations_database_version 9
    langgraph_checkpointer_migrations_library_version 9
    langgraph_checkpointer_migrations_behind 0
    langgraph_checkpointer_migrations_ahead 0
    langgraph_checkpointer_migrations_table_exists{table="checkpoints"} 1
    langgraph_checkpointer_migrations_table_exists{table="checkpoint_blobs"} 1
    langgraph_checkpointer_migrations_table_exists{table="checkpoint_writes"} 1
    langgraph_checkpointer_migrations_table_exists{table="checkpoint_migrations"} 1

LangGraph records each migration it ran as a row ``v`` in
``checkpoint_migrations``; the highest is the schema's version, and the
library expects ``len(MIGRATIONS) - 1``. ``database_version`` is -1 while
no migration is recorded (``setup()`` never ran), which counts as behind.
``ahead`` means a newer LangGraph migrated the schema than the one installed here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Final

from langgraph.checkpoint.postgres.base import BasePostgresSaver
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from psycopg import sql

from exporter.collectors.base import ScrapeContext

PREFIX = "langgraph_checkpointer_migrations_"

TABLES: Final = ("checkpoints", "checkpoint_blobs", "checkpoint_writes", "checkpoint_migrations")

LIBRARY_VERSION: Final = len(BasePostgresSaver.MIGRATIONS) - 1

# Version of a schema with no recorded migration, as LangGraph's setup() counts it.
NO_VERSION: Final = -1

# format('%I.%I') quotes schema and table server-side, so to_regclass sees
# exactly the identifiers and never parses the schema name as SQL.
TABLES_EXIST = """
SELECT t.name, to_regclass(format('%%I.%%I', %s::text, t.name)) IS NOT NULL AS exists
FROM unnest(%s::text[]) AS t(name)
"""


def schema_version_query(schema: str) -> sql.Composed:
    """The highest recorded migration in ``schema``, the schema quoted as an identifier."""
    return sql.SQL("SELECT max(v) AS v FROM {}").format(
        sql.Identifier(schema, "checkpoint_migrations")
    )


def migrations_families(
    exists: Mapping[str, bool], database_version: int | None, library_version: int
) -> list[Metric]:
    """Turn table existence and the recorded version (None: none recorded) into families."""
    version = NO_VERSION if database_version is None else database_version
    families: list[Metric] = [
        GaugeMetricFamily(
            PREFIX + "database_version",
            "Highest migration recorded in checkpoint_migrations (-1: none).",
            value=version,
        ),
        GaugeMetricFamily(
            PREFIX + "library_version",
            "Highest migration the installed langgraph-checkpoint-postgres knows.",
            value=library_version,
        ),
        GaugeMetricFamily(
            PREFIX + "behind",
            "1 when the schema lacks migrations the installed library expects.",
            value=1.0 if version < library_version else 0.0,
        ),
        GaugeMetricFamily(
            PREFIX + "ahead",
            "1 when a newer library migrated the schema than the one installed.",
            value=1.0 if version > library_version else 0.0,
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
    """Reads which checkpoint tables exist and the highest recorded migration."""

    name: ClassVar[str] = "migrations"
    database_wide: ClassVar[bool] = True

    async def collect(self, ctx: ScrapeContext) -> list[Metric]:
        if ctx.database is None:
            return []
        schema = ctx.settings.postgres_schema
        version: int | None = None
        async with ctx.database.connection() as conn:
            cursor = await conn.execute(TABLES_EXIST, (schema, list(TABLES)))
            exists = {row["name"]: bool(row["exists"]) for row in await cursor.fetchall()}
            if exists["checkpoint_migrations"]:
                cursor = await conn.execute(schema_version_query(schema))
                row = await cursor.fetchone()
                if row is not None and row["v"] is not None:
                    version = int(row["v"])
        return migrations_families(exists, version, LIBRARY_VERSION)
