"""The last recovery check's outcome, from the report the sidecar keeps.

Produces::

    langgraph_checkpointer_recovery_workflows_checked 42
    langgraph_checkpointer_recovery_workflows_recovered 41
    langgraph_checkpointer_recovery_workflows_failed 1
    langgraph_checkpointer_recovery_last_run_success 1
    langgraph_checkpointer_recovery_last_run_timestamp_seconds 1.7e+09
    langgraph_checkpointer_recovery_last_run_duration_seconds 0.35

The check runs at sidecar start and on demand, not on scrape: loading every
running workflow's checkpoint costs too much for every scrape. Before the
first run every figure is 0. ``last_run_success`` is 0 when the run could not
reach the database or found no ``workflow_metadata`` table.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from exporter.collectors.base import Memo, ScrapeContext
from exporter.workflows.recovery import RECOVERY, RecoveryReport

PREFIX = "langgraph_checkpointer_recovery_"


def recovery_families(report: RecoveryReport | None) -> list[Metric]:
    """Turn the last report (None: no run yet) into metric families."""
    return [
        GaugeMetricFamily(
            PREFIX + "workflows_checked",
            "Running and interrupted workflows whose latest checkpoint the last recovery check "
            "loaded.",
            value=report.checked if report else 0,
        ),
        GaugeMetricFamily(
            PREFIX + "workflows_recovered",
            "Of those, the workflows whose checkpoint loaded and decoded.",
            value=report.recovered if report else 0,
        ),
        GaugeMetricFamily(
            PREFIX + "workflows_failed",
            "Of those, the workflows whose checkpoint was missing or failed to load.",
            value=report.failed if report else 0,
        ),
        GaugeMetricFamily(
            PREFIX + "last_run_success",
            "1 when the last recovery check reached the database and read workflow_metadata.",
            value=1.0 if report and report.error is None and report.table_exists else 0.0,
        ),
        GaugeMetricFamily(
            PREFIX + "last_run_timestamp_seconds",
            "Unix time the last recovery check finished (0: none yet).",
            value=report.completed_at if report else 0.0,
        ),
        GaugeMetricFamily(
            PREFIX + "last_run_duration_seconds",
            "How long the last recovery check took.",
            value=report.duration_seconds if report else 0.0,
        ),
    ]


class RecoveryCollector:
    """Exports the last recovery check; database-wide, like the canary."""

    name: ClassVar[str] = "recovery"
    database_wide: ClassVar[bool] = True

    def __init__(self) -> None:
        self._families = Memo(recovery_families)

    async def collect(self, ctx: ScrapeContext) -> Sequence[Metric]:
        if ctx.database is None:
            return []
        return self._families(ctx.jobs.get(RECOVERY))
