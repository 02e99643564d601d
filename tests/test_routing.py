"""The routing saver: the rollout and the shards, on a real PostgreSQL and real graphs."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from langgraph.checkpoint.base import BaseCheckpointSaver, empty_checkpoint
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.types import Command
from prometheus_client import CollectorRegistry
from psycopg.rows import dict_row

from exporter import build_checkpointer
from exporter.checkpointer.metrics import saver_metrics
from exporter.checkpointer.placement import Placement, bucket, shard
from exporter.checkpointer.routing import RoutingSaver, routing_saver
from exporter.database import open_checkpointer_pool
from exporter.factory import postgres_saver, prepare_schema
from exporter.settings import Settings
from tests.graphs import config, review_graph
from tests.targets import recovery_check


def root(thread_id: str) -> Any:
    """The config a direct saver call takes: the thread and its root namespace."""
    return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}


def conformance(report: Any) -> dict[str, Any]:
    """A conformance report without the checkpointer's name: what two savers can share."""
    results: dict[str, Any] = report.to_dict()["results"]
    return results


async def run_conformance(name: str, make: Any) -> dict[str, Any]:
    registered = checkpointer_test(name=name)(make)
    return conformance(await validate(registered))


@pytest.fixture
async def prepared(settings: Settings, dsn: str) -> Settings:
    await prepare_schema(dsn, settings)
    return settings


