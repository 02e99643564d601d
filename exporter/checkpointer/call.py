"""The instrumented call in progress: its timer, and what the lock and serializer add to it."""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar, Token
from time import perf_counter
from types import TracebackType
from typing import Any, Protocol

from exporter.checkpointer.metrics import OperationStats


class CallOwner(Protocol):
    """The instrumented saver, which records a call once it is over."""

    def _finish(self, call: Call) -> None: ...


class Call:
    """One operation: the single timing helper for sync and async code (``with`` can wrap
    an ``await``), and what it accumulates while it runs.

    Each ``with`` block adds its time to ``spent`` and publishes the call in a
    context variable, where the saver's lock and serializer find it: they are
    reached from deep inside the saver (and from ``asyncio.to_thread``, which
    copies the context), where no argument could carry it. A single call
    finishes when its block ends; an iterator enters once per step, so a
    consumer pausing between items is not counted, and calls :meth:`finish`.
    """

    __slots__ = (
        "_started", "_token", "args", "ended", "error", "kwargs", "lock_wait", "locked", "once",
        "owner", "payload", "spent", "stats",
    )  # fmt: skip

    def __init__(
        self,
        owner: CallOwner,
        stats: OperationStats,
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        once: bool = True,
    ) -> None:
        self.owner, self.stats, self.args, self.kwargs = owner, stats, args, kwargs or {}
        self.once = once
        self.spent = self.lock_wait = self.ended = 0.0
        self.locked = False
        self.payload = 0
        self.error: BaseException | None = None
        stats.begin()

    def __enter__(self) -> Call:
        self._token: Token[Call | None] = current_call.set(self)
        self._started = perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.ended = perf_counter()
        self.spent += self.ended - self._started
        current_call.reset(self._token)
        if exc is not None:
            self.error = exc
        if self.once:
            self.owner._finish(self)

    def serve(self, stats: OperationStats) -> None:
        """Record the call under ``stats`` from now on: its saver was decided after it began."""
        stats.begin()
        self.stats.moved()
        self.stats = stats

    def add_lock_wait(self, waited: float) -> None:
        self.lock_wait += waited
        self.locked = True

    def finish(self) -> None:
        self.owner._finish(self)


current_call: ContextVar[Call | None] = ContextVar("checkpoint_exporter_call", default=None)
