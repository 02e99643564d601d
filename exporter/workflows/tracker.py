"""Keeps ``workflow_metadata`` current from the instrumented saver, off the checkpoint path.

How it stays off that path: after each ``put``, ``put_writes``,
``delete_thread`` and ``prune`` the saver calls :meth:`WorkflowTracker.observe`,
which appends one small tuple to a deque and returns; the application's marks
join the same deque, so they sort after the saves their run made.
``deque.append`` is atomic, so any thread may call it, with or without an event
loop (LangGraph's sync ``invoke`` on worker threads included), and no lock is
taken. Everything else happens in one task
on the event loop the tracker was started on: every ``tracking_flush_interval``
it drains the deque, folds the events into one :class:`Update` per thread
(pure code), and writes every thread in a single statement on a connection of
its own. A failed write keeps the updates for the next flush; while the
database is away at most :data:`MAX_PENDING_THREADS` threads wait, the oldest
given up first, and both are counted.

What the events mean. The status is LangGraph's own reading of the checkpoint
(:mod:`exporter.workflows.progress`), so no application change is needed:

- a successful ``put`` is a checkpoint: the count grows, and a root checkpoint
  newer than every one known for the thread becomes ``last_checkpoint_id`` and
  sets the status from its due tasks: none is ``completed`` (the graph reached
  END), some is ``running`` (a new step, or a resume);
- a write to ``__error__`` (a node raised) marks it ``failed`` with the
  exception's class (``cancelled`` for ``CancelledError``), a write to
  ``__interrupt__`` (``interrupt()``) ``interrupted``, a write to ``__resume__``
  ``running`` again;
- the end of the graph run (:mod:`exporter.workflows.runs`) settles a step still
  due: nothing raised means a static breakpoint (``interrupted``), a cancelled
  run ``cancelled``, any other exception ``failed``;
- a failed ``put`` or ``put_writes`` records ``last_error_class`` only;
- ``delete_thread`` and ``prune(strategy="delete")`` delete the row;
  ``prune(strategy="keep_latest")`` recounts its checkpoints from the table;
- the application's marks (``completed``, ``failed``, ``cancelled``) override
  the reading until a newer checkpoint comes.

Every status is about one checkpoint, and checkpoint ids are time-ordered UUIDs,
so "newer" compares ids, never arrival: LangGraph may finish saving a step's
checkpoint after that step's interrupt was written, and that late save must
not undo the interrupt. A status read from a save needs a strictly newer
checkpoint; one from a write, a run's end or a mark holds for the same one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, deque
from collections.abc import Callable, Mapping
from time import perf_counter, time
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final
from uuid import UUID

import psycopg
from prometheus_client import CollectorRegistry
from psycopg import AsyncConnection, sql
from psycopg_pool import PoolTimeout

from exporter.database import exporter_connect_kwargs
from exporter.log import get_logger
from exporter.redact import describe_error
from exporter.settings import Settings
from exporter.workflows.progress import (
    ERROR,
    INTERRUPT,
    RESUME,
    Phase,
    due_tasks,
    error_name,
    judge,
    settled,
    status,
)
from exporter.workflows.schema import (
    CANARY_THREAD_ID,
    CANCELLED,
    COMPLETED,
    FAILED,
    INTERRUPTED,
    TABLE,
)
from exporter.workflows.tracking_metrics import TRACKING_EVENTS, TrackingMetrics, tracking_metrics

if TYPE_CHECKING:
    from exporter.workflows.runs import RunWatcher

log = get_logger("tracking")

# Threads waiting to be written while the database is away; beyond it the oldest are dropped.
MAX_PENDING_THREADS: Final = 10_000
# Runs going on at once; beyond it the oldest (a stream never finished) is forgotten.
MAX_RUNS: Final = 100_000

# Event kinds, the first field of every queued tuple:
# (kind, thread_id, checkpoint_ns, checkpoint_id, wall time, detail); a PUT's detail is the
# status its due tasks give (None outside the root namespace).
PUT: Final = 0
FAILED_WRITE: Final = 1  # detail: the exception's class name
ERROR_WRITE: Final = 2  # detail: the written exception's class name
INTERRUPT_WRITE: Final = 3
DELETE: Final = 4
MARK: Final = 5  # detail: (status, error class or None)
RUN_START: Final = 6  # detail: the run's token
RUN_END: Final = 7  # detail: (token, what the run raised or None, a MARK's detail or None)
UNREADABLE: Final = 8
PRUNE: Final = 9  # detail: the strategy
RESUME_WRITE: Final = 10

# Which `tracking_events_total{event}` each kind counts under (RUN_START counts nowhere).
_EVENT_LABELS: Final[Mapping[int, str]] = {
    PUT: "checkpoint",
    FAILED_WRITE: "failed_write",
    ERROR_WRITE: "error",
    INTERRUPT_WRITE: "interrupt",
    RESUME_WRITE: "resume",
    DELETE: "delete",
    MARK: "mark",
    RUN_END: "run_end",
    UNREADABLE: "unreadable",
    PRUNE: "prune",
}

# What a write to LangGraph's reserved channels says of its checkpoint.
_WRITE_PHASES: Final[Mapping[int, Phase]] = {
    ERROR_WRITE: Phase.ERRORED,
    INTERRUPT_WRITE: Phase.INTERRUPTED,
    RESUME_WRITE: Phase.DUE,
}

Event = tuple[int, Any, str, str | None, float, Any]
_UNREADABLE_EVENT: Final[Event] = (UNREADABLE, None, "", None, 0.0, None)

# One statement per flush. Existing rows are updated under their row lock, so
# the status test reads the committed `last_checkpoint_id`; the rest are
# inserted, and a thread another process inserted meanwhile is merged. A batch's
# status is about checkpoint `status_id`: it applies when that is newer than the
# row's checkpoint, or the same one unless it was read from a save (`strict`);
# without an id (a mark) it always applies. A reading that followed a mark in the
# batch and does not apply leaves the mark (`fallback`).
UPSERT: Final = """
WITH d AS (
    SELECT * FROM unnest(
        %(thread_id)s::text[], %(status)s::text[], %(status_id)s::text[], %(strict)s::bool[],
        %(fallback)s::text[], %(last_id)s::text[], %(checkpoints)s::bigint[],
        %(first_at)s::float8[], %(last_at)s::float8[], %(error_class)s::text[]
    ) AS d(thread_id, status, status_id, strict, fallback, last_id, checkpoints, first_at,
           last_at, error_class)
),
updated AS (
    UPDATE {table} AS w SET
        status = CASE
            WHEN d.status IS NULL THEN w.status
            WHEN d.status_id IS NULL THEN d.status
            WHEN d.status_id COLLATE "C" > coalesce(w.last_checkpoint_id, '') THEN d.status
            WHEN d.status_id COLLATE "C" = coalesce(w.last_checkpoint_id, '') AND NOT d.strict
                THEN d.status
            ELSE coalesce(d.fallback, w.status)
        END,
        last_activity = greatest(w.last_activity, to_timestamp(d.last_at)),
        last_checkpoint_id = greatest(w.last_checkpoint_id COLLATE "C", d.last_id),
        checkpoint_count = w.checkpoint_count + d.checkpoints,
        last_error_class = coalesce(d.error_class, w.last_error_class),
        updated_at = now()
    FROM d
    WHERE w.thread_id = d.thread_id
    RETURNING w.thread_id
)
INSERT INTO {table} AS w (
    thread_id, status, first_activity, last_activity, last_checkpoint_id, checkpoint_count,
    last_error_class
)
SELECT
    d.thread_id, coalesce(d.status, 'running'), to_timestamp(d.first_at),
    to_timestamp(d.last_at), d.last_id, d.checkpoints, d.error_class
