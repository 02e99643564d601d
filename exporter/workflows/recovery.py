"""The recovery check: could the unfinished workflows resume from their checkpoints?

It selects the threads ``workflow_metadata`` says were running or interrupted (waiting at a
breakpoint or ``interrupt()`` to be resumed; newest
activity first, at most ``recovery_limit``) and loads each one's latest
checkpoint with full deserialization, the way LangGraph does when a run
resumes. A thread whose checkpoint is gone or does not decode counts as
failed; thread ids and error classes go to the report and the logs, never
to metric labels. Without a ``workflow_metadata`` table there is nothing to
select, and the report says so.

The tables may have been written by another saver at a lower migration level
(an older ``langgraph-checkpoint-postgres``, or the JavaScript saver, whose
``checkpoint_writes`` lack ``task_path``). Then checkpoints are loaded by the
installed saver with its two reading statements leaving that column out, so
the check still judges them; a schema lacking more than that is reported as
unsupported, with nothing checked and nothing failed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from time import perf_counter, time
from typing import Any, Final

import psycopg
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from psycopg import AsyncConnection
from psycopg.rows import DictRow

from exporter.jobs import JobKey
from exporter.log import get_logger
from exporter.redact import describe_error
from exporter.sql.checkpoints import without_task_path
from exporter.sql.server import TABLE_EXISTS
from exporter.sql.workflow_metadata import running_workflows
from exporter.target import Target
from exporter.workflows.saver_schema import SaverSchema, read_saver_schema
from exporter.workflows.schema import CANARY_THREAD_ID, INTERRUPTED, RUNNING, TABLE

log = get_logger("recovery")

# Errors that mean the database could not be asked at all.
UNREACHABLE: Final = (psycopg.Error, OSError, TimeoutError)

# The error class reported for a running workflow with no checkpoint left to resume from.
NO_CHECKPOINT: Final = "CheckpointMissing"


class LowerLevelSaver(AsyncPostgresSaver):
    """The installed saver reading checkpoints from tables without ``task_path``.

    Only ``aget_tuple`` is used: its statements are the installed ones minus that
    column, and it decodes as the installed saver does. It never writes.
    """

    SELECT_SQL = without_task_path(AsyncPostgresSaver.SELECT_SQL) or ""
    SELECT_PENDING_SENDS_SQL = without_task_path(AsyncPostgresSaver.SELECT_PENDING_SENDS_SQL) or ""


LOWER_LEVEL_READS: Final = bool(
    LowerLevelSaver.SELECT_SQL and LowerLevelSaver.SELECT_PENDING_SENDS_SQL
)


@dataclass(frozen=True, slots=True)
class RecoveryFailure:
    """One running workflow whose latest checkpoint could not be loaded, and why."""

    thread_id: str
    error: str


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    """One run's outcome.

    ``error`` is set (and nothing was checked) when the database could not be
    asked; ``table_exists`` is False when there was no ``workflow_metadata`` to read;
    ``unsupported`` says why checkpoint tables written by another saver could not be
    read (nothing was checked); ``lower_level`` is True when they were read without
    the columns of later migrations.
    """

    checked: int
    recovered: int
    failures: tuple[RecoveryFailure, ...]
    completed_at: float
    duration_seconds: float
    table_exists: bool = True
    error: str | None = None
    unsupported: str | None = None
    lower_level: bool = False

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def ok(self) -> bool:
        """The run reached the database and every checked workflow recovered."""
        return self.error is None and not self.failures

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (the ``verify`` command prints it)."""
        return {
            "checked": self.checked,
            "recovered": self.recovered,
            "failed": self.failed,
            "failures": [{"threadId": f.thread_id, "error": f.error} for f in self.failures],
            "tableExists": self.table_exists,
            "error": self.error,
            "unsupported": self.unsupported,
            "lowerLevel": self.lower_level,
            "completedAt": self.completed_at,
            "durationSeconds": round(self.duration_seconds, 6),
        }


@dataclass(slots=True)
class _Tally:
    checked: int = 0
    failures: list[RecoveryFailure] = field(default_factory=list)
    unsupported: str | None = None
    lower_level: bool = False


RECOVERY: Final[JobKey[RecoveryReport]] = JobKey("recovery")


