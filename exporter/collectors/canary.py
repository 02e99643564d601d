"""The canary probe's figures, from the state the sidecar's canary keeps.

Produces (the two histograms with the save and load targets' buckets)::

    langgraph_checkpointer_canary_save_duration_seconds_bucket{le="0.05"} 118
    langgraph_checkpointer_canary_save_duration_seconds_count 120
    langgraph_checkpointer_canary_save_duration_seconds_sum 1.9
    langgraph_checkpointer_canary_load_duration_seconds_bucket{le="0.1"} 120
    langgraph_checkpointer_canary_load_duration_seconds_count 120
    langgraph_checkpointer_canary_load_duration_seconds_sum 0.8
    langgraph_checkpointer_canary_probes_total{result="success"} 118
    langgraph_checkpointer_canary_probes_total{result="timeout"} 1
    langgraph_checkpointer_canary_probes_total{result="error"} 1
    langgraph_checkpointer_canary_probes_total{result="mismatch"} 0
    langgraph_checkpointer_canary_last_success 1
    langgraph_checkpointer_canary_last_probe_timestamp_seconds 1.7e+09
    langgraph_checkpointer_canary_consecutive_failures 0
    langgraph_checkpointer_canary_restart_readback{result="success"} 1
    langgraph_checkpointer_canary_restart_readback{result="missing"} 0
    langgraph_checkpointer_canary_restart_readback{result="failed"} 0
    langgraph_checkpointer_canary_supported 1

A probe saves and loads only on the sidecar that leads; ``last_probe_timestamp_seconds``
is 0 before the first probe, and ``restart_readback`` is all zeros until the canary
stored before start could be read. ``supported`` is 0 while the schema lacks columns
the canary's saver needs (another saver wrote it at a lower migration level): then
nothing is probed or counted, and the schema is read again every interval. Nothing is
produced when the canary is off.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric

from exporter.collectors.base import Memo, ScrapeContext
from exporter.workflows.canary import (
    CANARY,
    READBACK_RESULTS,
    RESULTS,
    SUCCESS,
    CanaryStatus,
)

PREFIX = "langgraph_checkpointer_canary_"


def canary_families(status: CanaryStatus) -> list[Metric]:
    """Turn a canary snapshot into metric families."""
    save = HistogramMetricFamily(
        PREFIX + "save_duration_seconds",
        "Time the canary took to save its checkpoint and pending writes.",
    )
    save.add_metric([], status.save.cumulative(), status.save.sum)
    load = HistogramMetricFamily(
        PREFIX + "load_duration_seconds",
        "Time the canary took to load its checkpoint back (get_tuple).",
    )
    load.add_metric([], status.load.cumulative(), status.load.sum)
    probes = CounterMetricFamily(
        PREFIX + "probes",
        "Canary probes by result: success, timeout, error, or mismatch (data read back "
        "differs from what was written).",
        labels=["result"],
    )
    for result in RESULTS:
        probes.add_metric([result], status.probes.get(result, 0))
    readback = GaugeMetricFamily(
        PREFIX + "restart_readback",
        "1 for what reading back the canary stored before this process started found: "
        "success, missing (none was ever written) or failed.",
        labels=["result"],
    )
    for result in READBACK_RESULTS:
        readback.add_metric([result], 1.0 if status.readback == result else 0.0)
    return [
        save,
        load,
        probes,
        GaugeMetricFamily(
            PREFIX + "last_success",
            "1 when the last canary probe succeeded.",
            value=1.0 if status.last_result == SUCCESS else 0.0,
        ),
        GaugeMetricFamily(
            PREFIX + "last_probe_timestamp_seconds",
            "Unix time of the last canary probe (0: none yet).",
            value=status.last_probe_at or 0.0,
        ),
        GaugeMetricFamily(
            PREFIX + "consecutive_failures",
            "Canary probes failed in a row since the last success.",
            value=status.consecutive_failures,
        ),
        readback,
        GaugeMetricFamily(
            PREFIX + "supported",
            "0 while the schema lacks columns the canary's saver needs (written at a lower "
            "migration level by another saver): the canary does not probe, and counts nothing.",
            value=0.0 if status.unsupported is not None else 1.0,
        ),
    ]


class CanaryCollector:
    """Exports the canary's figures; database-wide, since one sidecar per database probes."""

    name: ClassVar[str] = "canary"
    database_wide: ClassVar[bool] = True

    def __init__(self) -> None:
        self._families = Memo(canary_families)

    async def collect(self, ctx: ScrapeContext) -> Sequence[Metric]:
        status = ctx.jobs.get(CANARY)
        if status is None:
            return []
        return self._families(status)
