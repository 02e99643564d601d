"""What the checkpoint tables support: the columns the installed saver's SQL needs, and the level.

The sidecar shares its database with applications it did not write. One on an
older ``langgraph-checkpoint-postgres``, or the JavaScript saver (whose tables
stop at migration 4), leaves a schema without columns the installed saver's
statements name (``checkpoint_writes.task_path``, migration 9). The canary and
the recovery check ask here first, so that such a schema is reported as
unsupported rather than failing every statement. Only the catalog is read;
nothing here migrates or alters a schema.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Final

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from exporter.sql.checkpoints import COLUMNS_EXIST, migration_level

# Every column the installed saver's statements (put, put_writes, get_tuple, list, prune)
# name, by table: the tables of its last migration. A test keeps this equal to MIGRATIONS.
SAVER_COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    "checkpoints": (
        "thread_id",
        "checkpoint_ns",
        "checkpoint_id",
        "parent_checkpoint_id",
        "type",
        "checkpoint",
        "metadata",
    ),
    "checkpoint_blobs": ("thread_id", "checkpoint_ns", "channel", "version", "type", "blob"),
    "checkpoint_writes": (
        "thread_id",
        "checkpoint_ns",
        "checkpoint_id",
        "task_id",
        "task_path",
        "idx",
        "channel",
        "type",
        "blob",
    ),
}
# Columns a reader can do without: added by a migration after the JavaScript saver's last.
OPTIONAL_FOR_READS: Final = frozenset({"checkpoint_writes.task_path"})


def _library_version() -> str:
    try:
        return version("langgraph-checkpoint-postgres")
    except PackageNotFoundError:  # pragma: no cover - installed with the project
        return "(unknown)"


LIBRARY_RELEASE: Final = _library_version()


@dataclass(frozen=True, slots=True)
class SaverSchema:
    """The checkpoint tables as the catalog shows them.

    ``tables`` is whether all three exist; ``missing`` names the columns
    (``table.column``) the installed saver needs that existing tables lack;
    ``migration`` is the highest recorded migration (None: none recorded).
    """

    tables: bool
    missing: tuple[str, ...]
    migration: int | None

    @property
    def supported(self) -> bool:
        """The installed saver's statements run here: reads and writes."""
        return self.tables and not self.missing

    @property
    def readable(self) -> bool:
        """A reader that leaves out the optional columns can load checkpoints here."""
        return self.tables and not set(self.missing) - OPTIONAL_FOR_READS

    def reason(self) -> str | None:
        """Why the installed saver cannot run here, for logs and health (None: it can)."""
        if not self.missing:
            return None
        level = "with no recorded migration"
        if self.migration is not None:
            level = f"at migration {self.migration}"
        return (
            f"schema {level} lacks {', '.join(self.missing)}, which the installed "
            f"langgraph-checkpoint-postgres {LIBRARY_RELEASE} needs (written by an older or "
            "another saver)"
        )


def _pairs() -> tuple[list[str], list[str]]:
    tables = [table for table, columns in SAVER_COLUMNS.items() for _ in columns]
    columns = [column for names in SAVER_COLUMNS.values() for column in names]
    return tables, columns


async def read_saver_schema(conn: AsyncConnection[Any], schema: str) -> SaverSchema:
    """Read which tables and columns ``schema`` has, and its migration level, from the catalog."""
    tables, columns = _pairs()
    async with conn.cursor(row_factory=dict_row) as cursor:
        params = {"schema": schema, "tables": tables, "columns": columns}
        await cursor.execute(COLUMNS_EXIST, params)
        rows = await cursor.fetchall()
        exists = all(row["table_exists"] for row in rows)
        missing = tuple(
            f"{row['tbl']}.{row['col']}"
            for row in rows
            if row["table_exists"] and not row["column_exists"]
        )
        migration = None
        if rows and rows[0]["migrations_exist"]:
            await cursor.execute(migration_level(schema))
            row = await cursor.fetchone()
            migration = None if row is None or row["v"] is None else int(row["v"])
    return SaverSchema(exists, missing, migration)
