"""The tracker's fold without a database: each sequence of events and the row updates it leaves.

Every case is one batch in arrival order on thread ``t`` unless it names another. A written
row is modelled by :func:`stored`, the UPSERT in Python (``tests/test_tracking_sql.py`` holds
the SQL to it), so that one case also says what the row becomes, however it is batched.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import psycopg
import pytest
from psycopg_pool import PoolTimeout

from exporter.workflows.events import (
    READERS,
    UNREADABLE,
    Checkpoint,
    Delete,
    Event,
    FailedWrite,
    Mark,
    Prune,
    RunEnd,
    RunStart,
    Write,
    WriteKind,
)
from exporter.workflows.fold import Fold, Update, status_of, supersedes
from exporter.workflows.progress import ERROR, INTERRUPT, RESUME, Phase
from exporter.workflows.schema import (
    CANARY_THREAD_ID,
    CANCELLED,
    COMPLETED,
    FAILED,
    INTERRUPTED,
    RUNNING,
)
from exporter.workflows.tracking_metrics import TRACKING_ERRORS, TRACKING_EVENTS
from exporter.workflows.tracking_sql import error_reason

T = "t"
A, B = "run-a", "run-b"


def put(
    checkpoint_id: str,
    phase: Phase | None = Phase.DUE,
    *,
    ns: str = "",
    at: float = 0.0,
    thread: Any = T,
) -> Checkpoint:
    return Checkpoint(thread, ns, checkpoint_id, at, phase)


def wrote(
    kind: WriteKind, checkpoint_id: str | None, error: str | None = None, *, ns: str = ""
) -> Write:
    return Write(T, ns, checkpoint_id, 0.0, kind, error)


def interrupt(checkpoint_id: str | None, *, ns: str = "") -> Write:
    return wrote(WriteKind.INTERRUPT, checkpoint_id, ns=ns)


def raised(checkpoint_id: str | None, error: str, *, ns: str = "") -> Write:
    return wrote(WriteKind.ERROR, checkpoint_id, error, ns=ns)


def resume(checkpoint_id: str) -> Write:
    return wrote(WriteKind.RESUME, checkpoint_id)


def mark(status: str, error: str | None = None) -> Mark:
    return Mark(T, 0.0, status, error)


def start(token: str) -> RunStart:
    return RunStart(T, 0.0, token)


def end(
    token: str, raised: str | None = None, status: str | None = None, error: str | None = None
) -> RunEnd:
    return RunEnd(T, 0.0, token, raised, status, error)


def row(**fields: Any) -> Update:
    """An update that writes the row: touched, the rest as given."""
    return Update(touched=True, **fields)


def running(checkpoint_id: str, **fields: Any) -> Update:
    """The update one root save with tasks due leaves, with ``fields`` changed."""
    saved = {"status": RUNNING, "status_id": checkpoint_id, "strict": True}
    return row(**{**saved, "last_id": checkpoint_id, "checkpoints": 1, **fields})


def case(name: str, events: list[Event], expected: dict[str, Update]) -> Any:
    return pytest.param(events, expected, id=name)


CASES = [
    # put
    case("a root save with tasks due reads running", [put("1")], {T: running("1")}),
    case(
        "a root save with none due reads completed",
        [put("1", Phase.DONE)],
        {T: running("1", status=COMPLETED)},
    ),
    case(
        "a subgraph save is counted and reads nothing",
        [put("1", None, ns="sub")],
        {T: row(checkpoints=1)},
    ),
    case(
        "a root save without a reading is only the newest id",
        [put("1", None)],
        {T: row(checkpoints=1, last_id="1")},
    ),
    case(
        "a newer save replaces the reading",
        [put("1"), put("2", Phase.DONE)],
        {T: running("2", status=COMPLETED, checkpoints=2)},
    ),
    case(
        "an older save arriving late is counted and reads nothing",
        [put("2"), put("1", Phase.DONE)],
        {T: running("2", checkpoints=2)},
    ),
    case(
        "a thread id that is not text is keyed by its text",
        [put("1", thread=7)],
        {"7": running("1")},
    ),
    # put_writes
    case(
        "an interrupt() write reads interrupted",
        [put("1"), interrupt("1")],
        {T: running("1", status=INTERRUPTED, strict=False)},
    ),
    case(
        "a late save of the interrupted checkpoint keeps the interrupt",
        [interrupt("1"), put("1")],
        {T: running("1", status=INTERRUPTED, strict=False)},
    ),
    case(
        "a written error reads failed, with its class",
        [put("1"), raised("1", "ValueError")],
        {T: running("1", status=FAILED, strict=False, error_class="ValueError")},
    ),
    case(
        "a written CancelledError reads cancelled",
        [put("1"), raised("1", "CancelledError")],
        {T: running("1", status=CANCELLED, strict=False, error_class="CancelledError")},
    ),
    case(
        "a resume after an interrupt reads running",
        [put("1"), interrupt("1"), resume("1")],
        {T: running("1", strict=False)},
    ),
    case(
        "a write about an older checkpoint is ignored",
        [put("2"), interrupt("1")],
        {T: running("2")},
    ),
    case(
        "a subgraph's write records only its error class",
        [raised("1", "KeyError", ns="s")],
        {T: row(error_class="KeyError")},
    ),
    case(
        "a write naming no checkpoint holds like a mark",
        [interrupt(None)],
        {T: row(status=INTERRUPTED)},
    ),
    case(
        "a failed save records its error class only",
        [FailedWrite(T, 0.0, "DiskFull")],
        {T: row(error_class="DiskFull")},
    ),
    case(
        "a later failure's class replaces an earlier one",
        [raised("1", "KeyError"), FailedWrite(T, 0.0, "DiskFull")],
        {T: row(status=FAILED, status_id="1", last_id="1", error_class="DiskFull")},
    ),
    # the application's marks
    case("mark_completed reads completed", [mark(COMPLETED)], {T: row(status=COMPLETED)}),
    case(
        "mark_failed keeps the error's class",
        [mark(FAILED, "Abandoned")],
        {T: row(status=FAILED, error_class="Abandoned")},
    ),
    case("mark_cancelled reads cancelled", [mark(CANCELLED)], {T: row(status=CANCELLED)}),
    case(
        "a mark replaces the batch's reading",
        [put("1"), mark(COMPLETED)],
        {T: running("1", status=COMPLETED, status_id=None, strict=False)},
    ),
    case(
        "a reading after a mark keeps the mark in case the row refuses it",
        [mark(COMPLETED), put("2")],
        {T: running("2", fallback=COMPLETED)},
    ),
    case(
        "a stale write after a newer save and a mark leaves the mark",
        [put("2"), mark(COMPLETED), interrupt("1")],
        {T: running("2", status=COMPLETED, status_id=None, strict=False)},
    ),
    # graph runs and run() blocks
    case(
        "a run ending with a step due and nothing raised is at a breakpoint",
        [start(A), put("1"), end(A)],
        {T: running("1", status=INTERRUPTED, strict=False)},
    ),
    case(
        "a cancelled run is cancelled",
        [start(A), put("1"), end(A, "CancelledError")],
        {T: running("1", status=CANCELLED, strict=False, error_class="CancelledError")},
    ),
    case(
        "a run failing outside any task is failed",
        [start(A), put("1"), end(A, "GraphRecursionError")],
        {T: running("1", status=FAILED, strict=False, error_class="GraphRecursionError")},
    ),
    case(
        "a run that reached END stays completed",
        [start(A), put("1", Phase.DONE), end(A)],
        {T: running("1", status=COMPLETED, strict=False)},
    ),
    case(
        "a run ending after a written error keeps failed and the error's class",
        [start(A), put("1"), raised("1", "ValueError"), end(A, "ValueError")],
        {T: running("1", status=FAILED, strict=False, error_class="ValueError")},
    ),
    case(
        "a run ending at an interrupt() stays interrupted",
        [start(A), put("1"), interrupt("1"), end(A)],
        {T: running("1", status=INTERRUPTED, strict=False)},
    ),
    case("the end of a run never started does nothing", [end(A)], {}),
    case("a run without a root checkpoint leaves nothing to settle", [start(A), end(A)], {}),
    case(
        "a save before the run began is not what its end settles",
        [put("1"), start(A), end(A)],
        {T: running("1")},
    ),
    case(
        "a run() block's end is its own mark",
        [start(A), put("1"), end(A, "ValueError", FAILED, "ValueError")],
        {T: running("1", status=FAILED, status_id=None, strict=False, error_class="ValueError")},
    ),
    case(
        "a run() block ending cleanly settles like a graph run",
        [start(A), put("1", Phase.DONE), end(A)],
        {T: running("1", status=COMPLETED, strict=False)},
    ),
    case(
        "each of two runs of a thread settles the newest checkpoint",
        [start(A), start(B), put("1"), end(A), put("2"), end(B, "CancelledError")],
        {
            T: running(
                "2", status=CANCELLED, strict=False, checkpoints=2, error_class="CancelledError"
            )
        },
    ),
    # delete_thread and prune
    case("delete_thread deletes the row", [Delete(T, 0.0)], {T: Update(deleted=True)}),
    case(
        "a delete forgets what the batch said before",
        [put("1"), mark(FAILED, "X"), Delete(T, 0.0)],
        {T: Update(deleted=True)},
    ),
    case(
        "a save after a delete starts a new row",
        [put("1"), Delete(T, 0.0), put("2")],
        {T: running("2", deleted=True)},
    ),
    case(
        "a delete forgets the run going on",
        [start(A), put("1"), Delete(T, 0.0), end(A)],
        {T: Update(deleted=True)},
    ),
    case("prune(delete) deletes the row", [Prune(T, 0.0, "delete")], {T: Update(deleted=True)}),
    case(
        "prune(keep_latest) has the row recounted",
        [put("1"), Prune(T, 0.0, "keep_latest")],
        {T: running("1", recount=True)},
    ),
    # what is never tracked
    case("the canary's thread is never tracked", [put("1", thread=CANARY_THREAD_ID)], {}),
    case("an unreadable call changes no row", [UNREADABLE], {}),
]


@pytest.mark.parametrize(("events", "expected"), CASES)
def test_events_fold_into_row_updates(events: list[Event], expected: dict[str, Update]) -> None:
    """One batch of events leaves exactly the expected update per thread."""
    fold = Fold()
    fold.apply(events)
    assert fold.pending == expected


@dataclass(frozen=True)
class Row:
    """The columns of a ``workflow_metadata`` row the fold decides."""

    status: str
    last_id: str | None
    checkpoints: int
    error_class: str | None


def stored(before: Row | None, update: Update) -> Row | None:
    """What the tracker's write makes of ``before`` (None: no row), in Python."""
    if update.deleted:
        before = None
    if not update.touched:
        return before
    if before is None:
        return Row(
            status_of(update, None, None) or RUNNING,
            update.last_id,
            update.checkpoints,
            update.error_class,
        )
    ids = [i for i in (before.last_id, update.last_id) if i is not None]
    return Row(
        status_of(update, before.status, before.last_id) or before.status,
        max(ids) if ids else None,
        before.checkpoints + update.checkpoints,
        update.error_class or before.error_class,
    )


