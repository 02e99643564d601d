"""The activity collector: pure row folding, and figures for sessions the tests open themselves."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from time import monotonic
from typing import Any

import psycopg
import pytest
from psycopg import AsyncConnection

from exporter.collectors.activity import (
    APPLICATIONS,
    PREFIX,
    STATES,
    ActivityCollector,
    activity_families,
)
from exporter.collectors.base import ScrapeContext
from exporter.database import EXPORTER_APPLICATION_NAME
from exporter.settings import Settings
from tests.samples import Samples, samples_of, scrape_context
from tests.serving import scrape_once

SUMMARY: dict[str, Any] = {
    "states": [],
    "server_connections": 12,
    "max_connections": 100,
    "reserved_connections": 3,
    "oldest_transaction_seconds": 4.5,
    "longest_active_query_seconds": 2.25,
    "lock_waiting_connections": 1,
    "idle_in_transaction_connections": 2,
    "oldest_idle_in_transaction_seconds": None,
}


def connections(samples: Samples, state: str, application: str) -> float:
    key = (PREFIX + "connections", (("application", application), ("state", state)))
    return samples[key]


def gauge(samples: Samples, name: str) -> float:
    return samples[(PREFIX + name, ())]


def test_rows_fold_into_bounded_labels_with_zeroes() -> None:
    """Raw application names fold into three labels; every known state appears, zero when empty."""
    rows: list[dict[str, Any]] = [
        {"state": "active", "application_name": "app", "connections": 2},
        {"state": "idle", "application_name": "app", "connections": 5},
        {"state": "active", "application_name": EXPORTER_APPLICATION_NAME, "connections": 1},
        {"state": "idle", "application_name": "psql", "connections": 1},
        {"state": "idle", "application_name": "", "connections": 2},
        {"state": "idle", "application_name": None, "connections": 1},
        {"state": None, "application_name": "app", "connections": 7},
        {"state": "starting", "application_name": "app", "connections": 1},
    ]
    row = {**SUMMARY, "states": rows}
    samples = samples_of(activity_families(row, checkpointer_application="app"))
    series = {
        (labels["state"], labels["application"])
        for (name, pairs) in samples
        if name == PREFIX + "connections"
        for labels in [dict(pairs)]
    }
    known = {(state, application) for state in STATES for application in APPLICATIONS}
    assert series == known | {("starting", "checkpointer")}
    assert connections(samples, "active", "checkpointer") == 2
    assert connections(samples, "idle", "checkpointer") == 5
    assert connections(samples, "active", "exporter") == 1
    assert connections(samples, "idle", "other") == 4
    assert connections(samples, "idle in transaction", "checkpointer") == 0
    assert connections(samples, "disabled", "other") == 0
    assert connections(samples, "starting", "checkpointer") == 1
    applications = {dict(labels).get("application") for _, labels in samples}
    assert applications == {None, *APPLICATIONS}
    assert sum(v for (n, _), v in samples.items() if n == PREFIX + "connections") == 13
    assert gauge(samples, "server_connections") == 12
    assert gauge(samples, "max_connections") == 100
    assert gauge(samples, "reserved_connections") == 3
    assert gauge(samples, "oldest_transaction_seconds") == 4.5
    assert gauge(samples, "longest_active_query_seconds") == 2.25
    assert gauge(samples, "lock_waiting_connections") == 1
    assert gauge(samples, "idle_in_transaction_connections") == 2
    assert gauge(samples, "oldest_idle_in_transaction_seconds") == 0


def test_checkpointer_name_wins_over_the_exporters() -> None:
    """An application named like the exporter's connections still counts as the checkpointer."""
    rows = [{"state": "idle", "application_name": EXPORTER_APPLICATION_NAME, "connections": 3}]
    row = {**SUMMARY, "states": rows}
    families = activity_families(row, checkpointer_application=EXPORTER_APPLICATION_NAME)
    samples = samples_of(families)
    assert connections(samples, "idle", "checkpointer") == 3
    assert connections(samples, "idle", "exporter") == 0


async def test_no_database_means_no_families(memory_settings: Settings) -> None:
    """Without PostgreSQL the collector reports nothing and queries nothing."""
    assert await ActivityCollector().collect(ScrapeContext(memory_settings)) == []


@pytest.fixture
async def context(dsn: str, settings: Settings) -> AsyncIterator[ScrapeContext]:
    """A scrape context on the exporter's own pool, opened for the test."""
    async with scrape_context(dsn, settings) as ctx:
        yield ctx


@pytest.fixture
async def monitor(dsn: str) -> AsyncIterator[AsyncConnection[Any]]:
    """An autocommit connection that watches pg_stat_activity for the test."""
    async with await AsyncConnection.connect(dsn, autocommit=True) as conn:
        yield conn


async def wait_until(monitor: AsyncConnection[Any], query: str, *params: Any) -> None:
    """Poll ``query`` (one boolean) until it holds: sessions show up in pg_stat_activity late."""
    async with asyncio.timeout(10):
        while True:
            cursor = await monitor.execute(query, params)
            row = await cursor.fetchone()
            if row is not None and row[0]:
                return
            await asyncio.sleep(0.01)


