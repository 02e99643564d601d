"""Execution time of the checkpointer's statements, from the ``pg_stat_statements`` extension.

Produces, per kind of statement (``load_checkpoint``, ``list``, ``save_checkpoint``,
``save_blobs``, ``save_writes``, ``delete``, ``migrate``, ``other``)::

    langgraph_checkpointer_statements_available 1
    langgraph_checkpointer_statements_calls_total{kind="save_checkpoint"} 1520
    langgraph_checkpointer_statements_seconds_total{kind="save_checkpoint"} 0.84
    langgraph_checkpointer_statements_rows_total{kind="save_checkpoint"} 1520
    langgraph_checkpointer_statements_mean_seconds{kind="save_checkpoint"} 0.00055

Only statements of the current database are counted, grouped by matching the
text of LangGraph's SQL (``langgraph/checkpoint/postgres/base.py``); the
exporter's own queries name the tables as quoted identifiers and are left out.
The figures are cumulative since ``pg_stat_statements_reset()``, so they fall
back when it is called, as counters do on a restart. The exporter's role needs
``pg_read_all_stats`` (or ``pg_monitor``) to read statements of other roles.

Without the extension in this database (or when it cannot be read), only
``langgraph_checkpointer_statements_available 0`` is produced, and the reason
is logged once. The collector then looks for it again at most every
:data:`RETRY_SECONDS`, so a server without it costs no statement on most scrapes.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from psycopg import errors

from exporter.collectors.base import ScrapeContext
from exporter.log import get_logger
from exporter.redact import describe_error
from exporter.sql import server

log = get_logger("statements")

PREFIX = "langgraph_checkpointer_statements_"

KINDS: Final = (
    "load_checkpoint",
    "list",
    "save_checkpoint",
    "save_blobs",
    "save_writes",
    "delete",
    "migrate",
    "other",
)

# How long the extension is taken to stay unavailable before the catalog is asked again.
RETRY_SECONDS: Final = 60.0

# The extension is missing, not preloaded, or not ours to read.
UNAVAILABLE_ERRORS: Final = (
    errors.UndefinedTable,
    errors.UndefinedObject,
    errors.ObjectNotInPrerequisiteState,
    errors.InsufficientPrivilege,
)

_TABLE = re.compile(r"\bcheckpoint(s|_blobs|_writes|_migrations)\b")
_INSERT_CHECKPOINTS = re.compile(r"insert into checkpoints\b")
_DDL = re.compile(r"^(create|alter|drop) (table|(unique )?index)\b")
# SELECT_SQL, which both aget_tuple() and alist() extend with a WHERE clause.
_SELECT_CHECKPOINTS = "as pending_writes from checkpoints"
# aget_tuple()'s two WHERE clauses. alist() builds its own with a space after each
# "%s", so even narrowed to one thread, namespace and limit it reads differently.
_GET_TUPLE_WHERE = re.compile(
    r"where thread_id = \$\d+ and checkpoint_ns = \$\d+ "
    r"(and checkpoint_id = \$\d+|order by checkpoint_id desc limit \$\d+)$"
)
_LINE_BREAKS = re.compile(r"\s*\n\s*")


def classify(query: str) -> str | None:
    """The kind of a normalized statement text, or None when it is not the checkpointer's.

    Line breaks and indentation are folded, spaces within a line are kept.
    """
    text = _LINE_BREAKS.sub(" ", query).strip().rstrip(";").strip().lower()
    if not _TABLE.search(text) or '"checkpoint' in text:
        return None
    if "checkpoint_migrations" in text or _DDL.match(text):
        return "migrate"
    if "insert into checkpoint_blobs" in text:
        return "save_blobs"
    if _INSERT_CHECKPOINTS.search(text):
        return "save_checkpoint"
    if "insert into checkpoint_writes" in text:
        return "save_writes"
    if "delete from checkpoint" in text:
        return "delete"
    if _SELECT_CHECKPOINTS in text:
        where = text.split(_SELECT_CHECKPOINTS, 1)[1].strip()
        return "load_checkpoint" if _GET_TUPLE_WHERE.fullmatch(where) else "list"
    return "other"


@dataclass(slots=True)
class KindTotals:
    """Sums over every ``pg_stat_statements`` entry of one kind."""

    calls: int = 0
    seconds: float = 0.0
    rows: int = 0


def totals_by_kind(rows: Iterable[Mapping[str, Any]]) -> dict[str, KindTotals]:
    """Sum ``pg_stat_statements`` rows (query, calls, rows, total_ms) into the known kinds."""
    totals = {kind: KindTotals() for kind in KINDS}
    for row in rows:
        kind = classify(str(row["query"]))
        if kind is None:
            continue
        total = totals[kind]
        total.calls += int(row["calls"] or 0)
        total.rows += int(row["rows"] or 0)
        # pg_stat_statements measures in milliseconds.
        total.seconds += float(row["total_ms"] or 0.0) / 1000.0
    return totals


def available_family(available: bool) -> GaugeMetricFamily:
    return GaugeMetricFamily(
        PREFIX + "available",
        "1 when pg_stat_statements can be read in this database; while it cannot, "
        f"looked for again at most every {RETRY_SECONDS:g} s.",
        value=1.0 if available else 0.0,
    )


def statements_families(rows: Iterable[Mapping[str, Any]]) -> list[Metric]:
    """Turn ``pg_stat_statements`` rows into per-kind families, every kind present."""
    totals = totals_by_kind(rows)
    calls = CounterMetricFamily(
        PREFIX + "calls", "Executions of checkpointer statements.", labels=["kind"]
    )
    seconds = CounterMetricFamily(
        PREFIX + "seconds", "Time spent executing checkpointer statements.", labels=["kind"]
    )
    rows_family = CounterMetricFamily(
        PREFIX + "rows", "Rows checkpointer statements returned or changed.", labels=["kind"]
    )
    mean = GaugeMetricFamily(
        PREFIX + "mean_seconds",
        "Mean execution time of checkpointer statements since the statistics were reset.",
        labels=["kind"],
    )
    for kind, total in totals.items():
        calls.add_metric([kind], total.calls)
        seconds.add_metric([kind], total.seconds)
        rows_family.add_metric([kind], total.rows)
        mean.add_metric([kind], total.seconds / total.calls if total.calls else 0.0)
    return [available_family(True), calls, seconds, rows_family, mean]


class StatementsCollector:
    """Reads ``pg_stat_statements`` for this database; reports its absence instead of failing.

    Where the extension lives is looked up until it is found, then remembered
    (one statement per scrape) until reading it fails, dropped or moved. Once
    found unavailable, it is taken to stay so for ``retry`` seconds (by ``clock``).
    """

    name: ClassVar[str] = "statements"
    database_wide: ClassVar[bool] = True

    def __init__(
        self, *, retry: float = RETRY_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._retry = retry
        self._clock = clock
        self._query: bytes | None = None
        # Set while the extension is taken to be unavailable: when to look again.
        self._unavailable_until: float | None = None

    async def collect(self, ctx: ScrapeContext) -> list[Metric]:
        if ctx.database is None:
            return []
        if self._unavailable_until is not None and self._clock() < self._unavailable_until:
            return [available_family(False)]
        async with ctx.database.connection() as conn:
            if self._query is None:
                cursor = await conn.execute(server.EXTENSION_SCHEMA)
                row = await cursor.fetchone()
                if row is None:
                    return self._unavailable("not_installed")
                self._query = server.statements(row["schema"])
            try:
                cursor = await conn.execute(self._query)
            except UNAVAILABLE_ERRORS as exc:
                self._query = None
                return self._unavailable(describe_error(exc))
            rows = await cursor.fetchall()
        self._unavailable_until = None
        return statements_families(rows)

    def _unavailable(self, reason: str) -> list[Metric]:
        # Logged once per outage of the extension, not on every scrape.
        if self._unavailable_until is None:
            log.info("pg_stat_statements_unavailable", reason=reason)
        self._unavailable_until = self._clock() + self._retry
        return [available_family(False)]
