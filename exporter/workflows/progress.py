"""Where a workflow stands, read from its latest checkpoint and that checkpoint's writes.

LangGraph computes ``StateSnapshot.next`` from the checkpoint alone: a node is due when one
of its trigger channels holds a value at a version newer than the one the node last saw
(``channel_versions`` against ``versions_seen``), and each ``Send`` waiting in the tasks
channel is a task of its own. Against the graph's live state, a task that has already
written its output is no longer next. This module is that rule without the graph, on plain
data, so that it runs wherever checkpoints are seen: the tracker on every save, and any
reader of the stored rows. ``tests/test_progress.py`` holds it equal to ``get_state().next``.

Trigger channels are recognised by LangGraph's names for them (1.x): ``__start__`` for the
input node, ``branch:to:NODE`` for edges and conditional edges, ``join:A+B:NODE`` for a node
waiting on several. A checkpoint with no due task has reached END; an ``__error__`` write
means a task raised, an ``__interrupt__`` write that it called ``interrupt()``.

What storage cannot say: a checkpoint with tasks due is the same whether its run is still
executing them or stopped before them at a static breakpoint (``interrupt_before`` /
``interrupt_after`` write nothing). Only the process running the graph knows which, when the
run ends; :func:`settled` gives the status for that moment.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final

from exporter.workflows.schema import CANCELLED, COMPLETED, FAILED, INTERRUPTED, RUNNING

# LangGraph's reserved names (langgraph._internal._constants; a test keeps them equal).
START: Final = "__start__"
TASKS: Final = "__pregel_tasks"
ERROR: Final = "__error__"
INTERRUPT: Final = "__interrupt__"
RESUME: Final = "__resume__"
PULL: Final = "__pregel_pull"
PUSH: Final = "__pregel_push"
BRANCH_TO: Final = "branch:to:"
JOIN: Final = "join:"
# What a run raises when it is stopped rather than failing.
STOPPED: Final = frozenset({"CancelledError", "KeyboardInterrupt", "SystemExit", "GeneratorExit"})
_REPR: Final = re.compile(r"([A-Za-z_][\w.]*)\(")
# Writes that record how a task went rather than what it produced.
CONTROL: Final = frozenset({ERROR, INTERRUPT, RESUME, "__no_writes__", "__return__"})


class Phase(Enum):
    """What a checkpoint and its writes say, before knowing whether its run has ended."""

    DONE = "done"  # no task due: the graph reached END
    DUE = "due"  # tasks due and none of them stopped: executing, or paused at a breakpoint
    INTERRUPTED = "interrupted"  # a due task called interrupt() and has no answer yet
    ERRORED = "errored"  # a due task raised


@dataclass(frozen=True, slots=True)
class Task:
    """A task the checkpoint makes due: its node and LangGraph's ``task_path`` for it."""

    name: str
    path: str


@dataclass(frozen=True, slots=True)
class Progress:
    """A checkpoint's due tasks and what its writes say of them."""

    next: tuple[str, ...]
    phase: Phase
    error_class: str | None = None


def due_tasks(checkpoint: Mapping[str, Any]) -> tuple[Task, ...]:
    """The tasks LangGraph prepares from ``checkpoint``: Sends first, then triggered nodes."""
    values: Mapping[str, Any] = checkpoint.get("channel_values") or {}
    versions: Mapping[str, Any] = checkpoint.get("channel_versions") or {}
    seen_by: Mapping[str, Mapping[str, Any]] = checkpoint.get("versions_seen") or {}
    tasks = [
        Task(_send_node(send), f"~{PUSH}, {index:010d}, 0000000000")
        for index, send in enumerate(values.get(TASKS) or ())
    ]
    due: dict[str, None] = {}
    for channel, version in versions.items():
        node = _triggered_node(channel, values)
        if node is None or node in due:
            continue
        seen = seen_by.get(node, {}).get(channel)
        if seen is None or _newer(version, seen):
            due[node] = None
    tasks += [Task(node, f"~{PULL}, {node}") for node in due]
    return tuple(tasks)


