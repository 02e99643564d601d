"""Sessions on the checkpoint database, from ``pg_stat_activity``.

Produces (client backends only; ``application`` is ``checkpointer`` for the
application's checkpointer connections, ``exporter`` for ours, ``other`` for
the rest; every known ``state`` appears, zero when empty)::

    langgraph_checkpointer_activity_connections{application="checkpointer",state="active"} 2
    langgraph_checkpointer_activity_connections{application="checkpointer",state="idle"} 6
    langgraph_checkpointer_activity_connections{application="other",state="idle in transaction"} 0
    langgraph_checkpointer_activity_connections{application="exporter",state="active"} 1
    langgraph_checkpointer_activity_connections{application="other",state="disabled"} 0
    langgraph_checkpointer_activity_server_connections 23
    langgraph_checkpointer_activity_max_connections 100
    langgraph_checkpointer_activity_reserved_connections 3
    langgraph_checkpointer_activity_oldest_transaction_seconds 0.42
    langgraph_checkpointer_activity_longest_active_query_seconds 0.03
    langgraph_checkpointer_activity_lock_waiting_connections 0
    langgraph_checkpointer_activity_idle_in_transaction_connections 0
    langgraph_checkpointer_activity_oldest_idle_in_transaction_seconds 0

Connections near the limit:
``server_connections / (max_connections - reserved_connections)``.
Other roles' sessions are visible only to a role with ``pg_monitor`` (or
``pg_read_all_stats``); without it they are missing from these figures.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Final

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from exporter.collectors.base import ScrapeContext
from exporter.database import EXPORTER_APPLICATION_NAME
from exporter.sql.server import ACTIVITY as ACTIVITY  # exported: the statement this runs

PREFIX = "langgraph_checkpointer_activity_"

STATES: Final = (
    "active",
    "idle",
    "idle in transaction",
    "idle in transaction (aborted)",
    "fastpath function call",
    "disabled",
)
APPLICATIONS: Final = ("checkpointer", "exporter", "other")

# ACTIVITY column -> (metric name, help).
SUMMARY_GAUGES: Final = {
    "server_connections": (
        "server_connections",
        "Client connections to the whole server, every database.",
    ),
    "max_connections": ("max_connections", "The server's max_connections."),
    "reserved_connections": (
        "reserved_connections",
        "Slots of max_connections kept for privileged roles"
        " (superuser_reserved_connections plus reserved_connections).",
    ),
    "oldest_transaction_seconds": (
        "oldest_transaction_seconds",
        "Age of the oldest open transaction on the database (0 when none).",
    ),
    "longest_active_query_seconds": (
        "longest_active_query_seconds",
        "Run time of the longest active query on the database, the exporter's own excepted.",
    ),
    "lock_waiting_connections": (
        "lock_waiting_connections",
        "Connections to the database waiting for a lock.",
    ),
    "idle_in_transaction_connections": (
        "idle_in_transaction_connections",
        "Connections to the database idle in a transaction, aborted or not.",
    ),
    "oldest_idle_in_transaction_seconds": (
        "oldest_idle_in_transaction_seconds",
        "Time the longest idle-in-transaction connection has been idle (0 when none).",
    ),
}


def application_label(application_name: str | None, checkpointer_application: str) -> str:
    """Fold an unbounded ``application_name`` into ``checkpointer``, ``exporter`` or ``other``."""
    if application_name == checkpointer_application:
        return "checkpointer"
    if application_name == EXPORTER_APPLICATION_NAME:
        return "exporter"
    return "other"


def activity_families(
    row: Mapping[str, Any],
    *,
    checkpointer_application: str,
) -> list[Metric]:
    """Turn the ``ACTIVITY`` row into metric families.

    Every known state and application is exported, zero when empty; a state a
    newer server reports is kept as its own label value, and a session without
    a state yet (still authenticating) is left out.
    """
    counts = {(state, app): 0 for state in STATES for app in APPLICATIONS}
    for group in row["states"]:
        state = group["state"]
        if state is None:
            continue
        key = (str(state), application_label(group["application_name"], checkpointer_application))
        counts[key] = counts.get(key, 0) + int(group["connections"])
    connections = GaugeMetricFamily(
        PREFIX + "connections",
        "Client connections to the checkpoint database, by state and application.",
        labels=["state", "application"],
    )
    for (state, app), count in counts.items():
        connections.add_metric([state, app], float(count))
    families: list[Metric] = [connections]
    for column, (name, doc) in SUMMARY_GAUGES.items():
        families.append(GaugeMetricFamily(PREFIX + name, doc, value=float(row[column] or 0)))
    return families


class ActivityCollector:
    """Reads ``pg_stat_activity`` for the checkpoint database in one statement."""

    name: ClassVar[str] = "activity"
    database_wide: ClassVar[bool] = True

    async def collect(self, ctx: ScrapeContext) -> list[Metric]:
        if ctx.database is None:
            return []
        async with ctx.database.connection() as conn:
            cursor = await conn.execute(ACTIVITY)
            row = await cursor.fetchone()
        if row is None:
            raise RuntimeError("pg_stat_activity summary returned no row")
        return activity_families(row, checkpointer_application=ctx.settings.application_name)
