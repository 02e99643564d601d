"""Drop-in replacements for a saver's internal lock that time how long callers queue.

``AsyncPostgresSaver`` runs one operation at a time per instance behind an
``asyncio.Lock``: a queue can build up while the connection pool looks idle,
so the wait is measured apart from the database time.
"""

from __future__ import annotations

import asyncio
import threading
from time import perf_counter
from types import TracebackType
from typing import Any, Literal

from exporter.checkpointer.call import current_call
from exporter.checkpointer.metrics import OTHER_OPERATION, SaverMetrics

_THREAD_LOCK_TYPE = type(threading.Lock())


class _WaitRecorder:
    """Attributes a lock wait to the operation in progress (or to ``other``)."""

    def __init__(self, metrics: SaverMetrics, saver: str) -> None:
        self._saver = saver
        self.waiters = metrics.lock_waiters.labels(saver)
        self._other = metrics.lock_wait.labels(OTHER_OPERATION, saver)

    def record(self, waited: float) -> None:
        call = current_call.get()
        if call is not None and call.probe.saver == self._saver:
            call.lock_wait += waited
            call.probe.lock_wait.observe(waited)
        else:
            self._other.observe(waited)


class TimedAsyncLock(asyncio.Lock):
    """An ``asyncio.Lock`` that records each acquisition's wait and the queue length."""

    def __init__(self, metrics: SaverMetrics, saver: str) -> None:
        super().__init__()
        self._recorder = _WaitRecorder(metrics, saver)

    async def acquire(self) -> Literal[True]:
        started = perf_counter()
        self._recorder.waiters.inc()
        try:
            await super().acquire()
        finally:
            self._recorder.waiters.dec()
        self._recorder.record(perf_counter() - started)
        return True


class TimedThreadLock:
    """A ``threading.Lock`` stand-in (that type cannot be subclassed) recording waits."""

    def __init__(self, metrics: SaverMetrics, saver: str) -> None:
        self._lock = threading.Lock()
        self._recorder = _WaitRecorder(metrics, saver)

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        started = perf_counter()
        self._recorder.waiters.inc()
        try:
            acquired = self._lock.acquire(blocking, timeout)
        finally:
            self._recorder.waiters.dec()
        if acquired:
            self._recorder.record(perf_counter() - started)
        return acquired

    def release(self) -> None:
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def time_lock(saver: Any, metrics: SaverMetrics) -> bool:
    """Swap ``saver.lock`` for a timed equivalent; False when it has no plain lock to swap."""
    lock = getattr(saver, "lock", None)
    name = type(saver).__name__
    if type(lock) is asyncio.Lock and not lock.locked():
        saver.lock = TimedAsyncLock(metrics, name)
        return True
    if isinstance(lock, _THREAD_LOCK_TYPE) and not lock.locked():
        saver.lock = TimedThreadLock(metrics, name)
        return True
    return isinstance(lock, TimedAsyncLock | TimedThreadLock)
