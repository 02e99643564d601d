"""A small, realistic LangGraph workflow for load tests and demos.

Four nodes (plan, research, draft, review; review sends the draft back once)
pass a state of a few kilobytes: messages, a scratchpad and tool results, as
an agent would. Each node waits ``think_time`` seconds, standing in for model
and tool calls.
"""

from __future__ import annotations

import asyncio
import operator
from typing import Annotated, Any, Literal, TypedDict

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import START, StateGraph
from langgraph.graph.state import CompiledStateGraph


class WorkflowState(TypedDict):
    task: str
    messages: Annotated[list[dict[str, str]], operator.add]
    scratchpad: str
    tool_results: Annotated[list[dict[str, Any]], operator.add]
    revisions: int


def _text(label: str, size: int) -> str:
    sentence = f"{label}: the agent considers the task, weighs the evidence and notes it. "
    return (sentence * (size // len(sentence) + 1))[:size]


def build_workflow(think_time: float = 0.0, state_kb: float = 4.0) -> StateGraph[Any]:
    """The uncompiled graph; ``state_kb`` sets roughly how large the state grows."""
    chunk = max(64, int(state_kb * 1024 / 5))

    async def think() -> None:
        if think_time > 0:
            await asyncio.sleep(think_time)

    async def plan(state: WorkflowState) -> dict[str, Any]:
        await think()
        return {
            "messages": [{"role": "assistant", "content": _text("plan", chunk)}],
            "scratchpad": _text("scratch", chunk),
        }

    async def research(state: WorkflowState) -> dict[str, Any]:
        await think()
        return {
            "tool_results": [
                {
                    "tool": "search",
                    "query": state["task"],
                    "hits": [_text(f"hit{i}", chunk // 4) for i in range(4)],
                }
            ]
        }

    async def draft(state: WorkflowState) -> dict[str, Any]:
        await think()
        return {"messages": [{"role": "assistant", "content": _text("draft", chunk)}]}

    async def review(state: WorkflowState) -> dict[str, Any]:
        await think()
        return {
            "revisions": state["revisions"] + 1,
            "messages": [{"role": "reviewer", "content": _text("review", chunk // 4)}],
        }

    def after_review(state: WorkflowState) -> Literal["draft", "__end__"]:
        return "draft" if state["revisions"] < 2 else "__end__"

    graph: StateGraph[Any] = StateGraph(WorkflowState)
    graph.add_node("plan", plan)
    graph.add_node("research", research)
    graph.add_node("draft", draft)
    graph.add_node("review", review)
    graph.add_edge(START, "plan")
    graph.add_edge("plan", "research")
    graph.add_edge("research", "draft")
    graph.add_edge("draft", "review")
    graph.add_conditional_edges("review", after_review)
    return graph


def compile_workflow(
    checkpointer: BaseCheckpointSaver[Any], think_time: float = 0.0, state_kb: float = 4.0
) -> CompiledStateGraph[Any, Any, Any, Any]:
    return build_workflow(think_time, state_kb).compile(checkpointer=checkpointer)


def initial_state(task: str) -> WorkflowState:
    return {
        "task": task,
        "messages": [{"role": "user", "content": task}],
        "scratchpad": "",
        "tool_results": [],
        "revisions": 0,
    }
