"""Without any application change, each workflow's stored status is what its run did.

Real graphs on the PostgreSQL saver from ``build_checkpointer``, sync and async: linear,
conditional branches, a subgraph, ``Send`` fan-out, a join, static breakpoints before and
after, ``interrupt()``, a node that raises, a cancelled run, and the resume of each. No run
is wrapped in ``tracker.run()`` and no mark is called.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import psycopg
import pytest
from langgraph.graph import StateGraph
from langgraph.types import Command
from prometheus_client import CollectorRegistry

from exporter import InstrumentedSaver, build_checkpointer
from exporter.settings import Settings
from tests.test_progress import (
    Flaky,
    State,
    add,
    asking,
    branches,
    failing,
    fan_out,
    joined,
    linear,
    slow,
    with_subgraph,
)
from tests.waiting import eventually

MODES = ["sync", "async"]


@pytest.fixture
async def saver(settings: Settings) -> AsyncIterator[InstrumentedSaver]:
    async with build_checkpointer(
        settings.replace(tracking_flush_interval=0.05), registry=CollectorRegistry()
    ) as built:
        yield built


class Workflow:
    """One thread of a graph on the tracked saver; :meth:`status` is its stored row."""

    def __init__(
        self,
        saver: InstrumentedSaver,
        dsn: str,
        settings: Settings,
        graph: StateGraph[Any],
        mode: str,
        name: str,
        **compile_args: Any,
    ) -> None:
        self.saver, self.dsn, self.schema, self.mode = saver, dsn, settings.postgres_schema, mode
        self.app = graph.compile(checkpointer=saver, **compile_args)
        self.thread = f"{name}-{mode}"
        self.config: Any = {"configurable": {"thread_id": self.thread}}

    async def run(self, value: Any, **kwargs: Any) -> None:
        try:
            if self.mode == "sync":
                await asyncio.to_thread(lambda: self.app.invoke(value, self.config, **kwargs))
            else:
                await self.app.ainvoke(value, self.config, **kwargs)
        except ValueError:
            pass

    async def status(self) -> tuple[str, str | None]:
        tracker = self.saver.tracker
        assert tracker is not None
        assert await tracker.flush()
        async with await psycopg.AsyncConnection.connect(self.dsn) as conn:
            cursor = await conn.execute(
                f"SELECT status, last_error_class FROM {self.schema}.workflow_metadata "
                "WHERE thread_id = %s",
                (self.thread,),
            )
            row = await cursor.fetchone()
        assert row is not None, f"no row for {self.thread}"
        return row[0], row[1]


Scenario = Callable[[Workflow], Awaitable[None]]


@pytest.mark.parametrize("mode", MODES)
async def test_a_graph_that_reaches_end_is_completed(
    saver: InstrumentedSaver, dsn: str, settings: Settings, mode: str
) -> None:
    for name, graph in (("linear", linear()), ("branches", branches()), ("sub", with_subgraph())):
        flow = Workflow(saver, dsn, settings, graph, mode, name)
        await flow.run({"n": 0})
        assert await flow.status() == ("completed", None), name
    flow = Workflow(saver, dsn, settings, fan_out(add), mode, "fan-out")
    await flow.run({"n": 0})
    assert await flow.status() == ("completed", None)
    flow = Workflow(saver, dsn, settings, joined(), mode, "join")
    await flow.run({"n": 0})
    assert await flow.status() == ("completed", None)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("name", "graph", "stop"),
    [
        ("before", linear, {"interrupt_before": ["b"]}),
        ("after", linear, {"interrupt_after": ["a"]}),
        ("branch", branches, {"interrupt_after": ["a"]}),
        ("subgraph", with_subgraph, {"interrupt_before": ["sub"]}),
        ("fan-out", lambda: fan_out(add), {"interrupt_before": ["w"]}),
        ("join", joined, {"interrupt_before": ["c"]}),
    ],
)
async def test_a_static_breakpoint_is_interrupted_and_a_resume_completes(
    saver: InstrumentedSaver,
    dsn: str,
    settings: Settings,
    mode: str,
    name: str,
    graph: Callable[[], StateGraph[Any]],
    stop: dict[str, Any],
) -> None:
    flow = Workflow(saver, dsn, settings, graph(), mode, name, **stop)
    await flow.run({"n": 0})
    assert await flow.status() == ("interrupted", None)
    await flow.run(None)
    assert await flow.status() == ("completed", None)


@pytest.mark.parametrize("mode", MODES)
async def test_interrupt_then_resume(
    saver: InstrumentedSaver, dsn: str, settings: Settings, mode: str
) -> None:
    flow = Workflow(saver, dsn, settings, asking(), mode, "ask")
    await flow.run({"n": 0})
    assert await flow.status() == ("interrupted", None)
    await flow.run(Command(resume=2))
    assert await flow.status() == ("completed", None)


@pytest.mark.parametrize("mode", MODES)
async def test_a_node_that_raises_is_failed_and_a_retry_completes(
    saver: InstrumentedSaver, dsn: str, settings: Settings, mode: str
) -> None:
    node = Flaky()
    flow = Workflow(saver, dsn, settings, failing(node), mode, "raises")
    await flow.run({"n": 0})
    assert await flow.status() == ("failed", "ValueError")
    node.failing = False
    await flow.run(None)
    assert await flow.status() == ("completed", "ValueError")  # the last error is kept


@pytest.mark.parametrize("mode", MODES)
async def test_one_failing_send_fails_the_workflow(
    saver: InstrumentedSaver, dsn: str, settings: Settings, mode: str
) -> None:
    broken = Flaky()

    def worker(state: State) -> dict[str, Any]:
        return broken(state) if state["n"] == 2 else {"n": 1}

    flow = Workflow(saver, dsn, settings, fan_out(worker), mode, "send-fails")
    await flow.run({"n": 0})
    assert await flow.status() == ("failed", "ValueError")
    broken.failing = False
    await flow.run(None)
    assert (await flow.status())[0] == "completed"


async def test_a_cancelled_run_is_cancelled_and_a_resume_completes(
    saver: InstrumentedSaver, dsn: str, settings: Settings
) -> None:
    started, release = asyncio.Event(), asyncio.Event()
    graph = slow(started, release)
    flow = Workflow(saver, dsn, settings, graph, "async", "cancelled")
    run = asyncio.create_task(flow.run({"n": 0}))
    await started.wait()

    async def saved() -> bool:  # the checkpoint before the node is saved beside it
        return (await flow.app.aget_state(flow.config)).next == ("slow",)

    await eventually(saved, what="the checkpoint before the slow node")
    assert (await flow.status())[0] == "running"  # mid-step, while the node runs
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert await flow.status() == ("cancelled", "CancelledError")
    release.set()
    await flow.run(None)
    assert (await flow.status())[0] == "completed"


async def test_a_mark_overrides_until_a_newer_checkpoint(
    saver: InstrumentedSaver, dsn: str, settings: Settings
) -> None:
    flow = Workflow(saver, dsn, settings, linear(), "async", "marked", interrupt_before=["b"])
    await flow.run({"n": 0})
    tracker = saver.tracker
    assert tracker is not None
    tracker.mark_cancelled(flow.thread)
    assert await flow.status() == ("cancelled", None)
    await flow.run(None)
    assert await flow.status() == ("completed", None)