def written(fold: Fold, before: Row | None) -> Row | None:
    """The row once ``fold``'s pending update for ``T`` is written; the update is cleared."""
    update = fold.pending.pop(T, None)
    return before if update is None else stored(before, update)


@pytest.mark.parametrize(("events", "expected"), CASES)
def test_batching_never_changes_the_row(events: list[Event], expected: dict[str, Update]) -> None:
    """Writing each event in a batch of its own leaves the row one batch of them all leaves."""
    whole, alone = Fold(), Fold()
    whole.apply(events)
    one_by_one: Row | None = None
    for event in events:
        alone.apply([event])
        one_by_one = written(alone, one_by_one)
    assert written(whole, None) == one_by_one


STORED = Row(INTERRUPTED, "5", 3, None)


@pytest.mark.parametrize(
    ("events", "before", "after"),
    [
        pytest.param(
            [put("5")],
            STORED,
            replace(STORED, checkpoints=4),
            id="a late save of the stored checkpoint leaves its interrupt",
        ),
        pytest.param([put("6")], STORED, Row(RUNNING, "6", 4, None), id="a newer save resumes"),
        pytest.param(
            [put("4", Phase.DONE)],
            STORED,
            replace(STORED, checkpoints=4),
            id="an older save changes no status",
        ),
        pytest.param(
            [raised("5", "ValueError")],
            STORED,
            Row(FAILED, "5", 3, "ValueError"),
            id="a write about the stored checkpoint holds",
        ),
        pytest.param(
            [mark(COMPLETED), put("4")],
            STORED,
            Row(COMPLETED, "5", 4, None),
            id="a mark stands over a reading the row refuses",
        ),
        pytest.param(
            [mark(COMPLETED), put("6")],
            STORED,
            Row(RUNNING, "6", 4, None),
            id="a newer checkpoint than the row's ends a mark",
        ),
        pytest.param(
            [FailedWrite(T, 0.0, "DiskFull")],
            STORED,
            replace(STORED, error_class="DiskFull"),
            id="a failed save changes no status",
        ),
        pytest.param(
            [FailedWrite(T, 0.0, "DiskFull")],
            None,
            Row(RUNNING, None, 0, "DiskFull"),
            id="a thread first heard of by a failure is running",
        ),
        pytest.param([Delete(T, 0.0)], STORED, None, id="a delete removes the row"),
    ],
)
def test_a_batch_over_a_stored_row(
    events: list[Event], before: Row | None, after: Row | None
) -> None:
    """A batch weighed against an earlier flush's row gives the expected row."""
    fold = Fold()
    fold.apply(events)
    assert written(fold, before) == after