async def emptied(dsn: str, schema: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(
            f'TRUNCATE "{schema}".checkpoints, "{schema}".checkpoint_blobs, '
            f'"{schema}".checkpoint_writes'
        )


def factory(dsn: str, settings: Settings) -> Any:
    """A conformance factory: the factory's saver for ``settings`` over a fresh pool."""

    async def make() -> AsyncIterator[BaseCheckpointSaver[Any]]:
        await emptied(dsn, settings.postgres_schema)
        pool = await open_checkpointer_pool(dsn, settings)
        try:
            yield postgres_saver(pool, settings, saver_metrics(CollectorRegistry()))
        finally:
            await pool.close()

    return make


async def test_conformance_at_full_rollout_with_shards_equals_the_raw_saver(
    prepared: Settings, dsn: str
) -> None:
    """Every shard count passes LangGraph's conformance suite exactly as AsyncPostgresSaver."""
    raw = await run_conformance("raw", factory(dsn, prepared.replace(saver_shards=1)))
    for shards in (2, 5):
        routed = await run_conformance(
            f"{shards} shards", factory(dsn, prepared.replace(saver_shards=shards))
        )
        assert routed == raw


async def test_conformance_below_full_rollout_equals_the_in_memory_saver(
    prepared: Settings, dsn: str
) -> None:
    """At 0 % and 50 %, with shards or not, the router offers and passes what memory does."""

    async def memory() -> AsyncIterator[BaseCheckpointSaver[Any]]:
        yield InMemorySaver()

    expected = await run_conformance("memory", memory)
    for percent, shards in ((0.0, 1), (50.0, 1), (50.0, 3)):
        settings = prepared.replace(rollout_percent=percent, saver_shards=shards)
        assert await run_conformance(f"{percent}%", factory(dsn, settings)) == expected


def test_the_default_shard_count_is_half_the_pool_from_one_to_four() -> None:
    """``auto`` leaves half the pool to other users, and stops where a core is the limit."""
    by_pool = {size: Settings(pool_max_size=size).shards for size in (1, 2, 3, 4, 7, 8, 10, 50)}
    assert by_pool == {1: 1, 2: 1, 3: 1, 4: 2, 7: 3, 8: 4, 10: 4, 50: 4}
    assert Settings(pool_max_size=50, saver_shards=12).shards == 12


def test_placement_is_a_function_of_the_thread_id_alone() -> None:
    """Buckets and shards are stable hashes: the same in every process and after a restart."""
    assert bucket("thread-1") == bucket("thread-1")
    assert [shard(f"t{i}", 4) for i in range(8)] == [shard(f"t{i}", 4) for i in range(8)]
    placed = Placement(10.0)
    share = sum(placed.wants_postgres(f"t{i}") for i in range(10_000)) / 10_000
    assert 0.08 < share < 0.12
    assert {shard(f"t{i}", 4) for i in range(100)} == {0, 1, 2, 3}


def test_the_include_list_goes_to_postgres_whatever_the_percent() -> None:
    """Thread patterns and a flag in the run's config or metadata override a 0 % rollout."""
    placed = Placement(0.0, ("internal-*",), "canary_cohort")
    assert placed.wants_postgres("internal-42")
    assert not placed.wants_postgres("customer-42")
    assert placed.wants_postgres("customer-42", {"configurable": {"canary_cohort": True}})
    assert placed.wants_postgres("customer-42", {"metadata": {"canary_cohort": "yes"}})
    assert not placed.wants_postgres("customer-42", {"metadata": {"canary_cohort": ""}})


async def stored_threads(dsn: str, schema: str) -> set[str]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cursor = await conn.execute(f'SELECT DISTINCT thread_id FROM "{schema}".checkpoints')
        return {row[0] for row in await cursor.fetchall()}


async def test_changing_the_percent_moves_no_live_thread(prepared: Settings, dsn: str) -> None:
    """10 % -> 50 % -> 0 %: each thread keeps its saver, and PostgreSQL threads stay readable
    and resumable after a restart at 0 %."""
    threads = [f"wf-{i}" for i in range(40)]
    at_ten = prepared.replace(rollout_percent=10.0, saver_shards=2)
    async with build_checkpointer(at_ten, registry=CollectorRegistry()) as saver:
        graph = review_graph(saver)
        for thread in threads:  # each stops at its interrupt, waiting for an answer
            await graph.ainvoke({"n": 1, "ask": True}, config(thread))
        router = saver.inner
        assert isinstance(router, RoutingSaver)
        first = {t: router.saver_for(t) is not router.memory for t in threads}
    in_postgres = {t for t, postgres in first.items() if postgres}
    assert in_postgres == {t for t in threads if bucket(t) < 10.0}
    assert await stored_threads(dsn, prepared.postgres_schema) == in_postgres

    at_zero = prepared.replace(rollout_percent=0.0)
    async with build_checkpointer(at_zero, registry=CollectorRegistry()) as saver:
        graph = review_graph(saver)
        for thread in sorted(in_postgres):  # a restart at 0 %: still loaded and resumed
            state = await graph.aget_state(config(thread))
            assert state.next, thread
            await graph.ainvoke(Command(resume="approved"), config(thread))
            assert not (await graph.aget_state(config(thread))).next
        router = saver.inner
        assert isinstance(router, RoutingSaver)
        assert all(router.saver_for(t) is not router.memory for t in in_postgres)
        await graph.ainvoke({"n": 1}, config("new-at-zero"))
        assert router.saver_for("new-at-zero") is router.memory
    assert "new-at-zero" not in await stored_threads(dsn, prepared.postgres_schema)


async def test_a_live_memory_thread_stays_in_memory_when_the_percent_rises(
    prepared: Settings, dsn: str
) -> None:
    """A thread the rollout left in memory is still served from memory after the percent
    is raised in the same process: it is found where its checkpoints are."""
    pool = await open_checkpointer_pool(dsn, prepared)
    try:
        memory = InMemorySaver()
        shards = [AsyncPostgresSaver(conn=pool)]
        thread = next(f"t{i}" for i in range(1000) if 10.0 <= bucket(f"t{i}") < 50.0)
        low = routing_saver(
            shards=shards,
            memory=memory,
            placement=Placement(10.0),
            in_postgres=None,
            in_memory=lambda t: t in memory.storage,
        )
        cfg = root(thread)
        await low.aput(cfg, empty_checkpoint(), {}, {})
        high = routing_saver(
            shards=shards,
            memory=memory,
            placement=Placement(50.0),
            in_postgres=None,
            in_memory=lambda t: t in memory.storage,
        )
        assert await high.aroute(thread) is memory
        assert await high.aget_tuple(cfg) is not None
    finally:
        await pool.close()


async def test_concurrent_writes_to_one_thread_keep_their_order_under_shards(
    prepared: Settings, dsn: str
) -> None:
    """Many threads written at once over four shards: each thread's checkpoints form one
    chain, newest last, exactly as written."""
    settings = prepared.replace(saver_shards=4)
    async with build_checkpointer(settings, registry=CollectorRegistry()) as saver:
        graph = review_graph(saver)
        threads = [f"order-{i}" for i in range(24)]
        await asyncio.gather(*(graph.ainvoke({"n": 3}, config(t)) for t in threads))
        for thread in threads:
            history = [s async for s in graph.aget_state_history(config(thread))]
            ids = [s.config["configurable"]["checkpoint_id"] for s in history]
            assert ids == sorted(ids, reverse=True)
            parents = [s.parent_config for s in history]
            assert [p["configurable"]["checkpoint_id"] for p in parents[:-1] if p] == ids[1:]
        router = saver.inner
        assert isinstance(router, RoutingSaver)
        shards_used = {id(router.saver_for(t)) for t in threads}
        assert len(shards_used) == 4


async def test_a_failing_shard_fails_only_its_own_calls(prepared: Settings, dsn: str) -> None:
    """One shard whose connection is gone: its thread's call raises, the others' succeed."""
    pool = await open_checkpointer_pool(dsn, prepared)
    broken_conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True, row_factory=dict_row)
    try:
        healthy = AsyncPostgresSaver(conn=pool)
        broken = AsyncPostgresSaver(conn=broken_conn)
        router = routing_saver(
            shards=[healthy, broken],
            memory=None,
            placement=Placement(),
            in_postgres=None,
            in_memory=None,
        )
        on_broken = next(f"t{i}" for i in range(100) if shard(f"t{i}", 2) == 1)
        on_healthy = next(f"t{i}" for i in range(100) if shard(f"t{i}", 2) == 0)
        await broken_conn.close()
        with pytest.raises(psycopg.OperationalError):
            await router.aput(root(on_broken), empty_checkpoint(), {}, {})
        saved = await router.aput(root(on_healthy), empty_checkpoint(), {}, {})
        assert await router.aget_tuple(saved) is not None
    finally:
        await pool.close()


