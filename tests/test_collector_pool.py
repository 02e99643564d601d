"""The pool collector reports psycopg_pool's figures in base units without resetting them."""

from __future__ import annotations

import asyncio

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from exporter.collectors.base import ScrapeContext
from exporter.collectors.pool import PoolCollector, pool_families
from exporter.settings import Settings
from tests.samples import samples_of, value

PREFIX = "langgraph_checkpointer_pool_"


def test_milliseconds_become_seconds_and_absent_counters_zero() -> None:
    """Durations are converted from ms; a counter get_stats() leaves out reads as 0."""
    samples = samples_of(
        pool_families({"checkpointer": {"pool_max": 10, "requests_num": 7, "usage_ms": 1500}})
    )
    assert value(samples, PREFIX + "max_connections", pool="checkpointer") == 10
    assert value(samples, PREFIX + "requests_total", pool="checkpointer") == 7
    assert value(samples, PREFIX + "usage_seconds_total", pool="checkpointer") == 1.5
    assert value(samples, PREFIX + "requests_wait_seconds_total", pool="checkpointer") == 0
    assert value(samples, PREFIX + "connections_lost_total", pool="checkpointer") == 0


async def test_a_real_pool_counts_requests_and_waiting(dsn: str, settings: Settings) -> None:
    """Requests are counted exactly, scrapes never reset them, and a queued request shows."""
    pool: AsyncConnectionPool[AsyncConnection] = AsyncConnectionPool(
        dsn, min_size=1, max_size=1, open=False, name="checkpointer"
    )
    await pool.open(wait=True)
    collector = PoolCollector()
    ctx = ScrapeContext(settings, pools={"checkpointer": pool})
    try:
        for _ in range(5):
            async with pool.connection() as conn:
                await conn.execute("SELECT 1")
        first = samples_of(await collector.collect(ctx))
        second = samples_of(await collector.collect(ctx))
        assert value(first, PREFIX + "requests_total", pool="checkpointer") == 5
        assert first == second
        async with pool.connection():
            waiter = asyncio.create_task(pool.getconn(timeout=10))
            # The pool offers no event for "a request queued": yield until it has.
            while pool.get_stats().get("requests_waiting", 0) == 0:  # noqa: ASYNC110
                await asyncio.sleep(0)
            queued = samples_of(await collector.collect(ctx))
        await pool.putconn(await waiter)
        assert value(queued, PREFIX + "requests_waiting", pool="checkpointer") == 1
        assert value(queued, PREFIX + "available_connections", pool="checkpointer") == 0
        assert value(queued, PREFIX + "connections", pool="checkpointer") == 1
    finally:
        await pool.close()