@pytest.mark.parametrize(
    ("checkpoint_id", "strict", "current", "expected"),
    [
        pytest.param("2", True, "1", True, id="a newer save"),
        pytest.param("2", False, "1", True, id="a write about a newer checkpoint"),
        pytest.param("1", False, "1", True, id="a write about the same checkpoint"),
        pytest.param("1", True, "1", False, id="a late save of the same checkpoint"),
        pytest.param("1", False, "2", False, id="a write about an older checkpoint"),
        pytest.param("1", True, "2", False, id="an older save"),
        pytest.param("1", True, None, True, id="nothing known yet"),
        pytest.param(None, True, "2", True, id="a mark"),
    ],
)
def test_supersedes(
    checkpoint_id: str | None, strict: bool, current: str | None, expected: bool
) -> None:
    """A reading replaces another only about a newer checkpoint, or the same one unless saved."""
    assert supersedes(checkpoint_id, strict, current) is expected


def test_every_event_counts_under_its_label() -> None:
    """Each kind counts once under its `tracking_events_total` label; a run's start nowhere."""
    fold = Fold()
    folded = fold.apply(
        [
            put("1"),
            FailedWrite(T, 0.0, "E"),
            raised("1", "E"),
            interrupt("1"),
            resume("1"),
            mark(COMPLETED),
            start(A),
            end(A),
            Delete(T, 0.0),
            Prune(T, 0.0, "keep_latest"),
            UNREADABLE,
            put("2", thread=CANARY_THREAD_ID),
        ]
    )
    assert dict(folded.events) == {
        label: 2 if label == "checkpoint" else 1 for label in TRACKING_EVENTS
    }


