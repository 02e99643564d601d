"""Connection pool figures from psycopg_pool's ``get_stats()``.

Produces, per pool (``checkpointer``: the application's, ``exporter``: ours)::

    langgraph_checkpointer_pool_connections{pool="checkpointer"} 4
    langgraph_checkpointer_pool_min_connections{pool="checkpointer"} 1
    langgraph_checkpointer_pool_max_connections{pool="checkpointer"} 10
    langgraph_checkpointer_pool_available_connections{pool="checkpointer"} 2
    langgraph_checkpointer_pool_requests_waiting{pool="checkpointer"} 0
    langgraph_checkpointer_pool_requests_total{pool="checkpointer"} 1520
    langgraph_checkpointer_pool_requests_queued_total{pool="checkpointer"} 12
    langgraph_checkpointer_pool_requests_wait_seconds_total{pool="checkpointer"} 0.35
    langgraph_checkpointer_pool_requests_errors_total{pool="checkpointer"} 0
    langgraph_checkpointer_pool_usage_seconds_total{pool="checkpointer"} 9.8
    langgraph_checkpointer_pool_returns_bad_total{pool="checkpointer"} 0
    langgraph_checkpointer_pool_connections_opened_total{pool="checkpointer"} 4
    langgraph_checkpointer_pool_connect_seconds_total{pool="checkpointer"} 0.02
    langgraph_checkpointer_pool_connection_errors_total{pool="checkpointer"} 0
    langgraph_checkpointer_pool_connections_lost_total{pool="checkpointer"} 0
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from exporter.collectors.base import ScrapeContext

PREFIX = "langgraph_checkpointer_pool_"

# get_stats() key -> (metric name, help, factor). Counters are absent until
# first incremented, so a missing key means zero. Durations come in ms.
GAUGES: Final = {
    "pool_size": ("connections", "Connections the pool holds, busy or idle.", 1.0),
    "pool_min": ("min_connections", "Configured minimum pool size.", 1.0),
    "pool_max": ("max_connections", "Configured maximum pool size.", 1.0),
    "pool_available": ("available_connections", "Idle connections ready for use.", 1.0),
    "requests_waiting": ("requests_waiting", "Requests queued for a connection now.", 1.0),
}
COUNTERS: Final = {
    "requests_num": ("requests", "Connections requested from the pool.", 1.0),
    "requests_queued": ("requests_queued", "Requests that had to wait for a connection.", 1.0),
    "requests_wait_ms": ("requests_wait_seconds", "Time requests spent waiting.", 0.001),
    "requests_errors": ("requests_errors", "Requests that failed (timeout or queue full).", 1.0),
    "usage_ms": ("usage_seconds", "Time connections were lent out.", 0.001),
    "returns_bad": ("returns_bad", "Connections returned in a bad state.", 1.0),
    "connections_num": ("connections_opened", "Connection attempts made.", 1.0),
    "connections_ms": ("connect_seconds", "Time spent opening connections.", 0.001),
    "connections_errors": ("connection_errors", "Failed connection attempts.", 1.0),
    "connections_lost": ("connections_lost", "Connections found broken by a check.", 1.0),
}


def pool_families(stats_by_pool: Mapping[str, Mapping[str, int]]) -> list[Metric]:
    """Turn ``get_stats()`` dictionaries, keyed by pool name, into metric families."""
    families: list[Metric] = []
    for table, family_type in ((GAUGES, GaugeMetricFamily), (COUNTERS, CounterMetricFamily)):
        for key, (name, doc, factor) in table.items():
            family = family_type(PREFIX + name, doc, labels=["pool"])
            for pool, stats in stats_by_pool.items():
                family.add_metric([pool], stats.get(key, 0) * factor)
            families.append(family)
    return families


class PoolCollector:
    """Reads each pool's counters with ``get_stats()``, never ``pop_stats()``, which resets them."""

    name: ClassVar[str] = "pool"
    database_wide: ClassVar[bool] = False

    async def collect(self, ctx: ScrapeContext) -> list[Metric]:
        return pool_families({name: pool.get_stats() for name, pool in ctx.pools.items()})
