"""The tables collector's bounded sample: value sizes and the oldest checkpoint, drawn rarely.

``TABLESAMPLE SYSTEM`` reads about :data:`SAMPLE_ROWS` rows of ``checkpoints``
and ``checkpoint_blobs``, and a TID Range Scan the first :data:`HEAD_PAGES`
pages of ``checkpoints``, where an append-only heap keeps its oldest rows:
bounded reads whatever the tables' size. No metric is built here: the
collector (:mod:`exporter.collectors.tables`) keeps the :class:`Sample`,
redraws it at most every ``CHECKPOINT_EXPORTER_TABLES_INTERVAL`` and exports it.
The statements are in :mod:`exporter.sql.checkpoints`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from psycopg import AsyncConnection, sql

from exporter.checkpoint_time import UUID6_PATTERN, checkpoint_epoch
from exporter.sql import schema_query
from exporter.sql.checkpoints import BLOB_SAMPLE, CHECKPOINT_SAMPLE, OLDEST_HEAD

# Rows read per sampled table; the histograms' resolution, and their cost.
SAMPLE_ROWS: Final = 1000
# Pages read from the start of `checkpoints`: where an append-only heap keeps its oldest rows.
HEAD_PAGES: Final = 16
# TID Range Scan (PostgreSQL 14) reads only the pages asked for; before it, `ctid <` scans all.
TID_RANGE_SCAN_VERSION: Final = 140000


def sample_params(estimated_rows: float, target: int = SAMPLE_ROWS) -> dict[str, Any]:
    """Parameters for a sample query reading about ``target`` of ``estimated_rows`` rows.

    The percentage comes from the catalog estimate; ``LIMIT`` bounds the read
    when the estimate is stale or unknown (0: sample everything, up to the limit).
    """
    percent = 100.0 if estimated_rows <= target else 100.0 * target / estimated_rows
    return {"percent": percent, "limit": target, "uuid6": UUID6_PATTERN}


def head_params(pages: int = HEAD_PAGES) -> dict[str, Any]:
    return {"head": f"({pages},0)", "uuid6": UUID6_PATTERN}


@dataclass(frozen=True, slots=True)
class Sample:
    """Value sizes read from a bounded sample, and when (``taken_at`` is monotonic)."""

    taken_at: float
    checkpoint_bytes: tuple[int, ...] = ()
    blob_bytes: tuple[int, ...] = ()
    oldest_checkpoint: float | None = None  # Unix time


def build_sample(
    taken_at: float,
    checkpoint_rows: Iterable[Mapping[str, Any]] = (),
    blob_rows: Iterable[Mapping[str, Any]] = (),
    head_rows: Iterable[Mapping[str, Any]] = (),
) -> Sample:
    """Fold the sample and head query rows into a :class:`Sample`."""
    checkpoint_rows = list(checkpoint_rows)
    epochs = [
        checkpoint_epoch(row.get("checkpoint_id"), row.get("ts"))
        for row in [*checkpoint_rows, *head_rows]
    ]
    known = [epoch for epoch in epochs if epoch is not None]
    return Sample(
        taken_at=taken_at,
        checkpoint_bytes=tuple(int(row["bytes"]) for row in checkpoint_rows),
        blob_bytes=tuple(int(row["bytes"]) for row in blob_rows if row["bytes"] is not None),
        oldest_checkpoint=min(known, default=None),
    )


async def draw_sample(
    conn: AsyncConnection[Any],
    schema: str,
    taken_at: float,
    *,
    checkpoints: float | None,
    blobs: float | None,
    head: bool,
) -> Sample:
    """Draw a :class:`Sample` of ``schema``'s tables, taken at ``taken_at`` (monotonic).

    ``checkpoints`` and ``blobs`` are the catalog's row estimates of the two
    tables (None: the table does not exist, and is not read); ``head`` reads the
    heap's first pages too, which only a TID Range Scan bounds.
    """
    checkpoint_rows: list[Any] = []
    blob_rows: list[Any] = []
    head_rows: list[Any] = []
    if checkpoints is not None:
        query = schema_query(CHECKPOINT_SAMPLE, schema)
        checkpoint_rows = await _fetch(conn, query, sample_params(checkpoints))
        if head:
            head_rows = await _fetch(conn, schema_query(OLDEST_HEAD, schema), head_params())
    if blobs is not None:
        query = schema_query(BLOB_SAMPLE, schema)
        blob_rows = await _fetch(conn, query, sample_params(blobs))
    return build_sample(taken_at, checkpoint_rows, blob_rows, head_rows)


async def _fetch(
    conn: AsyncConnection[Any], query: sql.Composed, params: Mapping[str, Any]
) -> list[Any]:
    cursor = await conn.execute(query, params)
    return await cursor.fetchall()