async def test_list_without_a_thread_merges_newest_first(prepared: Settings, dsn: str) -> None:
    """Across memory and PostgreSQL, an unfiltered list is newest first, with limit and before
    applied to the merged result."""
    settings = prepared.replace(rollout_percent=50.0, saver_shards=2)
    async with build_checkpointer(settings, registry=CollectorRegistry()) as saver:
        graph = review_graph(saver)
        threads = [f"list-{i}" for i in range(12)]
        for thread in threads:
            await graph.ainvoke({"n": 1}, config(thread))
        router = saver.inner
        assert isinstance(router, RoutingSaver)
        placed = {router.saver_for(t) is router.memory for t in threads}
        assert placed == {True, False}  # both places hold threads
        everything = [item async for item in saver.alist(None)]
        ids = [item.config["configurable"]["checkpoint_id"] for item in everything]
        assert ids == sorted(ids, reverse=True)
        assert {item.config["configurable"]["thread_id"] for item in everything} == set(threads)
        assert [i.config for i in [x async for x in saver.alist(None, limit=5)]] == [
            item.config for item in everything[:5]
        ]
        before = everything[6].config
        older = [item async for item in saver.alist(None, before=before)]
        assert [i.config for i in older] == [item.config for item in everything[7:]]


def test_a_bad_percent_or_shard_count_is_one_line(dsn: str) -> None:
    """Out of range or not a number: one line naming the setting, exit 2."""
    for env in (
        {"CHECKPOINT_EXPORTER_ROLLOUT_PERCENT": "101"},
        {"CHECKPOINT_EXPORTER_ROLLOUT_PERCENT": "ten"},
        {"CHECKPOINT_EXPORTER_SAVER_SHARDS": "0"},
        {"CHECKPOINT_EXPORTER_SAVER_SHARDS": "many"},
        {"CHECKPOINT_EXPORTER_SAVER_SHARDS": "11", "CHECKPOINT_EXPORTER_POOL_MAX_SIZE": "10"},
    ):
        result = subprocess.run(
            [sys.executable, "-m", "exporter", "serve"],
            env={"PATH": "/usr/bin:/bin", "POSTGRES_CONNECTION_STRING": dsn, **env},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        name = next(iter(env))
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1
        assert name in lines[0]


async def test_sync_calls_from_another_thread_are_routed_alike(
    prepared: Settings, dsn: str
) -> None:
    """graph.invoke in worker threads at 50 %: each thread lands where the async path would
    put it, and an unplaced thread's sync call on the event loop's thread is refused."""
    settings = prepared.replace(rollout_percent=50.0, saver_shards=2)
    async with build_checkpointer(settings, registry=CollectorRegistry()) as saver:
        graph = review_graph(saver)
        threads = [f"sync-{i}" for i in range(10)]
        for thread in threads:
            await asyncio.to_thread(graph.invoke, {"n": 1}, config(thread))
        router = saver.inner
        assert isinstance(router, RoutingSaver)
        for thread in threads:
            expected_postgres = bucket(thread) < 50.0
            assert (router.saver_for(thread) is not router.memory) is expected_postgres
            assert (await graph.aget_state(config(thread))).values["n"] >= 1
        stored = await stored_threads(dsn, settings.postgres_schema)
        assert stored == {t for t in threads if bucket(t) < 50.0}
        with pytest.raises(asyncio.InvalidStateError):
            router.route("never-seen")


async def test_only_postgres_threads_are_tracked_so_recovery_sees_no_false_failure(
    prepared: Settings, dsn: str
) -> None:
    """At 50 %, workflow_metadata holds exactly the PostgreSQL threads, and the recovery
    check of a restarted sidecar finds every one of them, failing none."""
    settings = prepared.replace(rollout_percent=50.0, saver_shards=2)
    threads = [f"tracked-{i}" for i in range(16)]
    async with build_checkpointer(settings, registry=CollectorRegistry()) as saver:
        graph = review_graph(saver)
        for thread in threads:  # interrupted: what a recovery check loads
            await graph.ainvoke({"n": 1, "ask": True}, config(thread))
        assert saver.tracker is not None
        assert await saver.tracker.flush()
    in_postgres = {t for t in threads if bucket(t) < 50.0}
    assert 0 < len(in_postgres) < len(threads)
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cursor = await conn.execute(
            f'SELECT thread_id FROM "{settings.postgres_schema}".workflow_metadata'
        )
        assert {row[0] for row in await cursor.fetchall()} == in_postgres
    report = await recovery_check(dsn, settings).run()
    assert (report.checked, report.failed) == (len(in_postgres), 0)
