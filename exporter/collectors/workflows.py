"""Workflows by status, stuck and prune-worthy ones, from the ``workflow_metadata`` table.

Produces (every status appears, zero when none; the canary probe's thread is
never counted; ages are 0 when no workflow runs)::

    langgraph_checkpointer_workflows_table_exists 1
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
than ``CHECKPOINT_EXPORTER_PRUNE_THRESHOLD``. Without the table (tracking
never set up) only ``table_exists 0`` is exported.

Cost: one statement per scrape, over this table only (one row per thread,
never LangGraph's tables). The status counts read an entry per thread, from
the (status, last_activity) index when the visibility map allows; stuck
workflows and the longest idle one are a range of that index, prune
candidates a range of the checkpoint_count index.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import suppress
from functools import cache
from typing import Any, ClassVar, Final

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from psycopg import AsyncConnection, errors, sql
from psycopg.rows import dict_row

from exporter.collectors.base import ScrapeContext
from exporter.log import get_logger
from exporter.settings import Settings
from exporter.sql import bound
from exporter.workflows.schema import CANARY_THREAD_ID, RUNNING, STATUSES, TABLE

log = get_logger("workflows")

PREFIX = "langgraph_checkpointer_workflows_"

# format('%I.%I') quotes schema and table server-side, as the migrations collector does.
TABLE_EXISTS: Final = """
SELECT to_regclass(format('%I.%I', {schema}::text, {name}::text)) IS NOT NULL AS exists
"""

# Every figure in one snapshot. The canary's row is looked up by key and taken
# off its status in Python, so the count by status needs nothing but the
# status index. Ages are clamped at zero: a tracker may stamp an activity
# after this statement's now().
SUMMARY: Final = """
SELECT
    (SELECT coalesce(json_object_agg(status, threads), '{{}}')
     FROM (SELECT status, count(*) AS threads FROM {table} GROUP BY status) AS s) AS statuses,
    (SELECT status FROM {table} WHERE thread_id = {canary}) AS canary_status,
    (SELECT count(*) FROM {table}
     WHERE status = {running} AND last_activity < now() - make_interval(secs => {stuck})
       AND thread_id <> {canary}) AS stuck,
    (SELECT greatest(extract(epoch FROM now() - min(first_activity))::float8, 0) FROM {table}
     WHERE status = {running} AND thread_id <> {canary}) AS oldest_running,
    (SELECT greatest(extract(epoch FROM now() - last_activity)::float8, 0) FROM {table}
     WHERE status = {running} AND thread_id <> {canary}
     ORDER BY last_activity LIMIT 1) AS longest_idle,
    (SELECT count(*) FROM {table}
     WHERE checkpoint_count > {threshold} AND thread_id <> {canary}) AS prune_candidates
"""

GONE_ERRORS: Final = (errors.UndefinedTable, errors.InvalidSchemaName)


@cache
def table_exists_query(schema: str) -> bytes:
    """:data:`TABLE_EXISTS` for ``schema``'s table, the names inlined."""
    return bound(TABLE_EXISTS, schema=schema, name=TABLE)


@cache
def summary_query(schema: str, stuck_after: float, prune_threshold: int) -> bytes:
    """:data:`SUMMARY` for ``schema``'s table and these thresholds, all inlined."""
    return bound(
        SUMMARY,
        table=sql.Identifier(schema, TABLE),
        canary=CANARY_THREAD_ID,
        running=RUNNING,
        stuck=float(stuck_after),
        threshold=int(prune_threshold),
    )


def missing_families() -> list[Metric]:
    """What a schema without the table exports."""
    return [_exists(False)]


def _exists(present: bool) -> Metric:
    return GaugeMetricFamily(
        PREFIX + "table_exists",
        "1 if the workflow_metadata table exists (workflow tracking is set up).",
        value=1.0 if present else 0.0,
    )


def workflows_families(
    row: Mapping[str, Any], *, stuck_after: float, prune_threshold: int
) -> list[Metric]:
    """Turn the :data:`SUMMARY` row into families, the canary's row left out.

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
    """Reads ``workflow_metadata`` in one statement once the table has been seen.

    Until then (and once after it is dropped) it asks the catalog first, so a
    schema without tracking never puts an error in the server's log; the first
    scrape that finds the table missing says so in ours, once until it appears.
    """

    name: ClassVar[str] = "workflows"
    database_wide: ClassVar[bool] = True

    def __init__(self) -> None:
        self._table_seen = False
        self._missing_logged = False

    async def collect(self, ctx: ScrapeContext) -> list[Metric]:
        if ctx.database is None:
            return []
        settings = ctx.settings
        async with ctx.database.connection() as conn:
            row = await self._read(conn, settings)
        self._table_seen = row is not None
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
        query = summary_query(schema, settings.stuck_after, settings.prune_threshold)
        if self._table_seen:
            with suppress(*GONE_ERRORS):
                return await _fetch_one(conn, query)
        exists = await _fetch_one(conn, table_exists_query(schema))
        if not exists["exists"]:
            return None
        return await _fetch_one(conn, query)


async def _fetch_one(conn: AsyncConnection[Any], query: bytes) -> Mapping[str, Any]:
    async with conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(query)
        row = await cursor.fetchone()
    if row is None:
        raise RuntimeError("a single-row query returned no row")
    return row
