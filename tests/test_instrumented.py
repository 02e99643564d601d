"""The instrumented proxy is indistinguishable from the saver it wraps, and counts exactly."""

from __future__ import annotations

import asyncio
import copy
import inspect
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest
from langgraph.checkpoint.base import BaseCheckpointSaver, empty_checkpoint
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.pregel._checkpoint import put_writes_accepts_task_path
from langgraph.types import Command
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from psycopg.rows import dict_row

from exporter.checkpointer.instrumented import (
    DELEGATED,
    FORWARDED,
    TIMED,
    InstrumentedSaver,
    Observation,
    instrument,
    instrumented_class,
    overrides,
)
from exporter.database import open_checkpointer_pool
from exporter.factory import prepare_schema
from exporter.settings import Settings
from tests.graphs import config, review_graph
from tests.waiting import eventually

SAVER_TYPES = (InMemorySaver, PostgresSaver, AsyncPostgresSaver)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """A sample's value; a missing series fails the test, naming it (absent is not zero)."""
    found = registry.get_sample_value(name, labels)
    assert found is not None, f"no series {name}{labels}"
    return found


def absent(registry: CollectorRegistry, name: str, **labels: str) -> bool:
    """Whether the series ``name{labels}`` is missing from ``registry``."""
    return registry.get_sample_value(name, labels) is None


@pytest.fixture
async def async_postgres(settings: Settings, dsn: str) -> AsyncIterator[AsyncPostgresSaver]:
    """A raw AsyncPostgresSaver on a pool, in a database with the schema set up."""
    await prepare_schema(dsn, settings)
    pool = await open_checkpointer_pool(dsn, settings)
    try:
        yield AsyncPostgresSaver(conn=pool)
    finally:
        await pool.close()


@pytest.fixture
def sync_postgres(settings: Settings, dsn: str) -> Iterator[PostgresSaver]:
    """A raw PostgresSaver on one connection, tables created in the public schema."""
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row, prepare_threshold=0) as conn:
        saver = PostgresSaver(conn)
        saver.setup()
        yield saver


def test_every_public_method_is_accounted_for() -> None:
    """Each public attribute of BaseCheckpointSaver is timed, forwarded or delegated."""
    public = {name for name in dir(BaseCheckpointSaver) if not name.startswith("_")}
    assert public == set(TIMED) | set(FORWARDED) | set(DELEGATED)


@pytest.mark.parametrize("saver_type", SAVER_TYPES, ids=lambda t: t.__name__)
def test_proxy_overrides_exactly_what_the_saver_overrides(saver_type: type[Any]) -> None:
    """Capability detection by class attribute sees the same answer on the proxy."""
    proxy_type = instrumented_class(saver_type)
    for name in (*TIMED, *FORWARDED):
        assert overrides(proxy_type, name) == overrides(saver_type, name), name


async def test_inherited_methods_stay_inherited(async_postgres: AsyncPostgresSaver) -> None:
    """acopy_thread, not overridden by AsyncPostgresSaver, is not overridden on the proxy."""
    wrapped = instrument(async_postgres, CollectorRegistry())
    assert "acopy_thread" not in type(wrapped).__dict__
    assert type(wrapped).acopy_thread is BaseCheckpointSaver.acopy_thread
    with pytest.raises(NotImplementedError):
        await async_postgres.acopy_thread("a", "b")
    with pytest.raises(NotImplementedError):
        await wrapped.acopy_thread("a", "b")


async def test_signatures_and_kinds_match(async_postgres: AsyncPostgresSaver) -> None:
    """Every method keeps its real signature and stays a coroutine or (async) generator."""
    wrapped = instrument(async_postgres, CollectorRegistry())
    for name in (*TIMED, *FORWARDED):
        if name in type(wrapped).__dict__:
            ours, theirs = getattr(wrapped, name), getattr(async_postgres, name)
            assert inspect.signature(ours) == inspect.signature(theirs), name
    assert put_writes_accepts_task_path(wrapped.aput_writes)
    assert put_writes_accepts_task_path(wrapped.put_writes)
    assert inspect.isasyncgenfunction(type(wrapped).alist)
    assert inspect.isgeneratorfunction(type(wrapped).list)
    assert inspect.iscoroutinefunction(type(wrapped).aput)


