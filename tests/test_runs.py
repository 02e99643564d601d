"""The run watcher hears each outermost graph run of a thread start and end, and nothing more."""

from __future__ import annotations

import asyncio
import operator
from typing import Annotated, Any, TypedDict
from uuid import UUID

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph

from exporter.workflows.runs import RunWatcher, watch


class State(TypedDict):
    n: Annotated[int, operator.add]


class Heard:
    def __init__(self) -> None:
        self.began: list[str] = []
        self.ended: list[tuple[str, str | None]] = []

    def run_began(self, thread_id: str, run_id: UUID) -> None:
        self.began.append(thread_id)

    def run_ended(self, thread_id: str, run_id: UUID, raised: str | None) -> None:
        self.ended.append((thread_id, raised))


def graph(seen: list[bool], fail: bool = False) -> Any:
    """One node that records whether the watcher is among its callback handlers."""

    def node(state: State, config: RunnableConfig) -> dict[str, Any]:
        manager = config.get("callbacks")
        handlers = getattr(manager, "handlers", []) + getattr(manager, "inheritable_handlers", [])
        seen.append(any(isinstance(h, RunWatcher) for h in handlers))
        if fail:
            raise ValueError("no")
        return {"n": 1}

    builder: StateGraph[Any] = StateGraph(State)
    builder.add_node("node", node)
    builder.add_edge(START, "node")
    builder.add_edge("node", END)
    return builder.compile(checkpointer=InMemorySaver())


def config(thread_id: str) -> Any:
    return {"configurable": {"thread_id": thread_id}}


async def test_every_async_run_in_one_task_is_heard_and_its_nodes_carry_no_handler() -> None:
    heard = Heard()
    watcher = watch(heard)
    try:
        seen: list[bool] = []
        app = graph(seen)
        for thread in ("a1", "a2", "a3"):  # one task, one context, one after another
            await app.ainvoke({"n": 0}, config(thread))
        await asyncio.gather(*(app.ainvoke({"n": 0}, config(f"c{i}")) for i in range(3)))
        with pytest.raises(ValueError, match="no"):
            await graph(seen, fail=True).ainvoke({"n": 0}, config("failing"))
    finally:
        watcher.unsubscribe(heard)
    threads = ["a1", "a2", "a3", "c0", "c1", "c2", "failing"]
    assert sorted(heard.began) == sorted(threads)
    assert sorted(heard.ended) == sorted(
        [(t, None) for t in threads if t != "failing"] + [("failing", "ValueError")]
    )
    assert seen == [False] * 7


def test_sync_runs_on_threads_are_heard() -> None:
    heard = Heard()
    watcher = watch(heard)
    try:
        seen: list[bool] = []
        app = graph(seen)
        for thread in ("s1", "s2"):
            app.invoke({"n": 0}, config(thread))
    finally:
        watcher.unsubscribe(heard)
    assert heard.began == ["s1", "s2"]
    assert heard.ended == [("s1", None), ("s2", None)]
    assert seen == [False, False]


def test_a_run_without_a_thread_or_listener_is_not_followed() -> None:
    heard = Heard()
    seen: list[bool] = []
    graph(seen).invoke({"n": 0}, config("unheard"))  # no listener subscribed
    watcher = watch(heard)
    watcher.unsubscribe(heard)
    graph(seen).invoke({"n": 0}, config("unheard-too"))
    assert (heard.began, heard.ended) == ([], [])
