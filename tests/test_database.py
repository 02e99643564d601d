"""The exporter's own connections: bounded, named, and prepared as the settings say."""

from __future__ import annotations

import pytest

from exporter.database import EXPORTER_APPLICATION_NAME, exporter_pool, server_timeouts_ms
from exporter.settings import Settings
from exporter.sql import server as sql


async def test_exporter_connections_are_bounded_and_named(dsn: str, settings: Settings) -> None:
    """Statements run as ``checkpoint-exporter`` under server limits strictly inside the
    collector timeout: a lock wait ends first, then a statement, then the deadline."""
    settings = settings.replace(collector_timeout=1.5)
    async with exporter_pool(dsn, settings) as pool, pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT current_setting('statement_timeout') AS statement_timeout,"
            " current_setting('lock_timeout') AS lock_timeout,"
            " current_setting('idle_in_transaction_session_timeout') AS idle,"
            " current_setting('application_name') AS application_name"
        )
        row = await cursor.fetchone()
    assert row == {
        "statement_timeout": "1200ms",
        "lock_timeout": "750ms",
        "idle": "3s",
        "application_name": EXPORTER_APPLICATION_NAME,
    }
    assert pool.max_size == settings.exporter_pool_size


@pytest.mark.parametrize("deadline", [0.05, 0.051, 1.0, 5.0, 600.0])
def test_server_limits_are_strictly_ordered_inside_every_deadline(deadline: float) -> None:
    """For every collector timeout the settings allow: lock < statement < deadline."""
    lock_ms, statement_ms = server_timeouts_ms(deadline)
    assert 0 < lock_ms < statement_ms < deadline * 1000


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