async def test_versions_keep_the_savers_format(async_postgres: AsyncPostgresSaver) -> None:
    """get_next_version is forwarded: PostgreSQL's string versions, not the base's integers."""
    wrapped = instrument(async_postgres, CollectorRegistry())
    version = wrapped.get_next_version(None, None)
    assert isinstance(version, str)
    assert version.split(".")[0] == async_postgres.get_next_version(None, None).split(".")[0]
    assert wrapped.get_next_version(version, None) > version


def test_serde_and_config_specs_delegate() -> None:
    """serde and config_specs are the inner saver's; the serializer keeps its class."""
    inner = InMemorySaver()
    wrapped = instrument(inner, CollectorRegistry())
    assert wrapped.serde is inner.serde
    assert isinstance(wrapped.serde, JsonPlusSerializer)
    assert type(wrapped.serde).__name__ == "JsonPlusSerializer"
    assert wrapped.config_specs == inner.config_specs


async def _transcript(saver: BaseCheckpointSaver[Any], prefix: str) -> dict[str, Any]:
    """Run completion, interrupt + resume and a failing node; describe what was stored."""
    graph = review_graph(saver)
    out: dict[str, Any] = {}
    out["done"] = await graph.ainvoke({"n": 1}, config(f"{prefix}done"))
    paused = await graph.ainvoke({"n": 2, "ask": True}, config(f"{prefix}paused"))
    out["interrupt"] = [i.value for i in paused["__interrupt__"]]
    out["resumed"] = await graph.ainvoke(Command(resume="yes"), config(f"{prefix}paused"))
    with pytest.raises(ValueError, match="negative input -1") as failure:
        await graph.ainvoke({"n": -1}, config(f"{prefix}failed"))
    out["error"] = (type(failure.value), str(failure.value))
    for name in ("done", "paused", "failed"):
        history = [s async for s in graph.aget_state_history(config(f"{prefix}{name}"))]
        out[f"history_{name}"] = [
            (
                s.values,
                s.next,
                s.metadata["step"] if s.metadata else None,
                [t.error for t in s.tasks],
            )
            for s in history
        ]
    latest = await saver.aget_tuple(config(f"{prefix}done"))
    assert latest is not None
    out["version_types"] = {
        k: type(v).__name__ for k, v in latest.checkpoint["channel_versions"].items()
    }
    return out


@pytest.mark.parametrize("kind", ["memory", "postgres"])
async def test_graphs_behave_identically(
    kind: str, async_postgres: AsyncPostgresSaver, settings: Settings, dsn: str
) -> None:
    """Results, interrupts, resumes, node errors and history are the same through the proxy."""
    if kind == "memory":
        raw: BaseCheckpointSaver[Any] = InMemorySaver()
        inner: BaseCheckpointSaver[Any] = InMemorySaver()
    else:
        raw = async_postgres
        pool = await open_checkpointer_pool(dsn, settings)
        inner = AsyncPostgresSaver(conn=pool)
    try:
        expected = await _transcript(raw, "raw-")
        actual = await _transcript(instrument(inner, CollectorRegistry()), "wrapped-")
    finally:
        if kind == "postgres":
            await pool.close()
    assert actual == expected
    if kind == "postgres":
        assert set(expected["version_types"].values()) == {"str"}
        async with await psycopg.AsyncConnection.connect(
            dsn, options=f"-c search_path={settings.postgres_schema}"
        ) as conn:
            for table in ("checkpoints", "checkpoint_blobs", "checkpoint_writes"):
                cursor = await conn.execute(
                    f"SELECT split_part(thread_id, '-', 1) AS side, count(*) FROM {table} "
                    "GROUP BY 1 ORDER BY 1"
                )
                counts: dict[str, int] = dict(await cursor.fetchall())
                assert counts["raw"] == counts["wrapped"] > 0, table


def _blob_checkpoint(step: int) -> tuple[Any, dict[str, Any]]:
    checkpoint: Any = empty_checkpoint()
    values = {"notes": [f"note {step}"] * 20, "count": step}
    checkpoint["channel_values"] = values
    return checkpoint, values


