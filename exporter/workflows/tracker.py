"""Keeps ``workflow_metadata`` current from the instrumented saver, off the checkpoint path.

How it stays off that path: after each ``put``, ``put_writes``, ``delete_thread`` and
``prune`` the saver calls :meth:`WorkflowTracker.observe`, which reads the call into an
event or two (:mod:`exporter.workflows.events`), appends them to a deque and returns; the
application's marks join the same deque, so they sort after the saves their run made.
``deque.append`` is atomic, so any thread may call it, with or without an event loop
(LangGraph's sync ``invoke`` on worker threads included), and no lock is taken. Everything
else happens in one task on the event loop the tracker was started on: every
``tracking_flush_interval`` it drains the deque into the fold (:mod:`exporter.workflows.fold`,
pure code: what each event means and the one status rule are there), and writes every thread
the fold left pending in a single statement on a connection of its own. A failed write keeps
the updates for the next flush; while the database is away at most
:data:`~exporter.workflows.fold.MAX_PENDING_THREADS` threads wait, the oldest given up
first, and both are counted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Mapping
from time import perf_counter, time
from types import TracebackType
from typing import TYPE_CHECKING, Any
from uuid import UUID

import psycopg
from prometheus_client import CollectorRegistry
from psycopg import AsyncConnection

from exporter.log import get_logger
from exporter.redact import describe_error
from exporter.target import Target
from exporter.workflows.events import READERS, UNREADABLE, Event, Mark, RunEnd, RunStart
from exporter.workflows.fold import MAX_PENDING_THREADS, Fold, Update
from exporter.workflows.schema import CANCELLED, COMPLETED, FAILED, INTERRUPTED
from exporter.workflows.tracking_metrics import TrackingMetrics, tracking_metrics
from exporter.workflows.tracking_sql import Statements, error_reason, write

if TYPE_CHECKING:
    from exporter.workflows.runs import RunWatcher

log = get_logger("tracking")


class WorkflowRun:
    """``with``/``async with tracker.run(thread_id)``: marks the workflow when the block ends.

    The graph's own runs already settle its status; the block adds the application's
    word. Normal exit: the status the checkpoints give once the run has ended
    (``completed``, or ``interrupted`` at a breakpoint or ``interrupt()``). An
    exception: ``failed`` with its class; cancellation (or any other
    ``BaseException``): ``cancelled``. The exception is re-raised.
    """

    __slots__ = ("_thread_id", "_token", "_tracker")

    def __init__(self, tracker: WorkflowTracker, thread_id: str) -> None:
        self._tracker, self._thread_id = tracker, thread_id
        self._token = object()

    def __enter__(self) -> WorkflowRun:
        self._tracker._emit(RunStart(self._thread_id, time(), self._token))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        verdict: str | None
        error_class: str | None
        raised = None if exc is None else type(exc).__name__
        if exc is None:
            verdict, error_class = None, None
        elif isinstance(exc, _graph_interrupt()):
            verdict, error_class = INTERRUPTED, None
        elif isinstance(exc, Exception):
            verdict, error_class = FAILED, raised
        else:
            verdict, error_class = CANCELLED, raised
        end = RunEnd(self._thread_id, time(), self._token, raised, verdict, error_class)
        self._tracker._emit(end)

    async def __aenter__(self) -> WorkflowRun:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


class WorkflowTracker:
    """Tracks each thread's status in ``workflow_metadata`` (see the module docstring).

    ``build_checkpointer`` starts one when ``tracking`` is on and the backend is
    PostgreSQL, and reaches it as ``saver.tracker``. The ``mark_*`` methods
    and :meth:`run` may be called from any thread; what they record is written
    at the next flush (``await tracker.flush()`` to wait for it).
    """

    def __init__(
        self,
        target: Target,
        *,
        flush_interval: float,
        deadline: float,
        registry: CollectorRegistry | None = None,
        max_pending_threads: int = MAX_PENDING_THREADS,
    ) -> None:
        """Write to ``target`` every ``flush_interval`` s, each write given ``deadline`` s."""
        self._target = target
        self._interval = flush_interval
        self._deadline = deadline
        self._statements = Statements.of(target.schema)
        self._events: deque[Event] = deque()
        self._fold = Fold(max_pending_threads)
        self._metrics: TrackingMetrics = tracking_metrics(registry)
        self._metrics.track(self)
        self._conn: AsyncConnection[Any] | None = None
        self._watcher: RunWatcher | None = None
        self._task: asyncio.Task[None] | None = None
        self._flush_lock: asyncio.Lock | None = None
        self._closed = False
        self._failing_since: float | None = None
        self._failed_flushes = 0
        self._overflow_logged = False

    @property
    def pending_threads(self) -> int:
        """Threads with updates not yet written."""
        return len(self._fold.pending)

    # -- the checkpoint path ---------------------------------------------------------------

    def observe(
        self,
        operation: str,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        error: str | None,
    ) -> None:
        """Queue what a finished saver call means for its thread; never raises."""
        reader = READERS.get(operation)
        if reader is None or self._closed:
            return
        try:
            self._events.extend(reader(args, kwargs, error, time()))
        except Exception:
            self._events.append(UNREADABLE)

    # -- the application's marks -----------------------------------------------------------

    def _emit(self, event: Event) -> None:
        if not self._closed:
            self._events.append(event)

    def mark_completed(self, thread_id: str) -> None:
        """Record that the workflow of ``thread_id`` finished; a later checkpoint resumes it."""
        self._emit(Mark(thread_id, time(), COMPLETED))

    def mark_failed(self, thread_id: str, error: BaseException | str | None = None) -> None:
        """Record that the workflow failed; ``error`` (an exception or a class name) is kept."""
        name = error if isinstance(error, str) or error is None else type(error).__name__
        self._emit(Mark(thread_id, time(), FAILED, name))

    def mark_cancelled(self, thread_id: str) -> None:
        """Record that the workflow was abandoned on purpose."""
        self._emit(Mark(thread_id, time(), CANCELLED))

    def run(self, thread_id: str) -> WorkflowRun:
        """A context manager marking the workflow by how its block ends (:class:`WorkflowRun`)."""
        return WorkflowRun(self, thread_id)

    # -- graph runs (exporter.workflows.runs) ----------------------------------------------

    def run_began(self, thread_id: str, run_id: UUID) -> None:
        self._emit(RunStart(thread_id, time(), run_id))

    def run_ended(self, thread_id: str, run_id: UUID, raised: str | None) -> None:
        self._emit(RunEnd(thread_id, time(), run_id, raised))

    # -- folding events --------------------------------------------------------------------

    def _drain(self) -> None:
        """Fold every queued event into the pending updates, in arrival order."""
        events = self._events
        folded = self._fold.apply(events.popleft() for _ in range(len(events)))
        self._metrics.received(folded.events)
        if folded.dropped:
            self._metrics.drop("overflow", folded.dropped)
            if not self._overflow_logged:
                self._overflow_logged = True
                log.warning(
                    "tracking_updates_dropped", max_pending_threads=self._fold.max_pending_threads
                )

    # -- writing ---------------------------------------------------------------------------

    async def flush(self) -> bool:
        """Write everything observed so far; True when nothing is left pending.

        Never raises for a database problem: the failure is counted, logged
        once per outage, and the updates wait for the next flush.
        """
        if self._flush_lock is None:
            self._flush_lock = asyncio.Lock()
        async with self._flush_lock:
            self._drain()
            if not self._fold.pending:
                return True
            started, reason = perf_counter(), None
            try:
                try:
                    async with asyncio.timeout(self._deadline):
                        self._metrics.wrote(await self._write(self._fold.pending))
                    self._fold.pending.clear()
                except (psycopg.DataError, psycopg.IntegrityError):
                    reason = "rejected"
                    await self._write_one_by_one()
            except Exception as exc:
                reason = error_reason(exc)
                self._metrics.flushed(perf_counter() - started, reason)
                await self._disconnect()
                self._outage(reason, exc)
                return False
            self._metrics.flushed(perf_counter() - started, reason)
            self._recovered()
            return True

    async def _connection(self) -> AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = await self._target.connect()
        return self._conn

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error, OSError):
                await conn.close()

    async def _write(self, updates: Mapping[str, Update]) -> int:
        return await write(await self._connection(), self._statements, updates)

    async def _write_one_by_one(self) -> None:
        """After the database refused a batch: write each thread alone, drop those it refuses.

        A thread leaves the pending updates once written or refused, so an
        outage half-way through never writes one twice.
        """
        rejected: list[BaseException] = []
        for thread_id in list(self._fold.pending):
            update = {thread_id: self._fold.pending[thread_id]}
            try:
                async with asyncio.timeout(self._deadline):
                    self._metrics.wrote(await self._write(update))
            except (psycopg.DataError, psycopg.IntegrityError) as exc:
                rejected.append(exc)
            del self._fold.pending[thread_id]
        if rejected:
            self._metrics.drop("rejected", len(rejected))
            log.warning(
                "tracking_rows_rejected", rows=len(rejected), error=describe_error(rejected[0])
            )

    def _outage(self, reason: str, exc: BaseException) -> None:
        self._failed_flushes += 1
        if self._failing_since is None:
            self._failing_since = time()
            log.warning(
                "tracking_write_failed",
                reason=reason,
                error=describe_error(exc),
                pending_threads=len(self._fold.pending),
            )

    def _recovered(self) -> None:
        if self._failing_since is not None:
            log.info(
                "tracking_write_recovered",
                failed_flushes=self._failed_flushes,
                outage_seconds=round(time() - self._failing_since, 3),
            )
        self._failing_since, self._failed_flushes = None, 0
        self._overflow_logged = False

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Flush every ``tracking_flush_interval`` on the running event loop until :meth:`close`,
        and watch the process's graph runs end."""
        if self._task is None:
            from exporter.workflows.runs import watch  # loads LangChain's callbacks: see below

            self._watcher = watch(self)
            self._task = asyncio.get_running_loop().create_task(
                self._flush_periodically(), name="workflow-tracking"
            )

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.flush()

    async def close(self) -> None:
        """Stop the periodic flush, write what is pending one last time, close the connection."""
        task, self._task = self._task, None
        if self._watcher is not None:
            self._watcher.unsubscribe(self)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._closed = True
        if not await self.flush():
            log.warning("tracking_updates_lost", threads=len(self._fold.pending))
        await self._disconnect()

    async def __aenter__(self) -> WorkflowTracker:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def _graph_interrupt() -> type[BaseException]:
    # Imported when first needed: langgraph.errors pulls in langchain_core's tracers
    # (about 15 MB resident) that a sidecar which never runs a graph does not need.
    from langgraph.errors import GraphInterrupt

    return GraphInterrupt
