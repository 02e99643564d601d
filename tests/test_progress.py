"""The progress rule equals LangGraph's own ``get_state().next`` on real graphs, sync and async.

Each scenario runs a real graph on an in-memory saver, step by step (pauses, failures,
resumes), and after every step compares :func:`exporter.workflows.progress.progress` on the
latest checkpoint and its writes with the snapshot LangGraph computes with the graph in hand.
"""

from __future__ import annotations

import asyncio
import operator
from dataclasses import dataclass, field
from typing import Annotated, Any, TypedDict

import pytest
from langgraph._internal import _constants as langgraph_constants
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, Send, interrupt

from exporter.workflows import progress as rule
from exporter.workflows.progress import Phase, progress


class State(TypedDict):
    n: Annotated[int, operator.add]


@dataclass
class Flaky:
    """A node body that raises while ``failing`` holds, so a resume can succeed."""

    failing: bool = True
    calls: int = field(default=0)

    def __call__(self, state: State) -> dict[str, Any]:
        self.calls += 1
        if self.failing:
            raise ValueError("not yet")
        return {"n": 1}


def add(state: State) -> dict[str, Any]:
    return {"n": 1}


def chain(**nodes: Any) -> StateGraph[Any]:
    """START, then ``nodes`` one after another in the order given, then END."""
    graph: StateGraph[Any] = StateGraph(State)
    names = list(nodes)
    for name, node in nodes.items():
        graph.add_node(name, node)
    for before, after in zip([START, *names], [*names, END], strict=True):
        graph.add_edge(before, after)
    return graph


def linear() -> StateGraph[Any]:
    return chain(a=add, b=add)


def slow(started: asyncio.Event, release: asyncio.Event) -> StateGraph[Any]:
    """a, then a node that waits for ``release`` once ``started``: a run to cancel mid-step."""

    async def wait(state: State) -> dict[str, Any]:
        started.set()
        await release.wait()
        return {"n": 1}

    return chain(a=add, slow=wait)


def branches() -> StateGraph[Any]:
    graph: StateGraph[Any] = StateGraph(State)
    graph.add_node("a", add)
    graph.add_node("small", add)
    graph.add_node("large", add)
    graph.add_edge(START, "a")
    graph.add_conditional_edges("a", lambda s: "large" if s["n"] > 1 else "small")
    graph.add_edge("small", END)
    graph.add_edge("large", END)
    return graph


def with_subgraph() -> StateGraph[Any]:
    return chain(a=add, sub=chain(x=add, y=add).compile(), b=add)


def fan_out(worker: Any) -> StateGraph[Any]:
    graph: StateGraph[Any] = StateGraph(State)
    graph.add_node("a", add)
    graph.add_node("w", worker)
    graph.add_node("b", add)
    graph.add_edge(START, "a")
    graph.add_conditional_edges("a", lambda _: [Send("w", {"n": i}) for i in range(3)], ["w"])
    graph.add_edge("w", "b")
    graph.add_edge("b", END)
    return graph


def joined() -> StateGraph[Any]:
    graph: StateGraph[Any] = StateGraph(State)
    for node in ("a", "left", "right", "c"):
        graph.add_node(node, add)
    graph.add_edge(START, "a")
    graph.add_edge("a", "left")
    graph.add_edge("a", "right")
    graph.add_edge(["left", "right"], "c")
    graph.add_edge("c", END)
    return graph


def asking() -> StateGraph[Any]:
    def ask(state: State) -> dict[str, Any]:
        return {"n": int(interrupt("how many?"))}

    return chain(a=add, ask=ask, b=add)


def failing(node: Flaky) -> StateGraph[Any]:
    return chain(a=add, boom=node)


class Runner:
    """Runs one thread of a compiled graph sync or async, and checks the rule after each run."""

    def __init__(self, graph: StateGraph[Any], mode: str, **compile_args: Any) -> None:
        self.saver = InMemorySaver()
        self.app = graph.compile(checkpointer=self.saver, **compile_args)
        self.mode = mode
        self.config: Any = {"configurable": {"thread_id": "t"}}

    async def run(self, value: Any, **kwargs: Any) -> BaseException | None:
        try:
            if self.mode == "sync":
                await asyncio.to_thread(lambda: self.app.invoke(value, self.config, **kwargs))
            else:
                await self.app.ainvoke(value, self.config, **kwargs)
        except (ValueError, asyncio.CancelledError) as exc:
            return exc
        return None

    async def reference(self) -> tuple[str, ...]:
        if self.mode == "sync":
            return tuple(self.app.get_state(self.config).next)
        return tuple((await self.app.aget_state(self.config)).next)

    def ours(self) -> rule.Progress:
        saved = self.saver.get_tuple(self.config)
        assert saved is not None
        checkpoint_id = saved.checkpoint["id"]
        stored = self.saver.writes.get(("t", "", checkpoint_id), {})
        writes = [
            (path, channel, self.saver.serde.loads_typed(value))
            for _task, channel, value, path in stored.values()
        ]
        return progress(saved.checkpoint, writes)

    async def check(self, phase: Phase, nxt: tuple[str, ...] | None = None) -> rule.Progress:
        reference = await self.reference()
        found = self.ours()
        assert sorted(found.next) == sorted(reference)
        if nxt is not None:
            assert sorted(reference) == sorted(nxt)
        assert found.phase is phase, found
        return found


MODES = ["sync", "async"]


@pytest.mark.parametrize("mode", MODES)
async def test_a_linear_graph_reaches_done(mode: str) -> None:
    runner = Runner(linear(), mode)
    assert await runner.run({"n": 0}) is None
    await runner.check(Phase.DONE, ())


