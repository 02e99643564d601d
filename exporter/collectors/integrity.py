"""Integrity of the checkpoint tables, checked a batch of threads per scrape.

Each scrape starts one step of :mod:`exporter.workflows.integrity` in the
background, unless the last one still runs or began less than
``CHECKPOINT_EXPORTER_INTEGRITY_INTERVAL`` ago, and reports at once what the
steps so far found: decoding a batch's values costs far more than a scrape
may. A step examines the next ``CHECKPOINT_EXPORTER_INTEGRITY_BATCH`` threads
(in thread id order) and the next one resumes there; once every thread was
examined, the pass is complete and its counts are published. A step that
failed fails the next scrape's collector (``scrape_collector_success 0``). ``check`` is one of
``missing_blobs``, ``orphan_writes``, ``unreferenced_blobs``,
``undecodable_blobs`` (every check appears, zero when none). Produces::

    langgraph_checkpointer_integrity_problems{check="missing_blobs"} 0
    langgraph_checkpointer_integrity_problems{check="orphan_writes"} 3
    langgraph_checkpointer_integrity_problems{check="unreferenced_blobs"} 12
    langgraph_checkpointer_integrity_problems{check="undecodable_blobs"} 0
    langgraph_checkpointer_integrity_last_pass_threads 4000
    langgraph_checkpointer_integrity_last_pass_duration_seconds 300
    langgraph_checkpointer_integrity_last_pass_timestamp_seconds 1.7e+09
    langgraph_checkpointer_integrity_pass_problems{check="missing_blobs"} 0
    langgraph_checkpointer_integrity_pass_problems{check="orphan_writes"} 1
    langgraph_checkpointer_integrity_pass_problems{check="unreferenced_blobs"} 0
    langgraph_checkpointer_integrity_pass_problems{check="undecodable_blobs"} 0
    langgraph_checkpointer_integrity_pass_threads 1200
    langgraph_checkpointer_integrity_passes_completed_total 7
    langgraph_checkpointer_integrity_step_duration_seconds 0.08
    langgraph_checkpointer_integrity_batch_threads 200

``problems`` and the ``last_pass_*`` series are absent until a first pass
completes, ``step_duration_seconds`` until a first step does; ``pass_*``
describe the pass under way. A step that misses the
collector deadline (or fails) halves ``batch_threads`` for the next one; fast
steps double it back up to the setting. Each problem is also logged
(``integrity_problem``, with thread id and detail) when first found.

Values are decoded with the application's serializer when the sidecar runs
in-process with its saver; standalone, with LangGraph's ``JsonPlusSerializer``,
which cannot read values an application encrypts or serializes its own way.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from langgraph.checkpoint.serde.base import SerializerProtocol
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from psycopg_pool import AsyncConnectionPool

from exporter.collectors.base import Memo, ScrapeContext
from exporter.deadline import within
from exporter.log import get_logger
from exporter.workflows.integrity import (
    CHECKS,
    Finding,
    MissingTablesError,
    PassReport,
    Scanner,
    Step,
)

log = get_logger("integrity")

PREFIX = "langgraph_checkpointer_integrity_"
# Findings logged one by one per step; the rest are only counted in the log.
LOGGED_FINDINGS: Final = 20


def _by_check(name: str, doc: str, counts: dict[str, int]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(PREFIX + name, doc, labels=["check"])
    for check in CHECKS:
        family.add_metric([check], float(counts.get(check, 0)))
    return family


@dataclass(frozen=True, slots=True)
class ScannerState:
    """What a scrape reports of the scanner; ``last_pass`` None before a pass completes."""

    last_pass: PassReport | None
    pass_counts: dict[str, int]
    pass_threads: int
    passes: int
    step_seconds: float | None
    batch: int


def integrity_families(state: ScannerState) -> list[Metric]:
    """The scanner's state as families."""
    last_pass, step_seconds = state.last_pass, state.step_seconds
    families: list[Metric] = []
    if last_pass is not None:
        families += [
            _by_check(
                "problems",
                "Problems the last completed pass found, by check.",
                dict(last_pass.counts),
            ),
            GaugeMetricFamily(
                PREFIX + "last_pass_threads",
                "Threads the last completed pass examined.",
                value=float(last_pass.threads),
            ),
            GaugeMetricFamily(
                PREFIX + "last_pass_duration_seconds",
                "Time from the first to the last step of the last completed pass.",
                value=last_pass.seconds,
            ),
            GaugeMetricFamily(
                PREFIX + "last_pass_timestamp_seconds",
                "Unix time the last pass completed.",
                value=last_pass.completed_at,
            ),
        ]
    families += [
        _by_check(
            "pass_problems",
            "Problems the pass under way has found so far, by check.",
            state.pass_counts,
        ),
        GaugeMetricFamily(
            PREFIX + "pass_threads",
            "Threads the pass under way has examined so far.",
            value=float(state.pass_threads),
        ),
        CounterMetricFamily(
            PREFIX + "passes_completed",
            "Passes over every thread completed since the exporter started.",
            value=float(state.passes),
        ),
    ]
    if step_seconds is not None:
        families.append(
            GaugeMetricFamily(
                PREFIX + "step_duration_seconds",
                "Time the last completed step took.",
                value=step_seconds,
            )
        )
    families.append(
        GaugeMetricFamily(
            PREFIX + "batch_threads",
            "Threads the next step examines (halved after a step that missed its deadline).",
            value=float(state.batch),
        )
    )
    return families