async def test_metrics_are_exact_after_a_known_sequence(
    async_postgres: AsyncPostgresSaver, registry: CollectorRegistry
) -> None:
    """Counts, errors, in-flight, lock waits and payload bytes match the calls made."""
    observed: list[Observation] = []
    wrapped = instrument(async_postgres, registry, observer=observed.append)
    serde = JsonPlusSerializer()
    cfg: Any = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
    expected_put_bytes = 0
    for step in range(3):
        checkpoint, values = _blob_checkpoint(step)
        versions = {"notes": wrapped.get_next_version(None, None), "count": 1}
        cfg = await wrapped.aput(cfg, checkpoint, {"source": "loop", "step": step}, versions)
        expected_put_bytes += len(serde.dumps_typed(values["notes"])[1])
    await wrapped.aput_writes(cfg, [("notes", ["w1"]), ("count", 7)], "task-1")
    await wrapped.aput_writes(cfg, [("notes", ["w2"])], "task-2")
    broken: Any = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
    with pytest.raises(KeyError):
        await wrapped.aput_writes(broken, [("notes", ["w3"])], "task-3")
    for _ in range(3):
        assert await wrapped.aget_tuple({"configurable": {"thread_id": "t"}}) is not None
    assert await wrapped.aget_tuple({"configurable": {"thread_id": "missing"}}) is None
    listed = [item async for item in wrapped.alist({"configurable": {"thread_id": "t"}})]
    assert len(listed) == 3

    labels = {"saver": "AsyncPostgresSaver"}
    total = "langgraph_checkpointer_operations_total"
    assert sample(registry, total, operation="put", **labels) == 3
    assert sample(registry, total, operation="put_writes", **labels) == 3
    assert sample(registry, total, operation="get_tuple", **labels) == 4
    assert sample(registry, total, operation="list", **labels) == 1
    assert (
        sample(
            registry,
            "langgraph_checkpointer_operation_errors_total",
            operation="put_writes",
            error="KeyError",
            **labels,
        )
        == 1
    )
    assert absent(
        registry,
        "langgraph_checkpointer_operation_errors_total",
        operation="put",
        error="KeyError",
        **labels,
    )
    duration = "langgraph_checkpointer_operation_duration_seconds_count"
    assert sample(registry, duration, operation="put", **labels) == 3
    for operation in ("put", "put_writes", "get_tuple", "list"):
        assert (
            sample(
                registry,
                "langgraph_checkpointer_operations_in_flight",
                operation=operation,
                **labels,
            )
            == 0
        )
    # One lock acquisition per database round: aput, the two good aput_writes, 4 loads, 1 list.
    lock = "langgraph_checkpointer_lock_wait_seconds_count"
    assert sample(registry, lock, operation="put", **labels) == 3
    assert sample(registry, lock, operation="put_writes", **labels) == 2
    assert sample(registry, lock, operation="get_tuple", **labels) == 4
    assert sample(registry, "langgraph_checkpointer_lock_waiters", **labels) == 0
    payload = "langgraph_checkpointer_serialized_bytes"
    assert sample(registry, payload + "_sum", operation="put", **labels) == expected_put_bytes
    assert sample(registry, payload + "_count", operation="put", **labels) == 3
    assert sample(registry, payload + "_count", operation="get_tuple", **labels) == 3
    assert [o.operation for o in observed].count("put") == 3
    assert [o.error for o in observed if o.error] == ["KeyError"]
    assert wrapped.last_error is not None
    assert wrapped.last_error.operation == "put_writes"


async def test_exceptions_and_results_pass_through_untouched(registry: CollectorRegistry) -> None:
    """The proxy returns the inner saver's very objects and re-raises its very exception."""
    failure = ConnectionError("database went away")
    result = object()

    class Flaky(InMemorySaver):
        async def aget_tuple(self, config: Any) -> Any:
            if config["configurable"]["thread_id"] == "bad":
                raise failure
            return result

    wrapped = instrument(Flaky(), registry)
    assert await wrapped.aget_tuple(config("good")) is result
    with pytest.raises(ConnectionError) as caught:
        await wrapped.aget_tuple(config("bad"))
    assert caught.value is failure
    assert (
        sample(
            registry,
            "langgraph_checkpointer_operation_errors_total",
            operation="get_tuple",
            saver="Flaky",
            error="ConnectionError",
        )
        == 1
    )


