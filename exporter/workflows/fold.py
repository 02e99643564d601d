"""What tracking's events do to ``workflow_metadata``: a pure fold, events in, row updates out.

:class:`Fold` takes events (:mod:`exporter.workflows.events`) in arrival order and leaves one
:class:`Update` per thread in :attr:`Fold.pending` for the tracker to write; it also remembers
the runs going on, to settle a status when one ends. It does no I/O, so every transition is
tested without a database (``tests/test_tracker_fold.py``). The status is LangGraph's own
reading of the checkpoint (:mod:`exporter.workflows.progress`):

- a checkpoint is counted; a root one newer than every one known becomes
  ``last_checkpoint_id`` and sets the status its due tasks give: none is ``completed`` (the
  graph reached END), some is ``running`` (a new step, or a resume);
- a write to ``__error__`` marks it ``failed`` with the exception's class (``cancelled`` for
  ``CancelledError``), to ``__interrupt__`` ``interrupted``, to ``__resume__`` ``running``;
- the end of a graph run settles a step still due: nothing raised means a static breakpoint
  (``interrupted``), a cancelled run ``cancelled``, any other exception ``failed``; the end of
  a ``tracker.run()`` block is that block's own mark;
- a failed ``put`` or ``put_writes`` records ``last_error_class`` only;
- ``delete_thread`` and ``prune(strategy="delete")`` delete the row;
  ``prune(strategy="keep_latest")`` has its checkpoints recounted from the table;
- the application's marks override the reading until a newer checkpoint comes;
- the canary's reserved thread is never tracked.

The one rule. Every status is about one checkpoint, and checkpoint ids are time-ordered
UUIDs, so "newer" compares ids, never arrival: LangGraph may finish saving a step's
checkpoint after that step's interrupt was written, and that late save must not undo the
interrupt. :func:`supersedes` decides whether a reading replaces what is known, against the
newest checkpoint known, and it is the same call wherever a reading meets an earlier one:
between the events of a batch (:class:`Update`), in the memory a run's end is settled from,
and between a batch and the stored row (:func:`status_of`).

Why the last one is also SQL. Only the stored row knows the newest checkpoint every process
has written for a thread (two replicas may serve it, a restarted sidecar forgets), so the
batch is weighed against it under its row lock, in the statement that writes it. Reading the
rows first would cost a round trip per flush and still race a replica inserting the same
thread. :data:`exporter.sql.workflow_metadata.STATUS_SQL` is therefore :func:`status_of`
transcribed over the write's columns and decides nothing of its own;
``tests/test_tracking_sql.py`` holds the two equal, for a row stored before the write and for
one another process inserts while it waits.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from exporter.workflows.events import (
    Checkpoint,
    Delete,
    Event,
    FailedWrite,
    Mark,
    Prune,
    RunEnd,
    RunStart,
    Unreadable,
    Write,
)
from exporter.workflows.progress import Phase, settled, status
from exporter.workflows.schema import CANARY_THREAD_ID

# Threads waiting to be written while the database is away; beyond it the oldest are dropped.
MAX_PENDING_THREADS: Final = 10_000
# Runs going on at once; beyond it the oldest (a stream never finished) is forgotten.
MAX_RUNS: Final = 100_000


def supersedes(checkpoint_id: str | None, strict: bool, current: str | None) -> bool:
    """Whether a reading about ``checkpoint_id`` replaces what is known of ``current``, the
    newest checkpoint known: a newer checkpoint always does, the same one unless the reading
    came from its save (``strict``). ``None`` is a mark, about no checkpoint: it always does."""
    if checkpoint_id is None or current is None:
        return True
    return checkpoint_id > current or (checkpoint_id == current and not strict)


@dataclass(slots=True)
class Update:
    """What the events of one batch do to one thread's row, folded in arrival order.

    ``status`` is about checkpoint ``status_id`` (None: a mark), ``strict`` when it was read
    from a save; ``fallback`` is a mark the batch made before a reading the row may refuse.
    ``last_id`` is the newest root checkpoint the batch knows.
    """

    touched: bool = False
    status: str | None = None
    status_id: str | None = None
    strict: bool = False
    fallback: str | None = None
    last_id: str | None = None
    checkpoints: int = 0
    error_class: str | None = None
    first_at: float = 0.0
    last_at: float = 0.0
    deleted: bool = False
    recount: bool = False

    def _touch(self, at: float) -> None:
        if not self.touched:
            self.touched = True
            self.first_at = at
        self.last_at = max(self.last_at, at)

    def _read(self, reading: str, checkpoint_id: str, *, strict: bool) -> None:
        """Take ``reading`` about ``checkpoint_id`` if it supersedes what the batch knows."""
        if not supersedes(checkpoint_id, strict, self.last_id):
            return
        if self.status is not None and self.status_id is None:
            self.fallback = self.status  # the mark stands if the row knows a newer checkpoint
        self.status, self.status_id, self.strict = reading, checkpoint_id, strict
        self.last_id = checkpoint_id

    def checkpoint(
        self, namespace: str, checkpoint_id: str, at: float, reading: str | None
    ) -> None:
        """A save; ``reading`` is the status its due tasks give (None outside the root)."""
        self._touch(at)
        self.checkpoints += 1
        if namespace != "":
            return
        if reading is not None:
            self._read(reading, checkpoint_id, strict=True)
        elif self.last_id is None or checkpoint_id > self.last_id:
            self.last_id = checkpoint_id

    def failed_write(self, error_class: str, at: float) -> None:
        self._touch(at)
        self.error_class = error_class

    def wrote(
        self,
        reading: str,
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
        if checkpoint_id is None:
            self.mark(reading, None, at)
        else:
            self._read(reading, checkpoint_id, strict=False)

    def mark(self, reading: str, error_class: str | None, at: float) -> None:
        """The application's word: holds until a checkpoint newer than the row's."""
        self._touch(at)
        self.status, self.status_id, self.strict, self.fallback = reading, None, False, None
        if error_class is not None:
            self.error_class = error_class

    def delete(self) -> None:
        """The row goes; what follows in the batch starts a new one."""
        self.touched = self.recount = self.strict = False
        self.status = self.status_id = self.fallback = self.last_id = self.error_class = None
        self.checkpoints = 0
        self.first_at = self.last_at = 0.0
        self.deleted = True


def status_of(update: Update, stored: str | None, stored_id: str | None) -> str | None:
    """The status a row holds once ``update`` is written over ``stored``, which is about its
    newest checkpoint ``stored_id`` (both None: no row yet, and None back: ``running``).

    The flush weighs it in SQL, as :data:`exporter.sql.workflow_metadata.STATUS_SQL`.
    """
    if update.status is None:
        return stored
    if supersedes(update.status_id, update.strict, stored_id):
        return update.status
    return update.fallback or stored


@dataclass(frozen=True, slots=True)
class Reading:
    """The newest root checkpoint seen of a thread with a run going on, and what it said."""

    checkpoint_id: str
    phase: Phase
    error_class: str | None = None


@dataclass(frozen=True, slots=True)
class Folded:
    """What one :meth:`Fold.apply` took in: events per label, and threads given up."""

    events: Mapping[str, int]
    dropped: int = 0


class Fold:
    """Events in, one :class:`Update` per thread out; the runs going on, in between.

    :attr:`pending` is the tracker's to write and to clear; while it holds
    ``max_pending_threads`` threads, a new one pushes out the longest-waiting.
    """

    def __init__(
        self, max_pending_threads: int = MAX_PENDING_THREADS, max_runs: int = MAX_RUNS
    ) -> None:
        self.pending: dict[str, Update] = {}
        self.max_pending_threads = max_pending_threads
        self._max_runs = max_runs
        self._dropped = 0
        # Runs going on (graph runs and `run()` blocks): token -> thread.
        self._runs: dict[object, str] = {}
        self._running: Counter[str] = Counter()
        # For threads with a run going on: the newest root checkpoint's reading.
        self._latest: dict[str, Reading] = {}

    def apply(self, events: Iterable[Event]) -> Folded:
        """Fold ``events`` into :attr:`pending`, in order."""
        counts: Counter[str] = Counter()
        self._dropped = 0
        for event in events:
            if event.label is not None:
                counts[event.label] += 1
            if isinstance(event, Unreadable):
                continue
            thread_id = str(event.thread_id)
            if thread_id != CANARY_THREAD_ID:
                self._apply(event, thread_id)
        return Folded(counts, self._dropped)

    def _update(self, thread_id: str) -> Update:
        update = self.pending.get(thread_id)
        if update is None:
            if len(self.pending) >= self.max_pending_threads:
                del self.pending[next(iter(self.pending))]  # the longest-waiting thread
                self._dropped += 1
            update = self.pending[thread_id] = Update()
        return update

    def _apply(self, event: Event, thread_id: str) -> None:
        match event:
            case RunStart():
                if len(self._runs) >= self._max_runs:  # runs that never ended: the oldest
                    self._forget(next(iter(self._runs)))
                self._runs[event.token] = thread_id
                self._running[thread_id] += 1
            case RunEnd():
                self._run_ended(thread_id, event)
            case Checkpoint():
                phase = event.phase if event.namespace == "" else None
                reading = None if phase is None else status(phase)
                update = self._update(thread_id)
                update.checkpoint(event.namespace, event.checkpoint_id, event.at, reading)
                if phase is not None:
                    self._saw(thread_id, Reading(event.checkpoint_id, phase), strict=True)
            case FailedWrite():
                self._update(thread_id).failed_write(event.error_class, event.at)
            case Write():
                phase, cause = event.kind.phase, event.error_class
                update = self._update(thread_id)
                reading = status(phase, cause)
                update.wrote(reading, cause, event.at, event.namespace, event.checkpoint_id)
                if event.namespace == "" and event.checkpoint_id is not None:
                    self._saw(thread_id, Reading(event.checkpoint_id, phase, cause), strict=False)
            case Mark():
                self._update(thread_id).mark(event.status, event.error_class, event.at)
            case Delete() | Prune(strategy="delete"):
                self._update(thread_id).delete()
                self._latest.pop(thread_id, None)
            case Prune():
                self._update(thread_id).recount = True

    def _saw(self, thread_id: str, reading: Reading, *, strict: bool) -> None:
        """Remember the newest reading of a thread whose run is going on, for its end."""
        if not self._running[thread_id]:
            return
        known = self._latest.get(thread_id)
        if supersedes(
            reading.checkpoint_id, strict, None if known is None else known.checkpoint_id
        ):
            self._latest[thread_id] = reading

    def _forget(self, token: object) -> None:
        thread_id = self._runs.pop(token)
        self._running[thread_id] -= 1
        if not self._running[thread_id]:
            del self._running[thread_id]
            self._latest.pop(thread_id, None)

    def _run_ended(self, thread_id: str, event: RunEnd) -> None:
        """A run returned: take its block's mark, or settle the step it left due."""
        if event.token not in self._runs:
            return
        known = self._latest.get(thread_id)
        self._forget(event.token)
        if event.status is not None:
            self._update(thread_id).mark(event.status, event.error_class, event.at)
        elif known is not None:
            ended = settled(known.phase, known.error_class, event.raised)
            cause = event.raised if known.phase is Phase.DUE else None  # what stopped the step
            self._update(thread_id).wrote(ended, cause, event.at, "", known.checkpoint_id)
