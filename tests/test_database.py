"""The exporter's own connections: bounded, named, and prepared as the settings say."""

from __future__ import annotations

import pytest

from exporter import sql
from exporter.database import EXPORTER_APPLICATION_NAME, exporter_pool
from exporter.settings import Settings


async def test_exporter_connections_are_bounded_and_named(dsn: str, settings: Settings) -> None:
    """Every statement runs under the collector timeout, as ``checkpoint-exporter``."""
    settings = settings.replace(collector_timeout=1.5)
    async with exporter_pool(dsn, settings) as pool, pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT current_setting('statement_timeout') AS statement_timeout,"
            " current_setting('lock_timeout') AS lock_timeout,"
            " current_setting('application_name') AS application_name"
        )
        row = await cursor.fetchone()
    assert row == {
        "statement_timeout": "1500ms",
        "lock_timeout": "1500ms",
        "application_name": EXPORTER_APPLICATION_NAME,
    }
    assert pool.max_size == settings.exporter_pool_size


@pytest.mark.parametrize(("threshold", "prepared"), [(0, 1), (None, 0)])
async def test_exporter_statements_are_prepared_unless_turned_off(
    dsn: str, settings: Settings, threshold: int | None, prepared: int
) -> None:
    """Scrapes reuse their plans; ``prepare_threshold=none`` (PgBouncer) prepares nothing."""
    settings = settings.replace(prepare_threshold=threshold)
    async with exporter_pool(dsn, settings) as pool, pool.connection() as conn:
        for _ in range(2):
            await conn.execute(sql.SERVER_VERSION)
        cursor = await conn.execute(
            "SELECT count(*) AS n FROM pg_prepared_statements WHERE statement = %s",
            (sql.SERVER_VERSION,),
        )
        row = await cursor.fetchone()
    assert row is not None
    assert row["n"] == prepared