async def test_async_list_records_and_releases_the_lock_when_stopped_early(
    async_postgres: AsyncPostgresSaver, registry: CollectorRegistry
) -> None:
    """Closing alist early records it once and frees the saver's lock at once."""
    wrapped = instrument(async_postgres, registry)
    graph = review_graph(wrapped)
    await graph.ainvoke({"n": 1}, config("t"))
    listing = wrapped.alist(config("t"))
    assert await anext(listing) is not None
    in_flight = "langgraph_checkpointer_operations_in_flight"
    labels = {"operation": "list", "saver": "AsyncPostgresSaver"}
    assert sample(registry, in_flight, **labels) == 1
    await listing.aclose()  # type: ignore[attr-defined]
    assert sample(registry, "langgraph_checkpointer_operations_total", **labels) == 1
    assert sample(registry, in_flight, **labels) == 0
    assert await asyncio.wait_for(wrapped.aget_tuple(config("t")), timeout=5) is not None


async def test_async_list_abandoned_in_a_loop_is_still_recorded(
    registry: CollectorRegistry,
) -> None:
    """Breaking out of ``async for`` records the listing once the generator is finalised."""
    wrapped = instrument(InMemorySaver(), registry)
    graph = review_graph(wrapped)
    await graph.ainvoke({"n": 1}, config("t"))
    async for _ in wrapped.alist(config("t")):
        break
    labels = {"operation": "list", "saver": "InMemorySaver"}
    total = "langgraph_checkpointer_operations_total"
    # The event loop closes the abandoned generator in a task of its own, soon after.
    await eventually(lambda: registry.get_sample_value(total, labels) != 0)
    assert sample(registry, total, **labels) == 1


def test_sync_list_stopped_early_is_recorded(
    sync_postgres: PostgresSaver, registry: CollectorRegistry
) -> None:
    """A sync listing closed after one item is recorded, and the connection is usable after."""
    wrapped = instrument(sync_postgres, registry)
    graph = review_graph(wrapped)
    graph.invoke({"n": 1}, config("t"))
    listing = wrapped.list(config("t"))
    next(listing)
    listing.close()  # type: ignore[attr-defined]
    labels = {"operation": "list", "saver": "PostgresSaver"}
    assert sample(registry, "langgraph_checkpointer_operations_total", **labels) == 1
    assert wrapped.get_tuple(config("t")) is not None
    assert (
        sample(
            registry,
            "langgraph_checkpointer_lock_wait_seconds_count",
            operation="get_tuple",
            saver="PostgresSaver",
        )
        >= 1
    )


async def test_copy_shares_the_saver_and_metrics(registry: CollectorRegistry) -> None:
    """copy.copy of the proxy is a working proxy of the same saver, counting in one place."""
    wrapped = instrument(InMemorySaver(), registry)
    clone = copy.copy(wrapped)
    assert type(clone) is type(wrapped)
    assert clone.inner is wrapped.inner
    await review_graph(clone).ainvoke({"n": 1}, config("t"))
    assert await wrapped.aget_tuple(config("t")) is not None
    assert (
        sample(
            registry,
            "langgraph_checkpointer_operations_total",
            operation="put",
            saver="InMemorySaver",
        )
        > 0
    )


async def test_with_allowlist_rewraps_the_inner_savers_clone(
    async_postgres: AsyncPostgresSaver, registry: CollectorRegistry
) -> None:
    """A strict serializer's allowlist reaches the inner saver, and the clone stays measured."""
    async_postgres.serde = JsonPlusSerializer(allowed_msgpack_modules=None)
    wrapped = instrument(async_postgres, registry)
    allowed = wrapped.with_allowlist([("tests", "graphs", "State")])
    assert isinstance(allowed, InstrumentedSaver)
    assert allowed.inner is not async_postgres
    assert isinstance(allowed.serde, JsonPlusSerializer)
    assert ("tests", "graphs", "State") in allowed.serde._allowed_msgpack_modules  # type: ignore[operator]
    await review_graph(allowed).ainvoke({"n": 1}, config("t"))
    assert (
        sample(
            registry,
            "langgraph_checkpointer_serialized_bytes_count",
            operation="put_writes",
            saver="AsyncPostgresSaver",
        )
        > 0
    )


