"""Storage of the checkpoint tables: sizes, row estimates, maintenance, sampled value sizes.

Every figure comes from catalog statistics or bounded reads, so a scrape costs
the same at a million checkpoints as at ten thousand: no ``count(*)``, no
sequential scan. Produces, per table (``checkpoints``, ``checkpoint_blobs``,
``checkpoint_writes``, ``checkpoint_migrations``; a missing table reports
``exists`` 0 and zeros)::

    langgraph_checkpointer_tables_exists{table="checkpoints"} 1
    langgraph_checkpointer_tables_size_bytes{table="checkpoints"} 1.2976128e+07
    langgraph_checkpointer_tables_part_size_bytes{part="heap",table="checkpoints"} 9.650176e+06
    langgraph_checkpointer_tables_part_size_bytes{part="toast",table="checkpoints"} 8192
    langgraph_checkpointer_tables_part_size_bytes{part="indexes",table="checkpoints"} 3.31776e+06
    langgraph_checkpointer_tables_estimated_rows{table="checkpoints"} 20000
    langgraph_checkpointer_tables_dead_rows{table="checkpoints"} 12
    langgraph_checkpointer_tables_last_vacuum_age_seconds{table="checkpoints"} 86400
    langgraph_checkpointer_tables_last_autovacuum_age_seconds{table="checkpoints"} 420
    langgraph_checkpointer_tables_last_analyze_age_seconds{table="checkpoints"} 86400
    langgraph_checkpointer_tables_last_autoanalyze_age_seconds{table="checkpoints"} 420

The ``last_*_age_seconds`` series are absent for a table never so maintained.
Across tables::

    langgraph_checkpointer_tables_estimated_threads 400

Sampled (``TABLESAMPLE SYSTEM`` of about ``SAMPLE_ROWS`` rows, plus the first
``HEAD_PAGES`` pages of ``checkpoints`` for the oldest checkpoint), cached and
redrawn at most every ``CHECKPOINT_EXPORTER_TABLES_INTERVAL``::

    langgraph_checkpointer_tables_oldest_checkpoint_age_seconds 2.592e+06
    langgraph_checkpointer_tables_checkpoint_size_bytes_bucket{le="256.0"} 0
    langgraph_checkpointer_tables_checkpoint_size_bytes_bucket{le="1024.0"} 12
    langgraph_checkpointer_tables_checkpoint_size_bytes_bucket{le="4096.0"} 998
    langgraph_checkpointer_tables_checkpoint_size_bytes_bucket{le="16384.0"} 1000
    langgraph_checkpointer_tables_checkpoint_size_bytes_bucket{le="65536.0"} 1000
    langgraph_checkpointer_tables_checkpoint_size_bytes_bucket{le="262144.0"} 1000
    langgraph_checkpointer_tables_checkpoint_size_bytes_bucket{le="1.048576e+06"} 1000
    langgraph_checkpointer_tables_checkpoint_size_bytes_bucket{le="4.194304e+06"} 1000
    langgraph_checkpointer_tables_checkpoint_size_bytes_bucket{le="1.6777216e+07"} 1000
    langgraph_checkpointer_tables_checkpoint_size_bytes_bucket{le="+Inf"} 1000
    langgraph_checkpointer_tables_checkpoint_size_bytes_count 1000
    langgraph_checkpointer_tables_checkpoint_size_bytes_sum 1.52e+06
    langgraph_checkpointer_tables_blob_size_bytes_bucket{le="256.0"} 0
    langgraph_checkpointer_tables_blob_size_bytes_bucket{le="1024.0"} 0
    langgraph_checkpointer_tables_blob_size_bytes_bucket{le="4096.0"} 1000
    langgraph_checkpointer_tables_blob_size_bytes_bucket{le="16384.0"} 1000
    langgraph_checkpointer_tables_blob_size_bytes_bucket{le="65536.0"} 1000
    langgraph_checkpointer_tables_blob_size_bytes_bucket{le="262144.0"} 1000
    langgraph_checkpointer_tables_blob_size_bytes_bucket{le="1.048576e+06"} 1000
    langgraph_checkpointer_tables_blob_size_bytes_bucket{le="4.194304e+06"} 1000
    langgraph_checkpointer_tables_blob_size_bytes_bucket{le="1.6777216e+07"} 1000
    langgraph_checkpointer_tables_blob_size_bytes_bucket{le="+Inf"} 1000
    langgraph_checkpointer_tables_blob_size_bytes_count 1000
    langgraph_checkpointer_tables_blob_size_bytes_sum 3.07e+06
    langgraph_checkpointer_tables_sample_rows{table="checkpoints"} 1000
    langgraph_checkpointer_tables_sample_rows{table="checkpoint_blobs"} 1000
    langgraph_checkpointer_tables_sample_age_seconds 12.5
"""