def _newer(version: Any, seen: Any) -> bool:
    """LangGraph's version order: numbers, or strings led by a zero-padded counter
    (``"000…02.0.61"``); of mixed kinds, the counters are compared."""
    try:
        return bool(version > seen)
    except TypeError:
        return _counter(version) > _counter(seen)


def _counter(version: Any) -> int:
    text = str(version).partition(".")[0]
    return int(text) if text.isdigit() else 0


def _triggered_node(channel: str, values: Mapping[str, Any]) -> str | None:
    """The node ``channel`` triggers if it holds a value now, else None."""
    if channel not in values:
        return None
    if channel == START:
        return START
    if channel.startswith(BRANCH_TO):
        return channel[len(BRANCH_TO) :]
    if channel.startswith(JOIN):
        waits_for, _, node = channel[len(JOIN) :].rpartition(":")
        arrived = values[channel]
        complete = isinstance(arrived, set | frozenset | list | tuple) and set(
            waits_for.split("+")
        ) <= set(arrived)
        return node if complete else None
    return None


def _send_node(send: Any) -> str:
    node = send.get("node") if isinstance(send, Mapping) else getattr(send, "node", None)
    return str(node)


def progress(
    checkpoint: Mapping[str, Any], writes: Iterable[tuple[str, str, Any]] = ()
) -> Progress:
    """Where the workflow stands at ``checkpoint``, given its writes as LangGraph keeps
    them: ``(task_path, channel, value)`` (the value is read for errors only)."""
    return judge(due_tasks(checkpoint), writes)


def judge(tasks: tuple[Task, ...], writes: Iterable[tuple[str, str, Any]]) -> Progress:
    """The :class:`Progress` of ``tasks`` once ``writes`` are applied (live semantics)."""
    produced: set[str] = set()
    asked: set[str] = set()
    answered: set[str] = set()
    error_class: str | None = None
    for path, channel, value in writes:
        if channel == ERROR:
            error_class = error_class or error_name(value)
        elif channel == INTERRUPT:
            asked.add(path)
        elif channel == RESUME:
            answered.add(path)
        elif channel not in CONTROL:
            produced.add(path)
    waiting = tuple(task for task in tasks if task.path not in produced)
    names = tuple(task.name for task in waiting)
    if not tasks:
        return Progress(names, Phase.DONE)
    if error_class is not None:
        return Progress(names, Phase.ERRORED, error_class)
    # A resume from the input (no task path) answers every question of the step.
    unanswered = set() if "" in answered else asked - answered - produced
    if unanswered:
        return Progress(names, Phase.INTERRUPTED)
    return Progress(names, Phase.DUE)


def error_name(value: Any) -> str:
    """The class of a written error: the exception itself in the saver's hands, its
    ``repr`` (``"ValueError('...')"``) once stored and read back."""
    if isinstance(value, str):
        found = _REPR.match(value)
        if found:
            return found.group(1).rpartition(".")[2]
    return type(value).__name__


def status(phase: Phase, error_class: str | None = None) -> str:
    """The workflow status while its run may still be going: a due step is ``running``."""
    if phase is Phase.DONE:
        return COMPLETED
    if phase is Phase.ERRORED:
        return CANCELLED if error_class in STOPPED else FAILED
    if phase is Phase.INTERRUPTED:
        return INTERRUPTED
    return RUNNING


def settled(phase: Phase, error_class: str | None = None, raised: str | None = None) -> str:
    """The status once the run has ended, ``raised`` naming what it raised if anything.

    Tasks still due with nothing raised mean a static breakpoint; a run cancelled or
    failing outside any task (out of steps, say) leaves them due too, and says so itself.
    """
    if phase is not Phase.DUE:
        return status(phase, error_class)
    if raised is None:
        return INTERRUPTED
    return CANCELLED if raised in STOPPED else FAILED