STRICT_SCRIPT = textwrap.dedent("""
    import dataclasses, sys
    from typing import TypedDict
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.graph import StateGraph, START
    from prometheus_client import CollectorRegistry
    from exporter import instrument

    @dataclasses.dataclass
    class Item:
        name: str

    class S(TypedDict, total=False):
        item: Item
        count: int

    def node(s):
        return {"item": Item("bolt"), "count": s.get("count", 0) + 1}

    saver = InMemorySaver()
    if sys.argv[1] == "wrapped":
        saver = instrument(saver, CollectorRegistry())
    graph = StateGraph(S)
    graph.add_node("node", node)
    graph.add_edge(START, "node")
    app = graph.compile(checkpointer=saver)
    cfg = {"configurable": {"thread_id": "t"}}
    app.invoke({"count": 0}, cfg)
    app.invoke(None, cfg)
    print(type(app.get_state(cfg).values["item"]).__name__)
""")


def test_strict_msgpack_restores_types_through_the_proxy() -> None:
    """Under LANGGRAPH_STRICT_MSGPACK, resumed state holds the dataclass, not a dict."""
    results = {}
    for mode in ("raw", "wrapped"):
        done = subprocess.run(
            [sys.executable, "-c", STRICT_SCRIPT, mode],
            capture_output=True,
            text=True,
            env={"LANGGRAPH_STRICT_MSGPACK": "true", "PATH": ""},
            timeout=120,
            check=True,
        )
        results[mode] = done.stdout.strip()
    assert results == {"raw": "Item", "wrapped": "Item"}


async def test_concurrent_operations_queue_on_the_lock(
    async_postgres: AsyncPostgresSaver, registry: CollectorRegistry
) -> None:
    """Concurrent loads on one AsyncPostgresSaver wait for its lock, and that wait is measured."""
    wrapped = instrument(async_postgres, registry)
    await review_graph(wrapped).ainvoke({"n": 1}, config("t"))
    before = sample(
        registry,
        "langgraph_checkpointer_lock_wait_seconds_sum",
        operation="get_tuple",
        saver="AsyncPostgresSaver",
    )
    await asyncio.gather(*(wrapped.aget_tuple(config("t")) for _ in range(20)))
    waited = (
        sample(
            registry,
            "langgraph_checkpointer_lock_wait_seconds_sum",
            operation="get_tuple",
            saver="AsyncPostgresSaver",
        )
        - before
    )
    took = sample(
        registry,
        "langgraph_checkpointer_operation_duration_seconds_sum",
        operation="get_tuple",
        saver="AsyncPostgresSaver",
    )
    assert 0 < waited < took
    assert sample(registry, "langgraph_checkpointer_lock_waiters", saver="AsyncPostgresSaver") == 0


async def test_thread_ids_are_exemplars_never_labels(registry: CollectorRegistry) -> None:
    """The thread id shows only as an OpenMetrics exemplar, never in the text format."""
    wrapped = instrument(InMemorySaver(), registry)
    await review_graph(wrapped).ainvoke({"n": 1}, config("thread-0042"))
    assert b"thread-0042" not in generate_latest(registry)
    openmetrics = generate_openmetrics(registry).decode()  # type: ignore[no-untyped-call]
    exemplar_lines = [line for line in openmetrics.splitlines() if "thread-0042" in line]
    assert exemplar_lines
    assert all('# {thread_id="thread-0042"}' in line for line in exemplar_lines)
    assert all(
        line.startswith("langgraph_checkpointer_operation_duration_seconds_bucket")
        for line in exemplar_lines
    )


def test_instrumenting_twice_returns_the_same_proxy(registry: CollectorRegistry) -> None:
    """instrument() is idempotent: a proxy is never wrapped in a second proxy."""
    wrapped = instrument(InMemorySaver(), registry)
    assert instrument(wrapped, registry) is wrapped


async def test_cancelled_operations_count_as_cancelled(registry: CollectorRegistry) -> None:
    """A cancelled call is counted once, as error CancelledError, and leaves nothing in flight."""
    started = asyncio.Event()

    class Slow(InMemorySaver):
        async def aget_tuple(self, config: Any) -> Any:
            started.set()
            await asyncio.sleep(60)

    wrapped = instrument(Slow(), registry)
    task = asyncio.create_task(wrapped.aget_tuple(config("t")))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    labels = {"operation": "get_tuple", "saver": "Slow"}
    assert sample(registry, "langgraph_checkpointer_operations_total", **labels) == 1
    assert (
        sample(
            registry,
            "langgraph_checkpointer_operation_errors_total",
            error="CancelledError",
            **labels,
        )
        == 1
    )
    assert sample(registry, "langgraph_checkpointer_operations_in_flight", **labels) == 0