from __future__ import annotations

import time
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from typing import Any, ClassVar, Final

from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString
from psycopg import AsyncConnection

from exporter.collectors.base import Memo, ScrapeContext
from exporter.collectors.table_sample import (
    HEAD_PAGES,
    SAMPLE_ROWS,
    TID_RANGE_SCAN_VERSION,
    Sample,
    draw_sample,
)
from exporter.sql import checkpoints

PREFIX: Final = "langgraph_checkpointer_tables_"
TABLES: Final = checkpoints.TABLES
MAINTENANCE: Final = ("vacuum", "autovacuum", "analyze", "autoanalyze")
BUCKETS: Final = tuple(float(4**k) for k in range(4, 13))  # 256 B .. 16 MiB

# The catalog statement of a scrape, built once per schema.
catalog_query: Final = cache(checkpoints.catalog)


def estimated_rows(row: Mapping[str, Any]) -> float:
    """``reltuples``, or ``n_live_tup`` while the table was never vacuumed or analyzed (-1)."""
    reltuples = row.get("reltuples")
    if reltuples is not None and reltuples >= 0:
        return float(reltuples)
    return float(row.get("n_live_tup") or 0)


def estimated_threads(n_distinct: float | None, rows: float) -> float:
    """Distinct ``thread_id`` values from ``pg_stats.n_distinct`` (0 when not analyzed)."""
    if n_distinct is None:
        return 0.0
    if n_distinct < 0:
        return -n_distinct * rows
    return n_distinct


# The catalog columns that only change with the data (not with the clock, as the ages do).
STORAGE_COLUMNS: Final = (
    "exists",
    "table_bytes",
    "toast_bytes",
    "index_bytes",
    "reltuples",
    "n_live_tup",
    "n_dead_tup",
    "threads_n_distinct",
)


# Each table's STORAGE_COLUMNS, in TABLES order: all that the storage families are built from.
Storage = tuple[tuple[Any, ...], ...]


def storage_of(rows: Sequence[Mapping[str, Any]]) -> Storage:
    """The storage columns of the catalog query rows (None for a table missing from them)."""
    by_table = {row["table"]: row for row in rows}
    return tuple(
        tuple(by_table.get(table, {}).get(column) for column in STORAGE_COLUMNS) for table in TABLES
    )