STATE_OF = (
    "SELECT state = %s AND wait_event_type IS NOT DISTINCT FROM %s"
    " FROM pg_stat_activity WHERE pid = %s"
)


async def test_states_applications_and_ages_of_known_sessions(
    dsn: str,
    settings: Settings,
    context: ScrapeContext,
    monitor: AsyncConnection[Any],
) -> None:
    """Two checkpointer sessions, idle in transaction and running a query, are counted and aged."""
    name = settings.application_name
    async with (
        await AsyncConnection.connect(dsn, application_name=name) as idle,
        await AsyncConnection.connect(dsn, application_name=name, autocommit=True) as busy,
    ):
        began = monotonic()
        await idle.execute("SELECT 1")  # Not autocommit: the transaction stays open.
        sleeping = asyncio.create_task(busy.execute("SELECT pg_sleep(60)"))
        launched = monotonic()
        await wait_until(monitor, STATE_OF, "idle in transaction", "Client", idle.info.backend_pid)
        await wait_until(monitor, STATE_OF, "active", "Timeout", busy.info.backend_pid)
        families = await ActivityCollector().collect(context)
        ceiling = monotonic()
        await monitor.execute("SELECT pg_cancel_backend(%s)", (busy.info.backend_pid,))
        with pytest.raises(psycopg.errors.QueryCanceled):
            await sleeping
        cursor = await monitor.execute("SHOW max_connections")
        max_connections = await cursor.fetchone()
        cursor = await monitor.execute(
            "SELECT current_setting('superuser_reserved_connections')::int"
            " + coalesce(current_setting('reserved_connections', true)::int, 0)"
        )
        reserved = await cursor.fetchone()
    samples = samples_of(families)
    assert connections(samples, "active", "checkpointer") == 1
    assert connections(samples, "idle in transaction", "checkpointer") == 1
    for state in set(STATES) - {"active", "idle in transaction"}:
        assert connections(samples, state, "checkpointer") == 0
    # The collector's own backend is one of the exporter's active connections.
    assert connections(samples, "active", "exporter") >= 1
    # Every session on this test's database is the test's: none other is in a transaction.
    assert gauge(samples, "idle_in_transaction_connections") == 1
    idle_age = gauge(samples, "oldest_idle_in_transaction_seconds")
    assert 0 < idle_age <= ceiling - began
    assert idle_age <= gauge(samples, "oldest_transaction_seconds") <= ceiling - began
    assert 0 < gauge(samples, "longest_active_query_seconds") <= ceiling - launched
    assert gauge(samples, "lock_waiting_connections") == 0
    here = sum(v for (n, _), v in samples.items() if n == PREFIX + "connections")
    assert gauge(samples, "server_connections") >= here >= 4  # idle, busy, monitor, exporter
    assert max_connections is not None
    assert reserved is not None
    assert gauge(samples, "max_connections") == int(max_connections[0])
    assert gauge(samples, "reserved_connections") == reserved[0]


async def test_sessions_waiting_for_a_lock(
    dsn: str, context: ScrapeContext, monitor: AsyncConnection[Any]
) -> None:
    """A read blocked by an ACCESS EXCLUSIVE lock is the one connection waiting for a lock."""
    await monitor.execute("CREATE TABLE t (id int)")
    async with (
        await AsyncConnection.connect(dsn) as holder,
        await AsyncConnection.connect(dsn, autocommit=True) as reader,
    ):
        await holder.execute("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
        reading = asyncio.create_task(reader.execute("SELECT * FROM t"))
        await wait_until(monitor, STATE_OF, "active", "Lock", reader.info.backend_pid)
        families = await ActivityCollector().collect(context)
        await holder.rollback()
        await reading
    samples = samples_of(families)
    assert gauge(samples, "lock_waiting_connections") == 1
    assert gauge(samples, "idle_in_transaction_connections") == 1
    assert connections(samples, "idle in transaction", "other") == 1
    assert connections(samples, "active", "other") == 1
    assert gauge(samples, "longest_active_query_seconds") > 0


async def test_activity_over_http(dsn: str, settings: Settings) -> None:
    """Through a real sidecar, /metrics carries the activity series and the collector succeeds."""
    async with await AsyncConnection.connect(
        dsn, application_name=settings.application_name, autocommit=True
    ) as idle:
        samples = await scrape_once(settings, ActivityCollector())
        cursor = await idle.execute("SHOW max_connections")
        max_connections = await cursor.fetchone()
    success = ("langgraph_checkpointer_scrape_collector_success", (("collector", "activity"),))
    assert samples[success] == 1
    assert connections(samples, "idle", "checkpointer") == 1
    assert connections(samples, "disabled", "other") == 0
    assert max_connections is not None
    assert gauge(samples, "max_connections") == int(max_connections[0])
