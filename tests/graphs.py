"""Small real LangGraph graphs that exercise completion, interrupts and node failures."""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import interrupt


class State(TypedDict, total=False):
    n: int
    log: Annotated[list[str], operator.add]
    ask: bool
    answer: str


def _step(state: State) -> dict[str, Any]:
    if state.get("n", 0) < 0:
        raise ValueError(f"negative input {state['n']}")
    return {"n": state.get("n", 0) + 1, "log": ["step"]}


def _review(state: State) -> dict[str, Any]:
    if state.get("ask"):
        answer = interrupt({"question": "approve?", "n": state.get("n")})
        return {"answer": str(answer), "log": ["reviewed"]}
    return {"log": ["skipped"]}


def _finish(state: State) -> dict[str, Any]:
    return {"n": state.get("n", 0) * 10, "log": ["finished"]}


def review_graph(checkpointer: BaseCheckpointSaver[Any]) -> CompiledStateGraph[Any, Any, Any, Any]:
    """step -> review (interrupts when ``ask``) -> finish; ``n < 0`` makes step raise."""
    graph: StateGraph[Any] = StateGraph(State)
    graph.add_node("step", _step)
    graph.add_node("review", _review)
    graph.add_node("finish", _finish)
    graph.add_edge(START, "step")
    graph.add_edge("step", "review")
    graph.add_edge("review", "finish")
    return graph.compile(checkpointer=checkpointer)


def config(thread_id: str) -> Any:
    return {"configurable": {"thread_id": thread_id}}