def storage_families(storage: Storage) -> list[Metric]:
    """Existence, sizes, row estimates and dead rows per table, then the thread estimate."""
    by_table = {
        table: dict(zip(STORAGE_COLUMNS, values, strict=True))
        for table, values in zip(TABLES, storage, strict=True)
    }
    exists = GaugeMetricFamily(
        PREFIX + "exists", "1 if the table exists in the schema.", labels=["table"]
    )
    size = GaugeMetricFamily(
        PREFIX + "size_bytes",
        "Disk space of the table: heap, TOAST and indexes (pg_total_relation_size).",
        labels=["table"],
    )
    parts = GaugeMetricFamily(
        PREFIX + "part_size_bytes",
        "Disk space by part: heap (with free space and visibility maps), toast, indexes.",
        labels=["table", "part"],
    )
    rows_family = GaugeMetricFamily(
        PREFIX + "estimated_rows",
        "Live rows estimated from catalog statistics (reltuples, else n_live_tup).",
        labels=["table"],
    )
    dead = GaugeMetricFamily(
        PREFIX + "dead_rows", "Dead rows awaiting vacuum (n_dead_tup).", labels=["table"]
    )
    for table, row in by_table.items():
        present = bool(row["exists"])
        exists.add_metric([table], 1.0 if present else 0.0)
        toast = float(row["toast_bytes"] or 0)
        table_bytes = float(row["table_bytes"] or 0)
        indexes = float(row["index_bytes"] or 0)
        # pg_total_relation_size is exactly this sum; asking for it too would stat every file twice.
        size.add_metric([table], table_bytes + indexes)
        parts.add_metric([table, "heap"], table_bytes - toast)
        parts.add_metric([table, "toast"], toast)
        parts.add_metric([table, "indexes"], indexes)
        rows_family.add_metric([table], estimated_rows(row) if present else 0.0)
        dead.add_metric([table], float(row["n_dead_tup"] or 0))
    checkpoints = by_table["checkpoints"]
    threads = GaugeMetricFamily(
        PREFIX + "estimated_threads",
        "Distinct thread ids in checkpoints, from ANALYZE statistics (0 until analyzed).",
        value=estimated_threads(checkpoints["threads_n_distinct"], estimated_rows(checkpoints))
        if checkpoints["exists"]
        else 0.0,
    )
    return [exists, size, parts, rows_family, dead, threads]


def catalog_families(
    rows: Sequence[Mapping[str, Any]],
    storage: Callable[[Storage], Sequence[Metric]] = storage_families,
) -> list[Metric]:
    """Per-table figures from the catalog query rows, plus the distinct thread estimate.

    Tables missing from ``rows`` or flagged as not existing report zeros.
    ``threads_n_distinct`` (``pg_stats.n_distinct``) is the same on every row.
    ``storage`` builds the families that change only with the data: the collector
    hands in its memo of :func:`storage_families`; the ages are built on every call.
    """
    by_table = {row["table"]: row for row in rows}
    *head, threads = storage(storage_of(rows))
    return [*head, *age_families(by_table), threads]


def age_families(by_table: Mapping[str, Mapping[str, Any]]) -> list[Metric]:
    """Seconds since each table's last vacuum and analyze, manual or auto; absent if never."""
    ages = {
        kind: GaugeMetricFamily(
            PREFIX + f"last_{kind}_age_seconds",
            f"Seconds since the table's last {kind}; absent if never.",
            labels=["table"],
        )
        for kind in MAINTENANCE
    }
    for table in TABLES:
        row = by_table.get(table, {})
        for kind, family in ages.items():
            age = row.get(f"last_{kind}_age")
            if row.get("exists") and age is not None:
                family.add_metric([table], max(0.0, float(age)))
    return list(ages.values())


def _le(bound: float) -> str:
    """``le`` as the official clients write it."""
    return str(floatToGoString(bound))  # type: ignore[no-untyped-call]  # untyped upstream


def histogram_family(name: str, doc: str, values: Sequence[int]) -> HistogramMetricFamily:
    """A histogram of ``values`` over :data:`BUCKETS` (cumulative, as exposed)."""
    ordered = sorted(values)  # a bisection per bucket, not a pass over the sample per bucket
    buckets = [(_le(bound), float(bisect_right(ordered, bound))) for bound in BUCKETS]
    buckets.append(("+Inf", float(len(values))))
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=float(sum(values)))


def size_families(drawn: tuple[Sample, float]) -> list[Metric]:
    """The size histograms and sample row counts of ``drawn``: a sample and its interval.

    Nothing in them changes until the next draw, so the collector builds them once
    per sample (a :class:`~exporter.collectors.base.Memo` of this).
    """
    sample, interval = drawn
    cached = f"sampled, refreshed at most every {interval:g} s"
    rows = GaugeMetricFamily(
        PREFIX + "sample_rows",
        f"Rows in the size sample (about {SAMPLE_ROWS} at most); {cached}.",
        labels=["table"],
    )
    rows.add_metric(["checkpoints"], float(len(sample.checkpoint_bytes)))
    rows.add_metric(["checkpoint_blobs"], float(len(sample.blob_bytes)))
    return [
        histogram_family(
            PREFIX + "checkpoint_size_bytes",
            f"Stored size of checkpoint plus metadata per checkpoint row; {cached}.",
            sample.checkpoint_bytes,
        ),
        histogram_family(
            PREFIX + "blob_size_bytes",
            f"Stored size of non-null checkpoint_blobs values; {cached}.",
            sample.blob_bytes,
        ),
        rows,
    ]