FROM d
WHERE NOT EXISTS (SELECT FROM updated AS u WHERE u.thread_id = d.thread_id)
ON CONFLICT (thread_id) DO UPDATE SET
    status = CASE
        WHEN excluded.last_checkpoint_id COLLATE "C" >= coalesce(w.last_checkpoint_id, '')
            THEN excluded.status
        ELSE w.status
    END,
    last_activity = greatest(w.last_activity, excluded.last_activity),
    last_checkpoint_id = greatest(w.last_checkpoint_id COLLATE "C", excluded.last_checkpoint_id),
    checkpoint_count = w.checkpoint_count + excluded.checkpoint_count,
    last_error_class = coalesce(excluded.last_error_class, w.last_error_class),
    updated_at = now()
"""
DELETE_THREADS: Final = "DELETE FROM {table} WHERE thread_id = ANY(%(thread_id)s::text[])"
# After a prune that keeps the latest checkpoints: count what is left (an index range per thread).
RECOUNT: Final = """
UPDATE {table} AS w
SET checkpoint_count = (SELECT count(*) FROM {checkpoints} AS c WHERE c.thread_id = w.thread_id),
    updated_at = now()
WHERE w.thread_id = ANY(%(thread_id)s::text[])
"""


def supersedes(checkpoint_id: str, strict: bool, current: str | None) -> bool:
    """Whether a reading about ``checkpoint_id`` replaces one about ``current``: a newer
    checkpoint always does, the same one unless the reading came from a save (``strict``)."""
    return current is None or checkpoint_id > current or (checkpoint_id == current and not strict)


class Update:
    """What the events of one batch do to one thread's row, folded in arrival order.

    ``status`` is about checkpoint ``status_id`` (see ``UPSERT``); ``strict`` when it
    was read from a save, which must not undo what a write said of the same checkpoint.
    """

    __slots__ = (
        "checkpoints", "deleted", "error_class", "fallback", "first_at", "last_at", "last_id",
        "recount", "status", "status_id", "strict", "touched",
    )  # fmt: skip

    def __init__(self) -> None:
        self.deleted = False
        self._reset()

    def _reset(self) -> None:
        self.touched = self.recount = self.strict = False
        self.status: str | None = None
        self.status_id: str | None = None
        self.fallback: str | None = None
        self.last_id: str | None = None
        self.checkpoints = 0
        self.error_class: str | None = None
        self.first_at = self.last_at = 0.0

    def _touch(self, at: float) -> None:
        if not self.touched:
            self.touched = True
            self.first_at = at
        self.last_at = max(self.last_at, at)

    def _know(self, checkpoint_id: str | None) -> None:
        if checkpoint_id is not None and (self.last_id is None or checkpoint_id > self.last_id):
            self.last_id = checkpoint_id

    def checkpoint(self, namespace: str, checkpoint_id: str, at: float, status: str | None) -> None:
        self._touch(at)
        self.checkpoints += 1
        if namespace == "" and (self.last_id is None or checkpoint_id > self.last_id):
            self.last_id = checkpoint_id
            if status is not None:
                self._read(status, checkpoint_id, strict=True)

    def _read(self, status: str, checkpoint_id: str, *, strict: bool) -> None:
        """Take ``status`` about ``checkpoint_id`` unless the batch knows a newer reading."""
        if self.status is not None and self.status_id is None:  # after a mark: the row decides
            self.fallback = self.status
        elif not supersedes(checkpoint_id, strict, self.status_id):
            return
        self.status, self.status_id, self.strict = status, checkpoint_id, strict

    def failed_write(self, error_class: str, at: float) -> None:
        self._touch(at)
        self.error_class = error_class

    def wrote(
        self,
        status: str,
        error_class: str | None,
        at: float,
        namespace: str,
        checkpoint_id: str | None,
    ) -> None:
        """A status a write (or a run's end) gives checkpoint ``checkpoint_id``."""
        self._touch(at)
        if error_class is not None:
            self.error_class = error_class
        if namespace != "":
            return
        self._know(checkpoint_id)
        if checkpoint_id is None:
            self.mark(status, None, at)
        else:
            self._read(status, checkpoint_id, strict=False)

    def mark(self, status: str, error_class: str | None, at: float) -> None:
        """The application's word: holds until a checkpoint newer than the row's."""
        self._touch(at)
        self.status, self.status_id, self.strict, self.fallback = status, None, False, None
        if error_class is not None:
            self.error_class = error_class

    def delete(self) -> None:
        self.deleted = True
        self._reset()


def columns(updates: Mapping[str, Update]) -> dict[str, list[Any]]:
    """The ``UPSERT`` parameters for every thread with something to write.

    Sorted by thread, so that two processes updating the same rows lock them
    in the same order and cannot deadlock.
    """
    out: dict[str, list[Any]] = {
        key: []
        for key in (
            "thread_id", "status", "status_id", "strict", "fallback", "last_id", "checkpoints",
            "first_at", "last_at", "error_class",
        )
    }  # fmt: skip
    for thread_id, update in sorted(updates.items()):
        if not update.touched:
            continue
        out["thread_id"].append(thread_id)
        out["status"].append(update.status)
        out["status_id"].append(update.status_id)
        out["strict"].append(update.strict)
        out["fallback"].append(update.fallback)
        out["last_id"].append(update.last_id)
        out["checkpoints"].append(update.checkpoints)
        out["first_at"].append(update.first_at)
        out["last_at"].append(update.last_at)
        out["error_class"].append(update.error_class)
    return out


def error_reason(exc: BaseException) -> str:
    """The ``reason`` label of a failed write."""
    if isinstance(exc, TimeoutError | psycopg.errors.QueryCanceled):
        return "timeout"
    if isinstance(exc, psycopg.errors.UndefinedTable | psycopg.errors.InvalidSchemaName):
        return "missing_table"
    if isinstance(exc, psycopg.DataError | psycopg.IntegrityError):
        return "rejected"
    if isinstance(exc, psycopg.InterfaceError | PoolTimeout | OSError):
        return "connection"
    # No SQLSTATE: the client lost or never had the server; 08: connection; 57P: shutdown.
    if isinstance(exc, psycopg.OperationalError) and (
        exc.sqlstate is None or exc.sqlstate.startswith(("08", "57P"))
    ):
        return "connection"
    return "other"


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
        self._tracker._emit((RUN_START, self._thread_id, "", None, time(), self._token))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        mark: tuple[str, str | None] | None
        if exc is None:
            mark = None
        elif isinstance(exc, _graph_interrupt()):
            mark = (INTERRUPTED, None)
        elif isinstance(exc, Exception):
            mark = (FAILED, type(exc).__name__)
        else:
            mark = (CANCELLED, type(exc).__name__)
        raised = None if exc is None else type(exc).__name__
        detail = (self._token, raised, mark)
        self._tracker._emit((RUN_END, self._thread_id, "", None, time(), detail))

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
        conninfo: str,
        settings: Settings,
        *,
        registry: CollectorRegistry | None = None,
        max_pending_threads: int = MAX_PENDING_THREADS,
    ) -> None:
        self._conninfo = conninfo
        self._connect_kwargs = exporter_connect_kwargs(conninfo, settings)
        self._interval = settings.tracking_flush_interval
        # A write may wait for a connection, then for the statement: the two timeouts.
        self._deadline = settings.connect_timeout + settings.collector_timeout
        table = sql.Identifier(settings.postgres_schema, TABLE)
        self._upsert = sql.SQL(UPSERT).format(table=table)
        self._delete = sql.SQL(DELETE_THREADS).format(table=table)
        checkpoints = sql.Identifier(settings.postgres_schema, "checkpoints")
        self._recount = sql.SQL(RECOUNT).format(table=table, checkpoints=checkpoints)
        self._max_pending = max_pending_threads
        self._events: deque[Event] = deque()
        self._pending: dict[str, Update] = {}
        # Runs going on (graph runs and `run()` blocks): token -> thread.
        self._runs: dict[object, str] = {}
        # For threads with a run going on: the newest root checkpoint's id, phase, error.
        self._latest: dict[str, tuple[str, Phase, str | None]] = {}
        self._running: Counter[str] = Counter()
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
        self._handlers: dict[str, Callable[[tuple[Any, ...], Mapping[str, Any], str | None], None]]
        self._handlers = {
            "put": self._on_put,
            "put_writes": self._on_put_writes,
            "delete_thread": self._on_delete_thread,
            "prune": self._on_prune,
        }

    @property
    def pending_threads(self) -> int:
        """Threads with updates not yet written."""
        return len(self._pending)

    # -- the checkpoint path ---------------------------------------------------------------

    def observe(
        self,
        operation: str,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        error: str | None,
    ) -> None:
        """Queue what a finished saver call means for its thread; never raises."""
        handler = self._handlers.get(operation)
        if handler is None or self._closed:
            return
        try:
            handler(args, kwargs, error)
        except Exception:
            self._events.append(_UNREADABLE_EVENT)

    def _on_put(self, args: tuple[Any, ...], kwargs: Mapping[str, Any], error: str | None) -> None:
        configurable = (args[0] if args else kwargs["config"])["configurable"]
        if error is not None:
            self._events.append((FAILED_WRITE, configurable["thread_id"], "", None, time(), error))
            return
        checkpoint = args[1] if len(args) > 1 else kwargs["checkpoint"]
        namespace = configurable.get("checkpoint_ns", "")
        phase = judge(due_tasks(checkpoint), ()).phase if namespace == "" else None
        self._events.append(
            (PUT, configurable["thread_id"], namespace, checkpoint["id"], time(), phase)
        )

    def _on_put_writes(
        self, args: tuple[Any, ...], kwargs: Mapping[str, Any], error: str | None
    ) -> None:
        configurable = (args[0] if args else kwargs["config"])["configurable"]
        if error is not None:
            self._events.append((FAILED_WRITE, configurable["thread_id"], "", None, time(), error))
            return
        for channel, value in args[1] if len(args) > 1 else kwargs["writes"]:
            if channel == ERROR:
                kind, detail = ERROR_WRITE, error_name(value)
            elif channel == INTERRUPT:
                kind, detail = INTERRUPT_WRITE, None
            elif channel == RESUME:
                kind, detail = RESUME_WRITE, None
            else:
                continue
            namespace = configurable.get("checkpoint_ns", "")
            checkpoint_id = configurable.get("checkpoint_id")
            thread_id = configurable["thread_id"]
            self._events.append((kind, thread_id, namespace, checkpoint_id, time(), detail))
            return

    def _on_delete_thread(
        self, args: tuple[Any, ...], kwargs: Mapping[str, Any], error: str | None
    ) -> None:
        if error is None:
            thread_id = args[0] if args else kwargs["thread_id"]
            self._events.append((DELETE, thread_id, "", None, time(), None))

    def _on_prune(
        self, args: tuple[Any, ...], kwargs: Mapping[str, Any], error: str | None
    ) -> None:
        if error is None:
            strategy = kwargs.get("strategy", "keep_latest")
            for thread_id in args[0] if args else kwargs["thread_ids"]:
                self._events.append((PRUNE, thread_id, "", None, time(), strategy))

    # -- the application's marks -----------------------------------------------------------

    def _emit(self, event: Event) -> None:
        if not self._closed:
            self._events.append(event)

    def mark_completed(self, thread_id: str) -> None:
        """Record that the workflow of ``thread_id`` finished; a later checkpoint resumes it."""
        self._emit((MARK, thread_id, "", None, time(), (COMPLETED, None)))

    def mark_failed(self, thread_id: str, error: BaseException | str | None = None) -> None:
        """Record that the workflow failed; ``error`` (an exception or a class name) is kept."""
        name = error if isinstance(error, str) or error is None else type(error).__name__
        self._emit((MARK, thread_id, "", None, time(), (FAILED, name)))

    def mark_cancelled(self, thread_id: str) -> None:
        """Record that the workflow was abandoned on purpose."""
        self._emit((MARK, thread_id, "", None, time(), (CANCELLED, None)))

    def run(self, thread_id: str) -> WorkflowRun:
        """A context manager marking the workflow by how its block ends (:class:`WorkflowRun`)."""
        return WorkflowRun(self, thread_id)

    # -- graph runs (exporter.workflows.runs) ----------------------------------------------

    def run_began(self, thread_id: str, run_id: UUID) -> None:
        self._emit((RUN_START, thread_id, "", None, time(), run_id))

    def run_ended(self, thread_id: str, run_id: UUID, raised: str | None) -> None:
        self._emit((RUN_END, thread_id, "", None, time(), (run_id, raised, None)))

    # -- folding events --------------------------------------------------------------------

    def _update(self, thread_id: str) -> Update:
        update = self._pending.get(thread_id)
        if update is None:
            if len(self._pending) >= self._max_pending:
                del self._pending[next(iter(self._pending))]  # the longest-waiting thread
                self._metrics.drop("overflow", 1)
                if not self._overflow_logged:
                    self._overflow_logged = True
                    log.warning("tracking_updates_dropped", max_pending_threads=self._max_pending)
            update = self._pending[thread_id] = Update()
        return update

    def _drain(self) -> None:
        """Fold every queued event into the pending updates, in arrival order."""
        events = self._events
        counts = dict.fromkeys(TRACKING_EVENTS, 0)
        for _ in range(len(events)):
            kind, raw_thread_id, namespace, checkpoint_id, at, detail = events.popleft()
            label = _EVENT_LABELS.get(kind)
            if label is not None:
                counts[label] += 1
            if kind == UNREADABLE:
                continue
            thread_id = str(raw_thread_id)
            if thread_id == CANARY_THREAD_ID:
                continue
            self._apply(kind, thread_id, namespace, checkpoint_id, at, detail)
        self._metrics.received(counts)

    def _apply(
        self,
        kind: int,
        thread_id: str,
        namespace: str,
        checkpoint_id: str | None,
        at: float,
        detail: Any,
    ) -> None:
        if kind == RUN_START:
            if len(self._runs) >= MAX_RUNS:  # runs that never ended: forget the oldest
                self._forget(next(iter(self._runs)))
            self._runs[detail] = thread_id
            self._running[thread_id] += 1
            return
        if kind == RUN_END:
            self._run_ended(thread_id, at, *detail)
            return
        update = self._update(thread_id)
        if kind == PUT:
            assert checkpoint_id is not None
            update.checkpoint(
                namespace, checkpoint_id, at, None if detail is None else status(detail)
            )
            if detail is not None:
                self._saw(thread_id, checkpoint_id, detail, None, strict=True)
        elif kind == FAILED_WRITE:
            update.failed_write(detail, at)
        elif kind in (ERROR_WRITE, INTERRUPT_WRITE, RESUME_WRITE):
            phase = _WRITE_PHASES[kind]
            update.wrote(status(phase, detail), detail, at, namespace, checkpoint_id)
            if namespace == "" and checkpoint_id is not None:
                self._saw(thread_id, checkpoint_id, phase, detail, strict=False)
        elif kind == MARK:
            update.mark(detail[0], detail[1], at)
        elif kind == DELETE or (kind == PRUNE and detail == "delete"):
            update.delete()
            self._latest.pop(thread_id, None)
        elif kind == PRUNE:
            update.recount = True

    def _saw(
        self, thread_id: str, checkpoint_id: str, phase: Phase, error: str | None, *, strict: bool
    ) -> None:
        """Remember the newest reading of a thread whose run is going on, for its end."""
        if not self._running[thread_id]:
            return
        known = self._latest.get(thread_id)
        if supersedes(checkpoint_id, strict, None if known is None else known[0]):
            self._latest[thread_id] = (checkpoint_id, phase, error)

    def _forget(self, token: object) -> None:
        thread_id = self._runs.pop(token)
        self._running[thread_id] -= 1
        if not self._running[thread_id]:
            del self._running[thread_id]
            self._latest.pop(thread_id, None)

    def _run_ended(
        self,
        thread_id: str,
        at: float,
        token: object,
        raised: str | None,
        mark: tuple[str, str | None] | None,
    ) -> None:
        """A run of ``thread_id`` returned: settle the step it left due, or take its mark."""
        if token not in self._runs:
            return
        known = self._latest.get(thread_id)
        self._forget(token)
        if mark is not None:
            self._update(thread_id).mark(mark[0], mark[1], at)
        elif known is not None:
            checkpoint_id, phase, error = known
            ended = settled(phase, error, raised)
            cause = raised if phase is Phase.DUE else None  # what stopped the step, if anything
            self._update(thread_id).wrote(ended, cause, at, "", checkpoint_id)

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
            if not self._pending:
                return True
            started, reason = perf_counter(), None
            try:
                try:
                    async with asyncio.timeout(self._deadline):
                        self._metrics.wrote(await self._write(self._pending))
                    self._pending.clear()
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
            self._conn = await AsyncConnection.connect(self._conninfo, **self._connect_kwargs)
        return self._conn

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error, OSError):
                await conn.close()

    async def _write(self, updates: Mapping[str, Update]) -> int:
        """Write ``updates`` in one statement, in a transaction with the deletions and
        recounts that threads deleted or pruned need; return the rows upserted."""
        conn = await self._connection()
        params = columns(updates)
        deleted = [thread_id for thread_id, update in updates.items() if update.deleted]
        recount = [thread_id for thread_id, update in updates.items() if update.recount]
        if not (deleted or recount):
            await conn.execute(self._upsert, params)
            return len(params["thread_id"])
        async with conn.transaction():
            if deleted:
                await conn.execute(self._delete, {"thread_id": deleted})
            if params["thread_id"]:
                await conn.execute(self._upsert, params)
            if recount:
                await conn.execute(self._recount, {"thread_id": recount})
        return len(params["thread_id"])

    async def _write_one_by_one(self) -> None:
        """After the database refused a batch: write each thread alone, drop those it refuses.

        A thread leaves the pending updates once written or refused, so an
        outage half-way through never writes one twice.
        """
        rejected: list[BaseException] = []
        for thread_id in list(self._pending):
            update = {thread_id: self._pending[thread_id]}
            try:
                async with asyncio.timeout(self._deadline):
                    self._metrics.wrote(await self._write(update))
            except (psycopg.DataError, psycopg.IntegrityError) as exc:
                rejected.append(exc)
            del self._pending[thread_id]
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
                pending_threads=len(self._pending),
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
            log.warning("tracking_updates_lost", threads=len(self._pending))
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