def test_overflow_gives_up_the_longest_waiting_thread() -> None:
    """Beyond ``max_pending_threads`` a new thread pushes out the oldest, and is counted."""
    fold = Fold(max_pending_threads=2)
    assert fold.apply([put("1", thread="a"), put("1", thread="b")]).dropped == 0
    assert fold.apply([put("2", thread="a"), put("1", thread="c")]).dropped == 1
    assert list(fold.pending) == ["b", "c"]
    fold.pending.clear()
    assert fold.apply([put("1", thread=x) for x in "defg"]).dropped == 2


def test_runs_beyond_max_runs_forget_the_oldest() -> None:
    """A run that never ended is forgotten once ``max_runs`` newer ones began."""
    fold = Fold(max_runs=1)
    fold.apply([start(A), put("1"), RunStart("other", 0.0, B), end(A)])
    assert fold.pending == {T: running("1")}


@pytest.mark.parametrize(
    ("operation", "args", "kwargs", "error", "expected"),
    [
        pytest.param(
            "put",
            ({"configurable": {"thread_id": T}}, {"id": "1"}, {}, {}),
            {},
            None,
            [Checkpoint(T, "", "1", 0.0, Phase.DONE)],
            id="put at the root",
        ),
        pytest.param(
            "put",
            (),
            {
                "config": {"configurable": {"thread_id": T, "checkpoint_ns": "s"}},
                "checkpoint": {"id": "1"},
            },
            None,
            [Checkpoint(T, "s", "1", 0.0, None)],
            id="put in a subgraph, by keyword",
        ),
        pytest.param(
            "put",
            ({"configurable": {"thread_id": T}},),
            {},
            "OperationalError",
            [FailedWrite(T, 0.0, "OperationalError")],
            id="a failed put",
        ),
        pytest.param(
            "put_writes",
            (
                {"configurable": {"thread_id": T, "checkpoint_id": "1"}},
                [("out", 1), (ERROR, ValueError("x")), (INTERRUPT, ())],
                "task",
            ),
            {},
            None,
            [Write(T, "", "1", 0.0, WriteKind.ERROR, "ValueError")],
            id="the first reserved write",
        ),
        pytest.param(
            "put_writes",
            ({"configurable": {"thread_id": T, "checkpoint_id": "1"}}, [(RESUME, "yes")], "task"),
            {},
            None,
            [Write(T, "", "1", 0.0, WriteKind.RESUME)],
            id="a resume",
        ),
        pytest.param(
            "put_writes",
            ({"configurable": {"thread_id": T}}, [("out", 1)], "task"),
            {},
            None,
            [],
            id="ordinary writes",
        ),
        pytest.param(
            "put_writes",
            ({"configurable": {"thread_id": T}}, [], "task"),
            {},
            "TimeoutError",
            [FailedWrite(T, 0.0, "TimeoutError")],
            id="failed writes",
        ),
        pytest.param("delete_thread", (T,), {}, None, [Delete(T, 0.0)], id="delete_thread"),
        pytest.param("delete_thread", (T,), {}, "OperationalError", [], id="a failed delete"),
        pytest.param(
            "prune",
            (["a", "b"],),
            {"strategy": "delete"},
            None,
            [Prune("a", 0.0, "delete"), Prune("b", 0.0, "delete")],
            id="prune",
        ),
        pytest.param(
            "prune",
            (),
            {"thread_ids": ["a"]},
            None,
            [Prune("a", 0.0, "keep_latest")],
            id="prune's default strategy",
        ),
    ],
)
def test_saver_calls_read_as_events(
    operation: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    error: str | None,
    expected: list[Event],
) -> None:
    """Each saver call the tracker hears reads as the events it means."""
    assert list(READERS[operation](args, kwargs, error, 0.0)) == expected