def sample_families(
    sample: Sample,
    interval: float,
    now: float,
    wall_now: float,
    sizes: Callable[[tuple[Sample, float]], Sequence[Metric]] = size_families,
) -> list[Metric]:
    """The sample's families; ``now`` is monotonic, ``wall_now`` Unix time.

    ``sizes`` builds the families that change only with the sample: the collector
    hands in its memo of :func:`size_families`; the ages are built on every call.
    """
    cached = f"sampled, refreshed at most every {interval:g} s"
    families: list[Metric] = []
    if sample.oldest_checkpoint is not None:
        families.append(
            GaugeMetricFamily(
                PREFIX + "oldest_checkpoint_age_seconds",
                f"Age of the oldest checkpoint in the first {HEAD_PAGES} heap pages and the "
                "sample, by its UUIDv6 id (else ts); exact for append-only tables, may "
                f"undercount after deletes; {cached}.",
                value=max(0.0, wall_now - sample.oldest_checkpoint),
            )
        )
    families += sizes((sample, interval))
    families.append(
        GaugeMetricFamily(
            PREFIX + "sample_age_seconds",
            f"Seconds since the size sample was drawn; redrawn at most every {interval:g} s.",
            value=max(0.0, now - sample.taken_at),
        )
    )
    return families


class TablesCollector:
    """Reads catalog statistics on every scrape; draws the size sample at most every interval.

    The sample is kept on the instance, keyed by pool and schema. While one
    scrape redraws it, a concurrent scrape serves the previous sample (or none).
    Families that change only with the data or the sample are built once per
    change and handed back as they were, so the exposition reuses their text.
    """

    name: ClassVar[str] = "tables"
    database_wide: ClassVar[bool] = True

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self._wall_clock = wall_clock
        self._sample: Sample | None = None
        self._key: tuple[int, str] | None = None
        self._refreshing = False
        self._storage = Memo(storage_families)
        self._sizes = Memo(size_families)

    @property
    def sample(self) -> Sample | None:
        """The cached sample, if one was drawn."""
        return self._sample

    async def collect(self, ctx: ScrapeContext) -> list[Metric]:
        if ctx.database is None:
            return []
        schema = ctx.settings.postgres_schema
        key = (id(ctx.database), schema)
        if key != self._key:
            self._key, self._sample = key, None
        async with ctx.database.connection() as conn:
            cursor = await conn.execute(catalog_query(schema))
            catalog = await cursor.fetchall()
            sample = self._sample
            interval = ctx.settings.tables_interval
            stale = sample is None or self._clock() - sample.taken_at >= interval
            if stale and not self._refreshing:
                self._refreshing = True
                try:
                    sample = self._sample = await self._draw(conn, schema, catalog)
                finally:
                    self._refreshing = False
        families = catalog_families(catalog, self._storage)
        if sample is not None:
            now, wall_now = self._clock(), self._wall_clock()
            families += sample_families(sample, interval, now, wall_now, self._sizes)
        return families

    async def _draw(
        self, conn: AsyncConnection[Any], schema: str, catalog: Sequence[Mapping[str, Any]]
    ) -> Sample:
        by_table = {row["table"]: row for row in catalog}
        checkpoints, blobs = by_table["checkpoints"], by_table["checkpoint_blobs"]
        return await draw_sample(
            conn,
            schema,
            self._clock(),
            checkpoints=estimated_rows(checkpoints) if checkpoints["exists"] else None,
            blobs=estimated_rows(blobs) if blobs["exists"] else None,
            head=checkpoints["server_version_num"] >= TID_RANGE_SCAN_VERSION,
        )