class RecoveryCheck:
    """Runs the check on a connection of its own and keeps the last report.

    The target's serializer must be the application saver's when there is one
    (custom types, encryption): the check loads checkpoints exactly as a
    resuming run would. As a job it runs once, at start, on every sidecar:
    each replica's restart is what it checks.
    """

    def __init__(self, target: Target, limit: int) -> None:
        self._target = target
        self._limit = limit
        self._serde = target.reader
        # Runs at start and on demand may overlap; one at a time.
        self._lock = asyncio.Lock()
        self.last: RecoveryReport | None = None

    @property
    def key(self) -> JobKey[RecoveryReport]:
        return RECOVERY

    def status(self) -> RecoveryReport | None:
        return self.last

    async def work(self, leading: Callable[[], bool]) -> None:
        """Check once; outages are part of the report, anything else is logged, not lost."""
        try:
            await self.run()
        except Exception as exc:
            log.error("recovery_check_crashed", error=describe_error(exc))

    async def close(self) -> None:
        """Nothing outlives a check: each runs on a connection of its own."""

    async def run(self) -> RecoveryReport:
        """Check now and return the report (also kept as ``last``); an outage is reported.

        Never raises for an unreachable database: the report's ``error`` says why.
        """
        started = perf_counter()
        try:
            return await self.check()
        except UNREACHABLE as exc:
            report = RecoveryReport(
                0, 0, (), time(), perf_counter() - started, error=describe_error(exc)
            )
            log.warning("recovery_check_unavailable", error=report.error)
            self.last = report
            return report

    async def check(self) -> RecoveryReport:
        """Check now; raise ``psycopg.Error``, ``OSError`` or ``TimeoutError`` on an outage."""
        async with self._lock:
            started = perf_counter()
            tally = _Tally()
            table_exists = await self._check(tally)
            report = RecoveryReport(
                checked=tally.checked,
                recovered=tally.checked - len(tally.failures),
                failures=tuple(tally.failures),
                completed_at=time(),
                duration_seconds=perf_counter() - started,
                table_exists=table_exists,
                unsupported=tally.unsupported,
                lower_level=tally.lower_level,
            )
            _log_report(report, self._target.schema)
            self.last = report
            return report

    async def _check(self, tally: _Tally) -> bool:
        schema = self._target.schema
        async with await self._target.connect(on_search_path=True) as conn:
            cursor = await conn.execute(TABLE_EXISTS, (schema, TABLE))
            row = await cursor.fetchone()
            if not (row and row["exists"]):
                return False
            cursor = await conn.execute(
                running_workflows(schema),
                ([RUNNING, INTERRUPTED], CANARY_THREAD_ID, self._limit),
            )
            threads = [str(r["thread_id"]) for r in await cursor.fetchall()]
            saver = self._reader(conn, await read_saver_schema(conn, schema), tally)
            if saver is not None:
                await self._load_all(saver, conn, threads, tally)
        return True

    def _reader(
        self, conn: AsyncConnection[DictRow], schema: SaverSchema, tally: _Tally
    ) -> AsyncPostgresSaver | None:
        """The saver that reads this schema's checkpoints; None if none can.

        Missing tables are left to the installed saver, whose failure to load a
        running workflow's checkpoint is then the finding.
        """
        if not schema.tables or schema.supported:
            return AsyncPostgresSaver(conn=conn, serde=self._serde)
        if schema.readable and LOWER_LEVEL_READS:
            tally.lower_level = True
            return LowerLevelSaver(conn=conn, serde=self._serde)
        tally.unsupported = schema.reason()
        return None

    async def _load_all(
        self,
        saver: AsyncPostgresSaver,
        conn: AsyncConnection[DictRow],
        threads: Sequence[str],
        tally: _Tally,
    ) -> None:
        for thread_id in threads:
            tally.checked += 1
            try:
                loaded = await saver.aget_tuple(
                    {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
                )
            except Exception as exc:
                if conn.broken or conn.closed:
                    raise  # the database went away: no verdict on this thread or the rest
                tally.failures.append(RecoveryFailure(thread_id, type(exc).__name__))
                continue
            if loaded is None:
                tally.failures.append(RecoveryFailure(thread_id, NO_CHECKPOINT))


def _log_report(report: RecoveryReport, schema: str) -> None:
    if not report.table_exists:
        log.info("recovery_check_skipped", reason=f"no {TABLE} table", schema=schema)
        return
    if report.unsupported is not None:
        log.info("recovery_check_skipped", reason=report.unsupported, schema=schema)
        return
    for failure in report.failures:
        log.warning("recovery_check_failed", thread_id=failure.thread_id, error=failure.error)
    log.info(
        "recovery_check_finished",
        checked=report.checked,
        recovered=report.recovered,
        failed=report.failed,
        lower_level=report.lower_level,
        duration_seconds=round(report.duration_seconds, 6),
    )
