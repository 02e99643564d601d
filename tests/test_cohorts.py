"""Cohorts in metrics: behind the routing saver each call is labelled with the saver that served
it, and the rollout's share and threads per backend are exported, on real graphs and scrapes."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import psycopg
import pytest
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.types import Command
from prometheus_client import CollectorRegistry

from exporter import InstrumentedSaver, Sidecar, build_checkpointer, instrument
from exporter.checkpointer.cohorts import Cohorts
from exporter.checkpointer.instrumented import TIMED, overrides
from exporter.checkpointer.metrics import saver_metrics
from exporter.checkpointer.placement import Placement, bucket, shard
from exporter.checkpointer.routing import RoutingSaver, routing_class, routing_saver
from exporter.settings import Settings
from tests.graphs import config, review_graph
from tests.ports import refused_port
from tests.samples import Samples, parse_metrics, samples_of, value

POSTGRES, MEMORY = "AsyncPostgresSaver", "InMemorySaver"
ROUTER = "RoutingInMemorySaverAsyncPostgresSaver"
OPERATIONS = "langgraph_checkpointer_operations_total"


@asynccontextmanager
async def scraped(settings: Settings) -> AsyncIterator[tuple[InstrumentedSaver[Any], Any]]:
    """The factory's saver for ``settings`` with an in-process sidecar (no collectors), and a
    function scraping the sidecar's /metrics over HTTP."""
    settings = settings.replace(canary_interval=0.0)
    registry = CollectorRegistry()
    async with (
        build_checkpointer(settings, registry=registry) as saver,
        Sidecar(settings, checkpointer=saver, registry=registry, collectors=()) as sidecar,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
    ):

        async def scrape() -> Samples:
            async with http.get(sidecar.url + settings.telemetry_path) as response:
                assert response.status == 200
                return parse_metrics(await response.text())

        yield saver, scrape


def by_saver(samples: Samples, name: str, **labels: str) -> dict[str, float]:
    """The samples of ``name`` matching ``labels``, by their ``saver`` label."""
    found: dict[str, float] = {}
    for (sample, pairs), number in samples.items():
        keyed = dict(pairs)
        if sample == name and all(keyed.get(k) == v for k, v in labels.items()):
            found[keyed["saver"]] = found.get(keyed["saver"], 0.0) + number
    return found


async def postgres_checkpoints(dsn: str, schema: str, threads: list[str]) -> int:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cursor = await conn.execute(
            f'SELECT count(*) FROM "{schema}".checkpoints WHERE thread_id = ANY(%s)', (threads,)
        )
        row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


def memory_checkpoints(memory: Any) -> int:
    return sum(len(per_ns) for thread in memory.storage.values() for per_ns in thread.values())


def router_of(saver: InstrumentedSaver[Any]) -> RoutingSaver:
    router = saver.inner
    assert isinstance(router, RoutingSaver)
    return router


