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
from typing import Any

from exporter.checkpointer.call import current_call
from exporter.checkpointer.metrics import OTHER_OPERATION, SaverMetrics

_THREAD_LOCK_TYPE = type(threading.Lock())


class _WaitRecorder:
    """Gives each wait to the operation in progress, or to ``other`` outside one."""

    def __init__(self, metrics: SaverMetrics, saver: str) -> None:
        self.saver = saver
        self._other = metrics.stats(OTHER_OPERATION, saver)

    def record(self, waited: float) -> None:
        call = current_call.get()
        if call is not None and call.stats.saver == self.saver:
            call.add_lock_wait(waited)
        else:
            self._other.record_lock_wait(waited)


class TimedAsyncLock(asyncio.Lock):
    """An ``asyncio.Lock`` that records each ``async with`` wait and counts who queues.

    ``__aenter__`` is timed rather than ``acquire``: the saver only takes its lock
    with ``async with``, and wrapping ``acquire`` would add a coroutine to every
    operation.
    """

    def __init__(self, metrics: SaverMetrics, saver: str) -> None:
        super().__init__()
        self.saver = saver
        self.waiting = 0  # only touched on the event loop's thread
        self._recorder = _WaitRecorder(metrics, saver)
        metrics.track_lock(self)

    async def __aenter__(self) -> None:
        started = perf_counter()
        self.waiting += 1
        try:
            await self.acquire()
        finally:
            self.waiting -= 1
        self._recorder.record(perf_counter() - started)


class TimedThreadLock:
    """A ``threading.Lock`` stand-in (that type cannot be subclassed) recording waits."""

    def __init__(self, metrics: SaverMetrics, saver: str) -> None:
        self.saver = saver
        self.waiting = 0
        self._lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._recorder = _WaitRecorder(metrics, saver)
        metrics.track_lock(self)

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        started = perf_counter()
        if not self._lock.acquire(False):
            if not blocking:
                return False
            with self._count_lock:
                self.waiting += 1
            try:
                if not self._lock.acquire(True, timeout):
                    return False
            finally:
                with self._count_lock:
                    self.waiting -= 1
        self._recorder.record(perf_counter() - started)
        return True

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
