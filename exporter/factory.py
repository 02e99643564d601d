"""Builds the configured checkpointer: feature flag, connection pool, schema and setup.

It assembles the pieces below it (the instrumented proxy, workflow tracking, the
metrics) and sits above both packages, so neither has to know the other.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, TypeVar

import psycopg
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from prometheus_client import CollectorRegistry
from psycopg import AsyncConnection
from psycopg.rows import DictRow
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from exporter.checkpointer import cohorts
from exporter.checkpointer.backend import MEMORY, POSTGRES, Backend
from exporter.checkpointer.cohorts import Cohorts
from exporter.checkpointer.instrumented import InstrumentedSaver, Observer, wrap_saver
from exporter.checkpointer.locks import time_lock
from exporter.checkpointer.metrics import SaverMetrics, saver_metrics
from exporter.checkpointer.placement import Placement
from exporter.checkpointer.routing import RoutingSaver, routing_saver
from exporter.database import (
    checkpointer_connect_kwargs,
    connection_string,
    open_checkpointer_pool,
)
from exporter.log import get_logger
from exporter.redact import describe_error, redact
from exporter.settings import Settings
from exporter.sql.checkpoints import THREAD_EXISTS
from exporter.sql.locks import RELEASE_SETUP_LOCK, SETUP_LOCK_KEY, TRY_SETUP_LOCK
from exporter.sql.server import SCHEMA_EXISTS, create_schema
from exporter.target import Target
from exporter.workflows import schema as workflow_schema
from exporter.workflows.tracker import WorkflowTracker

log = get_logger("checkpointer")

S = TypeVar("S", bound=InstrumentedSaver[Any])

# Another replica holds the setup lock while it migrates: poll, and say so every 10 s.
SETUP_LOCK_POLL = 0.1
SETUP_LOCK_LOG_EVERY = 100


class CheckpointerUnavailableError(RuntimeError):
    """PostgreSQL was requested but could not be reached or prepared at start."""


async def _acquire_setup_lock(conn: AsyncConnection[DictRow], schema: str) -> None:
    for attempt in itertools.count():
        cursor = await conn.execute(TRY_SETUP_LOCK, (SETUP_LOCK_KEY, schema))
        row = await cursor.fetchone()
        if row and row["acquired"]:
            return
        if attempt % SETUP_LOCK_LOG_EVERY == 0:
            log.info("waiting_for_setup_lock", schema=schema, attempts=attempt + 1)
        await asyncio.sleep(SETUP_LOCK_POLL)


async def prepare_schema(conninfo: str, settings: Settings) -> None:
    """Create ``POSTGRES_SCHEMA`` if missing and run LangGraph's and our migrations exactly once.

    An advisory lock, held on a connection of its own, keeps replicas that
    start together from running LangGraph's migrations concurrently.
    """
    kwargs = checkpointer_connect_kwargs(conninfo, settings)
    schema = settings.postgres_schema
    async with await AsyncConnection.connect(conninfo, **kwargs) as conn:
        await _acquire_setup_lock(conn, schema)
        try:
            cursor = await conn.execute(SCHEMA_EXISTS, (schema,))
            row = await cursor.fetchone()
            if not (row and row["exists"]):
                await conn.execute(create_schema(schema))
            async with await AsyncConnection.connect(conninfo, **kwargs) as setup_conn:
                await AsyncPostgresSaver(conn=setup_conn).setup()
            await workflow_schema.migrate(conn, schema)
        finally:
            await conn.execute(RELEASE_SETUP_LOCK, (SETUP_LOCK_KEY, schema))


def postgres_saver(
    pool: AsyncConnectionPool[AsyncConnection[DictRow]], settings: Settings, metrics: SaverMetrics
) -> Any:
    """The saver over the application's pool: one ``AsyncPostgresSaver``, or a router.

    A router when the settings ask for several shards or for a rollout below 100 %: it holds
    ``Settings.shards`` savers over the pool (each lock timed on its own, as the one saver's is)
    and, below 100 %, an in-memory saver for the threads the rollout leaves out.
    """
    shards = [AsyncPostgresSaver(conn=pool) for _ in range(settings.shards)]
    percent = settings.rollout_percent
    if len(shards) == 1 and percent >= 100:
        return shards[0]
    for shard in shards:
        time_lock(shard, metrics)
    memory = InMemorySaver() if percent < 100 else None
    placement = Placement(percent, settings.rollout_include, settings.rollout_include_key)
    return routing_saver(
        shards=shards,
        memory=memory,
        placement=placement,
        in_postgres=thread_finder(pool) if memory is not None else None,
        in_memory=(lambda thread_id: thread_id in memory.storage) if memory is not None else None,
    )


def saver_cohorts(saver: Any, percent: float) -> Cohorts:
    """The rollout figures of the PostgreSQL ``saver`` built for ``percent``: a router with a
    memory saver counts the threads it placed; otherwise every new thread goes to PostgreSQL,
    and nothing is placed to count."""
    if isinstance(saver, RoutingSaver) and saver.memory is not None:
        return Cohorts(percent, saver.placed)
    return Cohorts(percent)


def memory_cohorts(memory: InMemorySaver, backend: str) -> Cohorts:
    """The rollout figures of the in-memory saver alone: nothing goes to PostgreSQL, and each
    thread it holds counts under ``backend`` (``memory``, or ``fallback``)."""
    return Cohorts(0.0, lambda: {backend: len(memory.storage)})


def with_cohorts(saver: S, metrics: SaverMetrics, figures: Cohorts) -> S:
    """``saver``, holding ``figures``, which ``metrics`` export for as long as it lives."""
    saver.cohorts = figures
    metrics.track_cohorts(figures)
    return saver


def thread_finder(pool: AsyncConnectionPool[Any]) -> Callable[[str], Coroutine[Any, Any, bool]]:
    """Whether PostgreSQL holds checkpoints of a thread: where a router finds old threads."""

    async def in_postgres(thread_id: str) -> bool:
        async with pool.connection() as conn:
            cursor = await conn.execute(THREAD_EXISTS, (thread_id,))
            row = await cursor.fetchone()
        return bool(row and row["exists"])

    return in_postgres


@asynccontextmanager
async def build_checkpointer(
    settings: Settings,
    *,
    registry: CollectorRegistry | None = None,
    observer: Observer | None = None,
) -> AsyncIterator[InstrumentedSaver[WorkflowTracker]]:
    """Yield the instrumented checkpointer ``settings`` ask for, and close it on exit.

    ``USE_POSTGRES_SAVER=false``: the in-memory saver. Otherwise an
    ``AsyncPostgresSaver`` on its own pool (on the embedded PostgreSQL when no
    connection string is set), with the schema created and ``setup()`` run.
    If PostgreSQL cannot be reached this raises
    :class:`CheckpointerUnavailableError`, unless ``fallback_to_memory`` is
    set: then the in-memory saver runs and ``saver.backend.fallback_reason``
    (shown by health and metrics) says why. With ``tracking`` on, PostgreSQL
    savers keep ``workflow_metadata`` current through ``saver.tracker``
    (None otherwise), which is flushed and closed on exit.
    """
    metrics = saver_metrics(registry)
    schema = settings.postgres_schema
    if not settings.use_postgres_saver:
        log.info("checkpointer_ready", checkpointer=MEMORY)
        memory = InMemorySaver()
        proxy = wrap_saver(memory, metrics, observer, Backend(MEMORY, schema))
        yield with_cohorts(proxy, metrics, memory_cohorts(memory, cohorts.MEMORY))
        return
    async with AsyncExitStack() as stack:
        conninfo = await stack.enter_async_context(connection_string(settings))
        reason: str | None = None
        try:
            await prepare_schema(conninfo, settings)
            pool = await open_checkpointer_pool(conninfo, settings)
        except (psycopg.Error, PoolTimeout, OSError) as exc:
            reason = describe_error(exc)
        # Outside the handler: the application's own errors, thrown in at the yield,
        # must not carry the start-up failure as their __context__.
        if reason is not None:
            if not settings.fallback_to_memory:
                raise CheckpointerUnavailableError(
                    f"PostgreSQL at {redact(conninfo)} is unavailable: {reason}"
                )
            log.warning("checkpointer_fallback", checkpointer=MEMORY, reason=reason)
            backend = Backend(MEMORY, schema, conninfo, fallback_reason=reason)
            memory = InMemorySaver()
            proxy = wrap_saver(memory, metrics, observer, backend)
            yield with_cohorts(proxy, metrics, memory_cohorts(memory, cohorts.FALLBACK))
            return
        stack.push_async_callback(pool.close)
        saver = postgres_saver(pool, settings, metrics)
        tracker = None
        if settings.tracking:
            tracker = WorkflowTracker(
                Target.of(conninfo, settings),
                flush_interval=settings.tracking_flush_interval,
                # A write may wait for a connection, then for the statement: the two timeouts.
                deadline=settings.connect_timeout + settings.collector_timeout,
                registry=registry,
            )
            await tracker.start()
            # Closed before the pool: the last flush comes after the application's last write.
            stack.push_async_callback(tracker.close)
        log.info(
            "checkpointer_ready",
            checkpointer=POSTGRES,
            schema=schema,
            connection_string=redact(conninfo),
            pool_max_size=settings.pool_max_size,
            shards=settings.shards,
            rollout_percent=settings.rollout_percent,
        )
        backend = Backend(POSTGRES, schema, conninfo, pool)
        proxy = wrap_saver(saver, metrics, observer, backend, tracker)
        yield with_cohorts(proxy, metrics, saver_cohorts(saver, settings.rollout_percent))