@pytest.mark.parametrize("mode", MODES)
async def test_conditional_branches(mode: str) -> None:
    runner = Runner(branches(), mode, interrupt_after=["a"])
    await runner.run({"n": 5})
    await runner.check(Phase.DUE, ("large",))
    await runner.run(None)
    await runner.check(Phase.DONE, ())


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("where", ["before", "after"])
async def test_static_breakpoints_leave_the_step_due(mode: str, where: str) -> None:
    """A breakpoint writes nothing: the checkpoint says "due", as while executing."""
    stop = {"interrupt_before": ["b"]} if where == "before" else {"interrupt_after": ["a"]}
    runner = Runner(linear(), mode, **stop)
    await runner.run({"n": 0})
    await runner.check(Phase.DUE, ("b",))
    await runner.run(None)
    await runner.check(Phase.DONE, ())


@pytest.mark.parametrize("mode", MODES)
async def test_a_subgraph_is_one_task_of_its_parent(mode: str) -> None:
    runner = Runner(with_subgraph(), mode, interrupt_before=["sub", "b"])
    await runner.run({"n": 0})
    await runner.check(Phase.DUE, ("sub",))
    await runner.run(None)
    await runner.check(Phase.DUE, ("b",))
    await runner.run(None)
    await runner.check(Phase.DONE, ())


@pytest.mark.parametrize("mode", MODES)
async def test_send_fan_out_with_one_worker_failing(mode: str) -> None:
    """Sends are tasks of their own; those that finished leave ``next`` (live semantics)."""
    broken = Flaky()

    def worker(state: State) -> dict[str, Any]:
        return broken(state) if state["n"] == 2 else {"n": 1}

    runner = Runner(fan_out(worker), mode, interrupt_after=["a"])
    await runner.run({"n": 0})
    await runner.check(Phase.DUE, ("w", "w", "w"))
    assert isinstance(await runner.run(None), ValueError)
    found = await runner.check(Phase.ERRORED, ("w",))
    assert found.error_class == "ValueError"
    broken.failing = False
    await runner.run(None)
    await runner.check(Phase.DONE, ())


@pytest.mark.parametrize("mode", MODES)
async def test_a_join_waits_for_both_sides(mode: str) -> None:
    runner = Runner(joined(), mode, interrupt_after=["left", "right"])
    await runner.run({"n": 0})
    await runner.check(Phase.DUE, ("c",))
    await runner.run(None)
    await runner.check(Phase.DONE, ())


@pytest.mark.parametrize("mode", MODES)
async def test_interrupt_then_resume(mode: str) -> None:
    runner = Runner(asking(), mode)
    await runner.run({"n": 0})
    await runner.check(Phase.INTERRUPTED, ("ask",))
    await runner.run(Command(resume=3))
    await runner.check(Phase.DONE, ())


@pytest.mark.parametrize("mode", MODES)
async def test_a_node_that_raises_then_a_retry(mode: str) -> None:
    node = Flaky()
    runner = Runner(failing(node), mode)
    assert isinstance(await runner.run({"n": 0}), ValueError)
    found = await runner.check(Phase.ERRORED, ("boom",))
    assert found.error_class == "ValueError"
    node.failing = False
    await runner.run(None)
    await runner.check(Phase.DONE, ())


async def test_a_cancelled_run_then_a_resume() -> None:
    started, release = asyncio.Event(), asyncio.Event()
    graph = slow(started, release)
    runner = Runner(graph, "async")
    run = asyncio.create_task(runner.run({"n": 0}))
    await started.wait()
    run.cancel()
    assert isinstance(await run, asyncio.CancelledError)
    found = runner.ours()
    assert sorted(found.next) == sorted(await runner.reference()) == ["slow"]
    assert found.phase is Phase.DUE  # cancellation writes nothing: the run says it
    assert rule.settled(found.phase, raised="CancelledError") == "cancelled"
    release.set()
    await runner.run(None)
    await runner.check(Phase.DONE, ())


def test_statuses_while_running_and_once_ended() -> None:
    assert [rule.status(p) for p in Phase] == ["completed", "running", "interrupted", "failed"]
    assert [rule.settled(p) for p in Phase] == [
        "completed",
        "interrupted",
        "interrupted",
        "failed",
    ]
    assert rule.status(Phase.ERRORED, "CancelledError") == "cancelled"
    assert rule.settled(Phase.DUE, raised="GraphRecursionError") == "failed"
    assert rule.settled(Phase.DONE, raised="CancelledError") == "completed"


def test_the_reserved_names_are_langgraphs() -> None:
    assert rule.START == START
    assert rule.TASKS == langgraph_constants.TASKS
    assert rule.ERROR == langgraph_constants.ERROR
    assert rule.INTERRUPT == langgraph_constants.INTERRUPT
    assert rule.RESUME == langgraph_constants.RESUME
    assert rule.PULL == langgraph_constants.PULL
    assert rule.PUSH == langgraph_constants.PUSH
    assert {
        langgraph_constants.ERROR,
        langgraph_constants.INTERRUPT,
        langgraph_constants.RESUME,
        langgraph_constants.NO_WRITES,
        langgraph_constants.RETURN,
    } >= rule.CONTROL


def test_versions_of_mixed_types_still_compare() -> None:
    """A checkpoint migrated between savers may mix int and str versions: no exception."""
    checkpoint = {
        "channel_values": {"branch:to:b": None},
        "channel_versions": {"branch:to:b": "00000000000000000000000000000002.0.1"},
        "versions_seen": {"b": {"branch:to:b": 1}},
    }
    assert progress(checkpoint).next == ("b",)