async def test_a_graph_at_half_rollout_shows_both_cohorts_in_a_real_scrape(
    settings: Settings, dsn: str
) -> None:
    """At 50 % over two shards, put calls per cohort equal the checkpoints each backend holds,
    every timed figure follows its cohort (lock waits included) and the router's own label
    counts nothing a single saver served."""
    threads = [f"half-{i}" for i in range(16)]
    in_postgres = [t for t in threads if bucket(t) < 50.0]
    assert 0 < len(in_postgres) < len(threads)
    async with scraped(settings.replace(rollout_percent=50.0, saver_shards=2)) as (saver, scrape):
        graph = review_graph(saver)
        for thread in threads:  # stop at the interrupt, then resume: loads, saves, writes
            await graph.ainvoke({"n": 1, "ask": True}, config(thread))
            await graph.ainvoke(Command(resume="yes"), config(thread))
        samples = await scrape()
        router = router_of(saver)
        assert router.memory is not None
        stored = {
            POSTGRES: await postgres_checkpoints(dsn, settings.postgres_schema, threads),
            MEMORY: memory_checkpoints(router.memory),
        }
    assert stored[POSTGRES] > 0
    assert stored[MEMORY] > 0
    puts = by_saver(samples, OPERATIONS, operation="put")
    assert puts == {**stored, ROUTER: 0.0}
    durations = by_saver(samples, "langgraph_checkpointer_operation_duration_seconds_count")
    assert by_saver(samples, "langgraph_checkpointer_operation_duration_seconds_count",
                    operation="put") == puts  # fmt: skip
    assert durations[ROUTER] == 0
    # Lock waits count for the operation that waited (the in-memory saver takes no lock).
    waits = by_saver(samples, "langgraph_checkpointer_lock_wait_seconds_count", operation="put")
    assert waits == {POSTGRES: stored[POSTGRES], MEMORY: 0.0, ROUTER: 0.0}
    sizes = by_saver(samples, "langgraph_checkpointer_serialized_bytes_count", operation="put")
    assert sizes[POSTGRES] > 0
    assert sizes[MEMORY] > 0
    assert sizes[ROUTER] == 0
    loads = by_saver(samples, OPERATIONS, operation="get_tuple")
    # Each run loads its thread once, and the first load of a thread is the one that places it.
    assert loads == {POSTGRES: 2.0 * len(in_postgres), MEMORY: 2.0 * (16 - len(in_postgres)),
                     ROUTER: 0.0}  # fmt: skip
    assert set(by_saver(samples, "langgraph_checkpointer_operations_in_flight").values()) == {0.0}
    assert by_saver(samples, "langgraph_checkpointer_operation_errors_total") == {}
    assert value(samples, "langgraph_checkpointer_rollout_ratio") == 0.5
    threads_by = {
        backend: value(samples, "langgraph_checkpointer_rollout_threads", backend=backend)
        for backend in ("postgres", "memory", "fallback")
    }
    assert threads_by == {
        "postgres": len(in_postgres),
        "memory": len(threads) - len(in_postgres),
        "fallback": 0,
    }


async def test_both_cohorts_are_exported_as_zero_before_the_first_call(
    settings: Settings,
) -> None:
    """Every operation the router times has a series for each cohort and for the router itself
    from the start, and every backend's thread count is there, at zero."""
    async with scraped(settings.replace(rollout_percent=10.0)) as (_, scrape):
        samples = await scrape()
    timed = {
        operation
        for name, (operation, _) in TIMED.items()
        if overrides(InMemorySaver, name) and overrides(AsyncPostgresSaver, name)
    }
    for saver in (POSTGRES, MEMORY, ROUTER):
        operations = {
            dict(pairs)["operation"]
            for name, pairs in samples
            if name == OPERATIONS and dict(pairs)["saver"] == saver
        }
        assert operations >= timed, saver
        assert set(by_saver(samples, OPERATIONS).values()) == {0.0}
    assert value(samples, "langgraph_checkpointer_rollout_ratio") == 0.1
    for backend in ("postgres", "memory", "fallback"):
        assert value(samples, "langgraph_checkpointer_rollout_threads", backend=backend) == 0


async def test_a_plain_saver_keeps_its_series(settings: Settings) -> None:
    """At 100 % with one shard nothing routes: every series names AsyncPostgresSaver as before,
    the ratio says 1 and no thread count is made up."""
    async with scraped(settings.replace(saver_shards=1)) as (saver, scrape):
        assert saver.saver_name == POSTGRES
        await review_graph(saver).ainvoke({"n": 1}, config("plain"))
        samples = await scrape()
    savers = {dict(pairs).get("saver") for name, pairs in samples if "saver" in dict(pairs)}
    assert savers == {POSTGRES}
    assert by_saver(samples, OPERATIONS, operation="put") == {POSTGRES: 5.0}
    assert value(samples, "langgraph_checkpointer_rollout_ratio") == 1.0
    assert not any(name == "langgraph_checkpointer_rollout_threads" for name, _ in samples)


