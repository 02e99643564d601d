"""Workflows by status, stuck and prune-worthy ones, from the ``workflow_metadata`` table.

Produces (every status appears, zero when none; the canary probe's thread is
never counted; ages are 0 when no workflow runs)::

    langgraph_checkpointer_workflows_table_exists 1
    langgraph_checkpointer_workflows_available 1
    langgraph_checkpointer_workflows_unavailable{reason="no_workflow_metadata"} 0
    langgraph_checkpointer_workflows_threads{status="running"} 12
    langgraph_checkpointer_workflows_threads{status="interrupted"} 3
    langgraph_checkpointer_workflows_threads{status="completed"} 950
    langgraph_checkpointer_workflows_threads{status="failed"} 7
    langgraph_checkpointer_workflows_threads{status="cancelled"} 1
    langgraph_checkpointer_workflows_stuck_threads 2
    langgraph_checkpointer_workflows_stuck_threshold_seconds 900
    langgraph_checkpointer_workflows_oldest_running_age_seconds 5400
    langgraph_checkpointer_workflows_longest_running_idle_seconds 1300
    langgraph_checkpointer_workflows_prune_candidate_threads 4
    langgraph_checkpointer_workflows_prune_threshold_checkpoints 1000

A workflow is stuck when it is running and its last checkpoint is older than
``CHECKPOINT_EXPORTER_STUCK_AFTER``; a prune candidate has more checkpoints
than ``CHECKPOINT_EXPORTER_PRUNE_THRESHOLD``. Without the table (the writer is
not one this project wraps: tracking never set up, a LangGraph.js application)
the figures are unavailable, not zero: ``table_exists 0``, ``available 0`` and
``unavailable{reason="no_workflow_metadata"} 1`` are all that is exported.

Cost: one statement per scrape, over this table only (one row per thread,
never LangGraph's tables), that does not grow with the number of threads. The
counts by status are the rows of ``workflow_status_counts``, which triggers on
``workflow_metadata`` keep exact; the oldest running workflow and the longest
idle one are the first entry of a range of the (status, first_activity) and
(status, last_activity) indexes. Two figures grow with what they count, not
with the table: stuck workflows (a range of the (status, last_activity) index)
and prune candidates (a range of the checkpoint_count index). A schema whose
migrations predate the counts (an application on an older version of this
library; a standalone sidecar never migrates) or a role that cannot read them
is counted by a scan of the status index instead, as before, logged once; the
catalog is asked again every :data:`RECHECK_SECONDS` until the counts appear.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from functools import cache
from typing import Any, ClassVar, Final

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from psycopg import AsyncConnection, errors
from psycopg.rows import dict_row

from exporter.collectors.base import ScrapeContext
from exporter.log import get_logger
from exporter.settings import Settings
from exporter.sql import workflow_metadata
from exporter.sql.server import tables_exist
from exporter.workflows.schema import CANARY_THREAD_ID, COUNTS_TABLE, RUNNING, STATUSES, TABLE

log = get_logger("workflows")

PREFIX = "langgraph_checkpointer_workflows_"

# How long a schema without readable counts is taken to stay so before the catalog is asked again.
RECHECK_SECONDS: Final = 60.0

# Why the figures are unavailable; each is exported, 1 for the one that applies.
NO_WORKFLOW_METADATA: Final = "no_workflow_metadata"
UNAVAILABLE_REASONS: Final = (NO_WORKFLOW_METADATA,)

GONE_ERRORS: Final = (errors.UndefinedTable, errors.InvalidSchemaName)
# Reading the counts may also fail once their grant is revoked: look again.
RECHECK_ERRORS: Final = (*GONE_ERRORS, errors.InsufficientPrivilege)


@cache
def table_exists_query(schema: str) -> bytes:
    """Whether ``schema`` holds the table, and the maintained counts this role may read."""
    return tables_exist(schema, (TABLE, COUNTS_TABLE))


@cache
def summary_query(
    schema: str, stuck_after: float, prune_threshold: int, *, counted: bool = True
) -> bytes:
    """The summary (:func:`exporter.sql.workflow_metadata.summary`) for ``schema`` and these
    thresholds, built once per process; not ``counted``, by a scan of the status index."""
    return workflow_metadata.summary(
        schema,
        canary=CANARY_THREAD_ID,
        running=RUNNING,
        stuck_after=stuck_after,
        prune_threshold=prune_threshold,
        counted=counted,
    )


def missing_families() -> list[Metric]:
    """What a schema without the table exports: unavailable, and why."""
    return [_exists(False), *_availability(NO_WORKFLOW_METADATA)]


def _availability(reason: str | None) -> list[Metric]:
    available = GaugeMetricFamily(
        PREFIX + "available",
        "1 if workflow figures are exported; 0 if they cannot be known (see unavailable).",
        value=0.0 if reason else 1.0,
    )
    unavailable = GaugeMetricFamily(
        PREFIX + "unavailable",
        "1 for the reason workflow figures cannot be known (no_workflow_metadata: the table is "
        "absent, the writer is not one this exporter wraps); 0 for every other reason.",
        labels=["reason"],
    )
    for known in UNAVAILABLE_REASONS:
        unavailable.add_metric([known], 1.0 if known == reason else 0.0)
    return [available, unavailable]


def _exists(present: bool) -> Metric:
    return GaugeMetricFamily(
        PREFIX + "table_exists",
        "1 if the workflow_metadata table exists (workflow tracking is set up).",
        value=1.0 if present else 0.0,
    )


def workflows_families(
    row: Mapping[str, Any], *, stuck_after: float, prune_threshold: int
) -> list[Metric]:
    """Turn the summary's row into families, the canary's row left out.

    An unknown stored status is kept as its own label value.
    """
    counts = dict.fromkeys(STATUSES, 0)
    for status, threads in (row["statuses"] or {}).items():
        counts[str(status)] = int(threads)
    canary = row.get("canary_status")
    if canary is not None:
        counts[str(canary)] -= 1
    threads_family = GaugeMetricFamily(
        PREFIX + "threads", "Workflows (threads) by status.", labels=["status"]
    )
    for status, threads in counts.items():
        threads_family.add_metric([status], float(threads))
    return [
        _exists(True),
        *_availability(None),
        threads_family,
        GaugeMetricFamily(
            PREFIX + "stuck_threads",
            "Running workflows with no checkpoint for longer than the stuck threshold.",
            value=float(row["stuck"] or 0),
        ),
        GaugeMetricFamily(
            PREFIX + "stuck_threshold_seconds",
            "Idle time after which a running workflow counts as stuck (STUCK_AFTER).",
            value=stuck_after,
        ),
        GaugeMetricFamily(
            PREFIX + "oldest_running_age_seconds",
            "Time since the oldest running workflow started (0 when none runs).",
            value=float(row["oldest_running"] or 0),
        ),
        GaugeMetricFamily(
            PREFIX + "longest_running_idle_seconds",
            "Time since the last checkpoint of the longest idle running workflow (0 when none).",
            value=float(row["longest_idle"] or 0),
        ),
        GaugeMetricFamily(
            PREFIX + "prune_candidate_threads",
            "Threads with more checkpoints than the prune threshold.",
            value=float(row["prune_candidates"] or 0),
        ),
        GaugeMetricFamily(
            PREFIX + "prune_threshold_checkpoints",
            "Checkpoints per thread above which a thread is a prune candidate (PRUNE_THRESHOLD).",
            value=float(prune_threshold),
        ),
    ]


class WorkflowsCollector:
    """Reads ``workflow_metadata`` in one statement once the catalog has said which.

    Until then (and once after a table is dropped) it asks the catalog first, so
    a schema without tracking never puts an error in the server's log; the first
    scrape that finds the table missing says so in ours, once until it appears.
    A schema without readable counts is counted by a scan (logged once) and the
    catalog asked again after ``recheck`` seconds (by ``clock``).
    """

    name: ClassVar[str] = "workflows"
    database_wide: ClassVar[bool] = True

    def __init__(
        self, *, recheck: float = RECHECK_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._recheck = recheck
        self._clock = clock
        # Whether the maintained counts are read; None until the catalog has been asked.
        self._counted: bool | None = None
        self._recheck_at: float | None = None
        self._missing_logged = False
        self._scan_logged = False

    async def collect(self, ctx: ScrapeContext) -> list[Metric]:
        if ctx.database is None:
            return []
        settings = ctx.settings
        async with ctx.database.connection() as conn:
            row = await self._read(conn, settings)
        if row is None:
            if not self._missing_logged:
                log.info("workflow_table_missing", schema=settings.postgres_schema, table=TABLE)
                self._missing_logged = True
            return missing_families()
        self._missing_logged = False
        return workflows_families(
            row, stuck_after=settings.stuck_after, prune_threshold=settings.prune_threshold
        )

    async def _read(
        self, conn: AsyncConnection[Any], settings: Settings
    ) -> Mapping[str, Any] | None:
        schema = settings.postgres_schema
        due = self._recheck_at is not None and self._clock() >= self._recheck_at
        if self._counted is not None and not due:
            with suppress(*RECHECK_ERRORS):
                return await _fetch_one(conn, self._summary(settings, self._counted))
        found = await _fetch_by_name(conn, table_exists_query(schema))
        if not found[TABLE]["exists"]:
            self._counted = self._recheck_at = None
            return None
        self._counted = bool(found[COUNTS_TABLE]["readable"])
        if self._counted:
            self._recheck_at, self._scan_logged = None, False
        else:
            self._recheck_at = self._clock() + self._recheck
            if not self._scan_logged:
                log.info("workflow_status_counts_missing", schema=schema, table=COUNTS_TABLE)
                self._scan_logged = True
        return await _fetch_one(conn, self._summary(settings, self._counted))

    @staticmethod
    def _summary(settings: Settings, counted: bool) -> bytes:
        return summary_query(
            settings.postgres_schema,
            settings.stuck_after,
            settings.prune_threshold,
            counted=counted,
        )


async def _fetch_by_name(conn: AsyncConnection[Any], query: bytes) -> dict[str, Mapping[str, Any]]:
    """The rows of :func:`exporter.sql.server.tables_exist`, by table name."""
    async with conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(query)
        return {row["name"]: row for row in await cursor.fetchall()}


async def _fetch_one(conn: AsyncConnection[Any], query: bytes) -> Mapping[str, Any]:
    async with conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(query)
        row = await cursor.fetchone()
    if row is None:
        raise RuntimeError("a single-row query returned no row")
    return row