def log_findings(findings: Sequence[Finding], limit: int = LOGGED_FINDINGS) -> None:
    """Log each finding, at most ``limit`` of them, and how many more were left out."""
    for finding in findings[:limit]:
        log.warning(
            "integrity_problem",
            check=finding.check,
            thread_id=finding.thread_id,
            checkpoint_ns=finding.checkpoint_ns,
            count=finding.count,
            detail=finding.detail,
        )
    if len(findings) > limit:
        log.warning("integrity_problems_not_logged", findings=len(findings) - limit)


def _pass_completed(report: PassReport) -> None:
    log.info(
        "integrity_pass_completed",
        threads=report.threads,
        seconds=round(report.seconds, 3),
        **dict(report.counts),
    )


class IntegrityCollector:
    """Starts one integrity step per scrape in the background and reports the scanner.

    The scanner (cursor, tallies, last pass) lives on the instance, keyed by
    pool, schema, batch size and serializer; a change starts over. A scrape
    that arrives while a step runs reports without starting another.
    """

    name: ClassVar[str] = "integrity"
    database_wide: ClassVar[bool] = True

    def __init__(self) -> None:
        self._scanner: Scanner | None = None
        self._key: tuple[int, str, int, float, int] | None = None
        self._task: asyncio.Task[None] | None = None
        self._started: float | None = None  # monotonic time the last step began
        self._failure: Exception | None = None
        self._step_seconds: float | None = None
        self._missing_logged = False
        self._families = Memo(integrity_families)

    @property
    def scanner(self) -> Scanner | None:
        return self._scanner

    def _scanner_for(self, ctx: ScrapeContext) -> Scanner:
        settings = ctx.settings
        serde: SerializerProtocol | None = ctx.saver.serde if ctx.saver is not None else None
        key = (
            id(ctx.database),
            settings.postgres_schema,
            settings.integrity_batch,
            settings.integrity_orphan_grace,
            id(serde),
        )
        if self._scanner is None or key != self._key:
            self._key = key
            self._scanner = Scanner(
                settings.postgres_schema,
                serde,
                settings.integrity_batch,
                budget=settings.collector_timeout,
                orphan_grace=settings.integrity_orphan_grace,
            )
            self._step_seconds = None
        return self._scanner

    async def collect(self, ctx: ScrapeContext) -> Sequence[Metric]:
        if ctx.database is None:
            return []
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure
        scanner = self._scanner_for(ctx)
        now = time.monotonic()
        due = self._started is None or now - self._started >= ctx.settings.integrity_interval
        if due and (self._task is None or self._task.done()):
            self._started = now
            step = self._step(scanner, ctx.database, ctx.settings.collector_timeout)
            self._task = asyncio.create_task(step, name="integrity-step")
        return self._families(
            ScannerState(
                last_pass=scanner.last_pass,
                pass_counts=dict(scanner.counts),
                pass_threads=scanner.threads,
                passes=scanner.passes,
                step_seconds=self._step_seconds,
                batch=scanner.batch,
            )
        )

    @property
    def running(self) -> asyncio.Task[None] | None:
        """The step under way, if any."""
        return self._task if self._task is not None and not self._task.done() else None

    async def wait(self) -> None:
        """Wait for the step under way, if any (tests and shutdown)."""
        if self._task is not None:
            await asyncio.wait({self._task})

    async def close(self) -> None:
        """Cancel the step under way; safe to call twice."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task})

    async def _step(
        self, scanner: Scanner, database: AsyncConnectionPool[Any], deadline: float
    ) -> None:
        try:
            step = await within(deadline, self._step_on(scanner, database, deadline))
        except MissingTablesError as exc:
            if not self._missing_logged:
                log.info("integrity_tables_missing", reason=str(exc))
                self._missing_logged = True
        except Exception as exc:
            # Reported by the next scrape, as the collector's failure.
            self._failure = exc
        else:
            self._missing_logged = False
            self._stepped(step)

    @staticmethod
    async def _step_on(
        scanner: Scanner, database: AsyncConnectionPool[Any], deadline: float
    ) -> Step:
        async with database.connection(timeout=deadline) as conn:
            return await scanner.step(conn)

    def _stepped(self, step: Step) -> None:
        self._step_seconds = step.seconds
        log_findings(_ordered(step.findings))
        if step.completed is not None:
            _pass_completed(step.completed)


def _ordered(findings: Iterable[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: (f.check, f.thread_id, f.checkpoint_ns))