@pytest.mark.parametrize("fallback", [True, False], ids=["fallback", "memory switch"])
async def test_memory_alone_counts_its_threads(settings: Settings, fallback: bool) -> None:
    """The fallback to memory on start-up shows its threads as their own state; the emergency
    switch (USE_POSTGRES_SAVER=false) as memory threads. Neither sends any to PostgreSQL."""
    if fallback:
        url = f"postgresql://claude:pw@127.0.0.1:{refused_port()}/claude_studio"
        settings = settings.replace(postgres_connection_string=url, fallback_to_memory=True)
    else:
        settings = settings.replace(use_postgres_saver=False)
    async with scraped(settings) as (saver, scrape):
        assert saver.backend is not None
        assert (saver.backend.fallback_reason is not None) is fallback
        for thread in ("a", "b", "c"):
            await review_graph(saver).ainvoke({"n": 1}, config(thread))
        samples = await scrape()
    held = "fallback" if fallback else "memory"
    assert {
        backend: value(samples, "langgraph_checkpointer_rollout_threads", backend=backend)
        for backend in ("postgres", "memory", "fallback")
    } == {"postgres": 0, "memory": 0, "fallback": 0, held: 3}
    assert value(samples, "langgraph_checkpointer_rollout_ratio") == 0.0
    assert by_saver(samples, OPERATIONS, operation="put") == {MEMORY: 15.0}


async def test_a_call_no_one_saver_serves_keeps_the_routers_label(settings: Settings) -> None:
    """A list across both stores is counted under the router; a list of one thread under the
    saver holding it."""
    threads = [f"list-{i}" for i in range(8)]
    async with scraped(settings.replace(rollout_percent=50.0)) as (saver, scrape):
        graph = review_graph(saver)
        for thread in threads:
            await graph.ainvoke({"n": 1}, config(thread))
        before = by_saver(await scrape(), OPERATIONS, operation="list")
        assert len([item async for item in saver.alist(None)]) == 5 * len(threads)
        in_postgres = next(t for t in threads if bucket(t) < 50.0)
        assert len([item async for item in saver.alist(config(in_postgres))]) == 5
        after = by_saver(await scrape(), OPERATIONS, operation="list")
    assert {saver: after[saver] - before[saver] for saver in after} == {
        ROUTER: 1.0,
        POSTGRES: 1.0,
        MEMORY: 0.0,
    }


async def test_sync_calls_from_worker_threads_are_labelled_like_async_ones(
    settings: Settings,
) -> None:
    """graph.invoke in worker threads at 50 %: each cohort counts its own threads' saves; a
    sync call on the event loop's thread that cannot place its thread fails under the router."""
    threads = [f"sync-{i}" for i in range(10)]
    in_postgres = [t for t in threads if bucket(t) < 50.0]
    async with scraped(settings.replace(rollout_percent=50.0)) as (saver, scrape):
        graph = review_graph(saver)
        for thread in threads:
            await asyncio.to_thread(graph.invoke, {"n": 1}, config(thread))
        with pytest.raises(asyncio.InvalidStateError):
            saver.get_tuple(config("never-seen"))
        samples = await scrape()
    assert by_saver(samples, OPERATIONS, operation="put") == {
        POSTGRES: 5.0 * len(in_postgres),
        MEMORY: 5.0 * (len(threads) - len(in_postgres)),
        ROUTER: 0.0,
    }
    errors = by_saver(samples, "langgraph_checkpointer_operation_errors_total")
    assert errors == {ROUTER: 1.0}
    assert set(by_saver(samples, "langgraph_checkpointer_operations_in_flight").values()) == {0.0}


# The router's side of the protocol, over in-memory savers standing in for shards.


def shards_router(count: int) -> RoutingSaver:
    return routing_saver(
        shards=[InMemorySaver() for _ in range(count)],
        memory=None,
        placement=Placement(),
        in_postgres=None,
        in_memory=None,
    )