def test_a_call_without_its_thread_cannot_be_read() -> None:
    """A config without a thread raises, for the tracker to count it unreadable."""
    with pytest.raises(KeyError):
        READERS["put"](({"configurable": {}}, {"id": "1"}), {}, None, 0.0)


def test_what_a_failed_write_kept_folds_with_what_came_after() -> None:
    """Updates a failed write left pending merge with later events as if in one batch."""
    kept, whole = Fold(), Fold()
    kept.apply([put("1"), mark(COMPLETED)])
    kept.apply([put("2"), interrupt("2")])
    whole.apply([put("1"), mark(COMPLETED), put("2"), interrupt("2")])
    assert kept.pending == whole.pending


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        pytest.param(psycopg.errors.UndefinedTable(), "missing_table", id="no workflow_metadata"),
        pytest.param(psycopg.errors.InvalidSchemaName(), "missing_table", id="no schema"),
        pytest.param(psycopg.errors.QueryCanceled(), "timeout", id="statement_timeout"),
        pytest.param(TimeoutError(), "timeout", id="the flush's deadline"),
        pytest.param(psycopg.errors.CharacterNotInRepertoire(), "rejected", id="bad text"),
        pytest.param(psycopg.errors.UniqueViolation(), "rejected", id="a constraint"),
        pytest.param(psycopg.OperationalError(), "connection", id="no server"),
        pytest.param(psycopg.errors.AdminShutdown(), "connection", id="server shutting down"),
        pytest.param(PoolTimeout(), "connection", id="no connection in time"),
        pytest.param(ConnectionRefusedError(), "connection", id="refused"),
        pytest.param(psycopg.errors.InsufficientPrivilege(), "other", id="no grant"),
    ],
)
def test_a_failed_write_is_told_by_its_reason(error: BaseException, reason: str) -> None:
    """Each failure of the write counts under the `tracking_errors_total` reason it names."""
    assert error_reason(error) == reason
    assert reason in TRACKING_ERRORS
