"""What workflow tracking hears: saver calls, graph runs and the application's marks, as events.

Every event is a small frozen value built on the checkpoint path and folded later, off it
(:mod:`exporter.workflows.fold`). Reading a saver call here costs what the tracker may spend
on that path: the arguments LangGraph passed are looked at, nothing is copied or written.
A checkpoint's status is LangGraph's own reading of it (:mod:`exporter.workflows.progress`),
taken now because the checkpoint may change once the call returns.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar, Final

from exporter.workflows.progress import (
    ERROR,
    INTERRUPT,
    RESUME,
    Phase,
    due_tasks,
    error_name,
    judge,
)


class WriteKind(Enum):
    """A write to one of LangGraph's reserved channels; the value is its event label."""

    ERROR = "error"  # a node raised
    INTERRUPT = "interrupt"  # a node called interrupt()
    RESUME = "resume"  # the answer to an interrupt

    @property
    def phase(self) -> Phase:
        """What the write says of its checkpoint."""
        return _WRITE_PHASES[self]


_WRITE_PHASES: Final[Mapping[WriteKind, Phase]] = {
    WriteKind.ERROR: Phase.ERRORED,
    WriteKind.INTERRUPT: Phase.INTERRUPTED,
    WriteKind.RESUME: Phase.DUE,
}
_CHANNELS: Final[Mapping[str, WriteKind]] = {
    ERROR: WriteKind.ERROR,
    INTERRUPT: WriteKind.INTERRUPT,
    RESUME: WriteKind.RESUME,
}


# Each event's `label` is the `tracking_events_total{event}` it counts under (None: nowhere).
# `thread_id` is whatever the caller passed; the fold turns it into text, off the hot path.


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A successful ``put``; ``phase`` is its due tasks' reading (None outside the root)."""

    label: ClassVar[str] = "checkpoint"
    thread_id: Any
    namespace: str
    checkpoint_id: str
    at: float
    phase: Phase | None


@dataclass(frozen=True, slots=True)
class FailedWrite:
    """A ``put`` or ``put_writes`` that raised ``error_class``."""

    label: ClassVar[str] = "failed_write"
    thread_id: Any
    at: float
    error_class: str


@dataclass(frozen=True, slots=True)
class Write:
    """A ``put_writes`` to a reserved channel, about checkpoint ``checkpoint_id``."""

    thread_id: Any
    namespace: str
    checkpoint_id: str | None
    at: float
    kind: WriteKind
    error_class: str | None = None  # the written exception's class, for ERROR

    @property
    def label(self) -> str:
        return self.kind.value


@dataclass(frozen=True, slots=True)
class Mark:
    """The application's word (``mark_completed`` and the like): holds until a newer checkpoint."""

    label: ClassVar[str] = "mark"
    thread_id: Any
    at: float
    status: str
    error_class: str | None = None


@dataclass(frozen=True, slots=True)
class RunStart:
    """A graph run or a ``tracker.run()`` block began; ``token`` pairs it with its end."""

    label: ClassVar[None] = None
    thread_id: Any
    at: float
    token: object


@dataclass(frozen=True, slots=True)
class RunEnd:
    """The run of ``token`` returned, ``raised`` naming what it raised if anything.

    A ``tracker.run()`` block gives its own verdict (``status``, ``error_class``); a graph
    run gives none, and the fold settles the step it left due.
    """

    label: ClassVar[str] = "run_end"
    thread_id: Any
    at: float
    token: object
    raised: str | None = None
    status: str | None = None
    error_class: str | None = None


@dataclass(frozen=True, slots=True)
class Delete:
    """A successful ``delete_thread``."""

    label: ClassVar[str] = "delete"
    thread_id: Any
    at: float


@dataclass(frozen=True, slots=True)
class Prune:
    """A successful ``prune`` of one thread: ``keep_latest`` or ``delete``."""

    label: ClassVar[str] = "prune"
    thread_id: Any
    at: float
    strategy: str


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A saver call whose thread could not be read: counted, and nothing else."""

    label: ClassVar[str] = "unreadable"


Event = Checkpoint | FailedWrite | Write | Mark | RunStart | RunEnd | Delete | Prune | Unreadable
UNREADABLE: Final = Unreadable()

Reader = Callable[[tuple[Any, ...], Mapping[str, Any], str | None, float], tuple[Event, ...]]


def _configurable(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Mapping[str, Any]:
    configurable: Mapping[str, Any] = (args[0] if args else kwargs["config"])["configurable"]
    return configurable


def _put(
    args: tuple[Any, ...], kwargs: Mapping[str, Any], error: str | None, at: float
) -> tuple[Event, ...]:
    configurable = _configurable(args, kwargs)
    if error is not None:
        return (FailedWrite(configurable["thread_id"], at, error),)
    checkpoint = args[1] if len(args) > 1 else kwargs["checkpoint"]
    namespace = configurable.get("checkpoint_ns", "")
    phase = judge(due_tasks(checkpoint), ()).phase if namespace == "" else None
    return (Checkpoint(configurable["thread_id"], namespace, checkpoint["id"], at, phase),)


def _put_writes(
    args: tuple[Any, ...], kwargs: Mapping[str, Any], error: str | None, at: float
) -> tuple[Event, ...]:
    """The first write to a reserved channel, if any: a task writes at most one of them."""
    configurable = _configurable(args, kwargs)
    if error is not None:
        return (FailedWrite(configurable["thread_id"], at, error),)
    for channel, value in args[1] if len(args) > 1 else kwargs["writes"]:
        kind = _CHANNELS.get(channel)
        if kind is None:
            continue
        return (
            Write(
                configurable["thread_id"],
                configurable.get("checkpoint_ns", ""),
                configurable.get("checkpoint_id"),
                at,
                kind,
                error_name(value) if kind is WriteKind.ERROR else None,
            ),
        )
    return ()


def _delete_thread(
    args: tuple[Any, ...], kwargs: Mapping[str, Any], error: str | None, at: float
) -> tuple[Event, ...]:
    if error is not None:
        return ()
    return (Delete(args[0] if args else kwargs["thread_id"], at),)


def _prune(
    args: tuple[Any, ...], kwargs: Mapping[str, Any], error: str | None, at: float
) -> tuple[Event, ...]:
    if error is not None:
        return ()
    strategy = kwargs.get("strategy", "keep_latest")
    return tuple(
        Prune(thread_id, at, strategy) for thread_id in (args[0] if args else kwargs["thread_ids"])
    )


# The saver operations tracking listens to and how each call reads; any other is ignored. A
# reader raises when the arguments are not what LangGraph passes: the call is `unreadable`.
READERS: Final[Mapping[str, Reader]] = {
    "put": _put,
    "put_writes": _put_writes,
    "delete_thread": _delete_thread,
    "prune": _prune,
}