def test_served_by_names_the_saver_of_the_thread_a_call_names() -> None:
    """Configs, thread ids, a copy's source and a prune's threads name their shard; a prune
    across shards and a list across threads name none; wrong arguments never raise."""
    router = shards_router(2)
    one = next(f"t{i}" for i in range(100) if shard(f"t{i}", 2) == 0)
    other = next(f"t{i}" for i in range(100) if shard(f"t{i}", 2) == 1)
    first, second = router.shards
    cases: list[tuple[str, tuple[Any, ...], dict[str, Any], Any]] = [
        ("aput", (config(one), empty_checkpoint(), {}, {}), {}, first),
        ("get_tuple", (), {"config": config(other)}, second),
        ("aget_delta_channel_history", (), {"config": config(one), "channels": []}, first),
        ("alist", (config(other),), {}, second),
        ("alist", (None,), {}, first),  # one store: the shards share one database
        ("adelete_thread", (other,), {}, second),
        ("copy_thread", (), {"source_thread_id": one, "target_thread_id": other}, first),
        ("aprune", ([one, one],), {}, first),
        ("aprune", ([one, other],), {}, None),
        ("prune", (iter([one]),), {}, None),  # an iterator is not used up
        ("aget_tuple", (None,), {}, None),
        ("aget_tuple", ({"configurable": 3},), {}, None),
        ("put", ("not a config",), {}, None),
    ]
    for method, args, kwargs, expected in cases:
        assert router.served_by(method, args, kwargs) is expected, (method, args, kwargs)
        assert router.place(method, args, kwargs) is expected, (method, args, kwargs)


async def test_placements_are_counted_as_far_as_they_are_remembered() -> None:
    """The counts follow the remembered placements: a new thread adds one, a forgotten one (or
    one pushed out by newer threads) takes it away."""
    memory = InMemorySaver()
    router = routing_class([InMemorySaver])(
        shards=[InMemorySaver()],
        memory=memory,
        placement=Placement(50.0),
        in_postgres=None,
        in_memory=lambda t: t in memory.storage,
        remembered=4,
    )
    threads = [f"p{i}" for i in range(6)]
    for thread in threads[:3]:
        await router.aplace("aget_tuple", (config(thread),), {})
    expected = {"postgres": sum(bucket(t) < 50 for t in threads[:3])}
    assert router.placed() == {**expected, "memory": 3 - expected["postgres"]}
    router.forget(threads[0])
    assert sum(router.placed().values()) == 2
    for thread in threads:
        router.place("get_tuple", (config(thread),), {})
    assert sum(router.placed().values()) == 4


def test_the_rollout_figures_go_with_the_saver_holding_them() -> None:
    """Exported while the saver holding them lives; the newest checkpointer's ratio, threads
    added up; gone with the saver."""
    registry = CollectorRegistry()
    metrics = saver_metrics(registry)
    saver = instrument(InMemorySaver(), registry)
    assert not any(n.startswith("langgraph_checkpointer_rollout") for n, _ in _scrape(registry))
    older, newer = Cohorts(10.0, lambda: {"memory": 2}), Cohorts(50.0, lambda: {"postgres": 1})
    saver.cohorts = newer
    metrics.track_cohorts(older)
    metrics.track_cohorts(newer)
    samples = _scrape(registry)
    assert value(samples, "langgraph_checkpointer_rollout_ratio") == 0.5
    assert value(samples, "langgraph_checkpointer_rollout_threads", backend="memory") == 2
    assert value(samples, "langgraph_checkpointer_rollout_threads", backend="postgres") == 1
    del older
    del saver
    gc.collect()
    assert value(_scrape(registry), "langgraph_checkpointer_rollout_threads", backend="memory") == 0
    del newer
    gc.collect()
    assert not any(n.startswith("langgraph_checkpointer_rollout") for n, _ in _scrape(registry))


def _scrape(registry: CollectorRegistry) -> Samples:
    return samples_of(registry.collect())
