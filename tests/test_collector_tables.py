"""The tables collector: catalog figures, bounded sampling and its cache, against real tables."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import checkpoint_rows
import pytest
from checkpoint_rows import BLOB_MAX_BYTES, BLOB_MIN_BYTES, Shape
from psycopg import AsyncConnection, sql
from psycopg.rows import DictRow, dict_row

from exporter.checkpoint_time import checkpoint_epoch, iso_epoch, uuid6_epoch
from exporter.collectors.base import Memo, ScrapeContext
from exporter.collectors.table_sample import (
    HEAD_PAGES,
    SAMPLE_ROWS,
    Sample,
    build_sample,
    head_params,
    sample_params,
)
from exporter.collectors.tables import (
    BUCKETS,
    TABLES,
    TablesCollector,
    catalog_families,
    catalog_query,
    estimated_rows,
    estimated_threads,
    histogram_family,
    sample_families,
    storage_families,
)
from exporter.factory import prepare_schema
from exporter.settings import Settings
from exporter.sql import schema_query
from exporter.sql.checkpoints import BLOB_SAMPLE, CHECKPOINT_SAMPLE, OLDEST_HEAD
from tests.samples import Clock, Samples, samples_of, scrape_context, value
from tests.serving import scrape_once
from tests.waiting import eventually

# 50 checkpoints per thread, about one blob for every four checkpoints, one write for each.
SHAPE = Shape(checkpoints=20_000, threads=400, blobs=5_100)
AGE_DAYS = 30


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


def buckets(samples: Samples, name: str) -> dict[float, float]:
    return {
        float(dict(labels)["le"]): count
        for (sample, labels), count in samples.items()
        if sample == name + "_bucket"
    }


@asynccontextmanager
async def connect(dsn: str) -> AsyncIterator[AsyncConnection[DictRow]]:
    conn = await AsyncConnection.connect(dsn, autocommit=True, row_factory=dict_row)
    async with conn:
        yield conn


async def fill(dsn: str, settings: Settings, base: float) -> None:
    """LangGraph's real tables, filled in bulk from ``base`` to now, then vacuumed and analyzed.

    VACUUM (not only ANALYZE) builds the visibility and free-space maps now, so a
    later autovacuum cannot change the sizes between the scrape and the test's reads.
    """
    await prepare_schema(dsn, settings)
    async with connect(dsn) as conn:
        await checkpoint_rows.fill(conn, settings.postgres_schema, SHAPE, base, time.time() - base)


@pytest.fixture
def filled_settings(settings: Settings) -> Settings:
    return settings.replace(tables_interval=60.0)


# Pure functions.


def test_estimated_rows_falls_back_to_live_tuples_when_never_analyzed() -> None:
    """reltuples wins when known (0 included); -1 (never analyzed) falls back to n_live_tup."""
    assert estimated_rows({"reltuples": 1234.0, "n_live_tup": 99}) == 1234
    assert estimated_rows({"reltuples": 0.0, "n_live_tup": 99}) == 0
    assert estimated_rows({"reltuples": -1.0, "n_live_tup": 99}) == 99
    assert estimated_rows({"reltuples": -1.0, "n_live_tup": None}) == 0
    assert estimated_rows({}) == 0


def test_estimated_threads_reads_negative_n_distinct_as_a_fraction() -> None:
    """Negative n_distinct is a fraction of the rows; None (not analyzed) is 0."""
    assert estimated_threads(400.0, 20_000) == 400
    assert estimated_threads(-0.25, 20_000) == 5_000
    assert estimated_threads(-1.0, 20_000) == 20_000
    assert estimated_threads(None, 20_000) == 0


def test_uuid6_epoch_decodes_langgraph_checkpoint_ids() -> None:
    """A LangGraph checkpoint id decodes to when it was made; other ids decode to None."""
    from langgraph.checkpoint.base.id import uuid6

    before = time.time()
    checkpoint_id = str(uuid6(clock_seq=3))
    after = time.time()
    epoch = uuid6_epoch(checkpoint_id)
    assert epoch is not None
    assert before - 1e-6 <= epoch <= after + 1e-6
    assert uuid6_epoch("1ef4e5a0-1c2b-6d3e-8f00-0123456789ab") == pytest.approx(
        uuid6_epoch("1ef4e5a0-1c2b-6d3e-bfff-ffffffffffff")
    )
    assert uuid6_epoch("0b7c9e7e-9c6f-4b8e-9d4a-3a4a8f0d3f52") is None  # UUIDv4
    assert uuid6_epoch("my-own-checkpoint") is None


def test_checkpoint_epoch_falls_back_to_ts() -> None:
    """Without a UUIDv6 id the ISO ts counts (naive is UTC); a malformed ts gives None."""
    assert iso_epoch("1970-01-02T00:00:00+00:00") == 86_400
    assert iso_epoch("1970-01-02T00:00:00") == 86_400
    assert iso_epoch("1970-01-02T01:00:00+01:00") == 86_400
    assert iso_epoch("yesterday") is None
    assert checkpoint_epoch("custom", "1970-01-02T00:00:00+00:00") == 86_400
    assert checkpoint_epoch("custom", None) is None
    assert checkpoint_epoch(None, None) is None


def test_sample_params_aim_at_the_target_and_always_limit() -> None:
    """The percentage reads about SAMPLE_ROWS rows; small or unknown tables are read whole."""
    assert sample_params(1_000_000)["percent"] == pytest.approx(100 * SAMPLE_ROWS / 1_000_000)
    assert sample_params(500)["percent"] == 100
    assert sample_params(0)["percent"] == 100
    assert all(sample_params(n)["limit"] == SAMPLE_ROWS for n in (0, 500, 10**9))
    assert head_params(16)["head"] == "(16,0)"


def test_catalog_families_report_zeros_for_missing_tables() -> None:
    """No rows at all: every table exists 0 with zero figures and no maintenance ages."""
    samples = samples_of(catalog_families([]))
    for table in TABLES:
        assert value(samples, "langgraph_checkpointer_tables_exists", table=table) == 0
        assert value(samples, "langgraph_checkpointer_tables_size_bytes", table=table) == 0
        assert value(samples, "langgraph_checkpointer_tables_estimated_rows", table=table) == 0
        for part in ("heap", "toast", "indexes"):
            name = "langgraph_checkpointer_tables_part_size_bytes"
            assert value(samples, name, table=table, part=part) == 0
    assert value(samples, "langgraph_checkpointer_tables_estimated_threads") == 0
    assert not {name for name in names(samples) if name.endswith("_age_seconds")}


def test_catalog_families_from_hand_made_rows() -> None:
    """Parts add up to the total, fallbacks apply, and only known maintenance ages appear."""
    row = {
        "table": "checkpoints",
        "exists": True,
        "table_bytes": 700,
        "toast_bytes": 200,
        "index_bytes": 300,
        "reltuples": -1.0,
        "n_live_tup": 40,
        "n_dead_tup": 7,
        "last_vacuum_age": None,
        "last_autovacuum_age": 12.5,
        "last_analyze_age": None,
        "last_autoanalyze_age": 3.0,
        "threads_n_distinct": -0.5,
    }
    samples = samples_of(catalog_families([row]))
    labels = {"table": "checkpoints"}
    parts = [
        value(samples, "langgraph_checkpointer_tables_part_size_bytes", part=part, **labels)
        for part in ("heap", "toast", "indexes")
    ]
    assert parts == [500, 200, 300]
    assert sum(parts) == value(samples, "langgraph_checkpointer_tables_size_bytes", **labels)
    assert value(samples, "langgraph_checkpointer_tables_estimated_rows", **labels) == 40
    assert value(samples, "langgraph_checkpointer_tables_dead_rows", **labels) == 7
    assert value(samples, "langgraph_checkpointer_tables_estimated_threads") == 20
    assert value(samples, "langgraph_checkpointer_tables_last_autovacuum_age_seconds", **labels)
    assert "langgraph_checkpointer_tables_last_vacuum_age_seconds" not in names(samples)
    assert "langgraph_checkpointer_tables_last_analyze_age_seconds" not in names(samples)

    # A later scrape of the same tables shares the storage families, not the ages.
    older = {**row, "last_autovacuum_age": 27.5}
    storage = Memo(storage_families)
    first, second = catalog_families([row], storage), catalog_families([older], storage)
    shared = {f.name for f, g in zip(first, second, strict=True) if f is g}
    assert shared == {
        "langgraph_checkpointer_tables_" + name
        for name in ("exists", "size_bytes", "part_size_bytes", "estimated_rows", "dead_rows")
    } | {"langgraph_checkpointer_tables_estimated_threads"}
    later = samples_of(second)
    assert (
        value(later, "langgraph_checkpointer_tables_last_autovacuum_age_seconds", **labels) == 27.5
    )
    grown = samples_of(catalog_families([{**row, "n_dead_tup": 9}]))
    assert value(grown, "langgraph_checkpointer_tables_dead_rows", **labels) == 9


def test_histogram_family_counts_cumulatively() -> None:
    """Buckets are cumulative over BUCKETS, +Inf and count equal the number of values."""
    samples = samples_of([histogram_family("x_bytes", "Sizes.", [10, 300, 300, 5000])])
    counts = buckets(samples, "x_bytes")
    assert counts[256.0] == 1
    assert counts[1024.0] == 3
    assert counts[4096.0] == 3
    assert counts[16384.0] == 4
    assert counts[float("inf")] == 4
    assert len(counts) == len(BUCKETS) + 1
    assert value(samples, "x_bytes_count") == 4
    assert value(samples, "x_bytes_sum") == 5610


def test_build_sample_and_its_families() -> None:
    """The oldest of sample and head counts; ages come from the clocks; HELP names the interval."""
    old = "1ef00000-0000-6000-8000-000000000000"
    new = "1ef10000-0000-6000-8000-000000000000"
    sample = build_sample(
        100.0,
        [{"bytes": 900, "checkpoint_id": new, "ts": None}],
        [{"bytes": 3000}, {"bytes": None}],
        [{"checkpoint_id": old, "ts": None}],
    )
    assert sample.checkpoint_bytes == (900,)
    assert sample.blob_bytes == (3000,)
    assert sample.oldest_checkpoint == uuid6_epoch(old)
    assert sample.oldest_checkpoint is not None
    families = sample_families(sample, 60.0, 112.5, sample.oldest_checkpoint + 3600)
    samples = samples_of(families)
    assert value(samples, "langgraph_checkpointer_tables_oldest_checkpoint_age_seconds") == 3600
    assert value(samples, "langgraph_checkpointer_tables_sample_age_seconds") == 12.5
    assert value(samples, "langgraph_checkpointer_tables_sample_rows", table="checkpoints") == 1
    assert all("at most every 60 s" in family.documentation for family in families)
    empty = samples_of(sample_families(Sample(taken_at=0.0), 60.0, 1.0, 1.0))
    assert "langgraph_checkpointer_tables_oldest_checkpoint_age_seconds" not in names(empty)
    assert value(empty, "langgraph_checkpointer_tables_checkpoint_size_bytes_count") == 0


async def test_collector_without_database_returns_nothing(memory_settings: Settings) -> None:
    """No PostgreSQL configured: no families, no failure."""
    assert await TablesCollector().collect(ScrapeContext(memory_settings)) == []


# Against a real database.


async def test_figures_match_the_rows_inserted(dsn: str, filled_settings: Settings) -> None:
    """Sizes equal pg_total_relation_size; estimates, threads, oldest age and sizes fit the data."""
    base = time.time() - AGE_DAYS * 86_400
    await fill(dsn, filled_settings, base)
    collector = TablesCollector()
    async with scrape_context(dsn, filled_settings) as ctx:
        samples = samples_of(await collector.collect(ctx))
    scraped_at = time.time()
    schema = filled_settings.postgres_schema
    async with connect(dsn) as conn:
        cursor = await conn.execute(
            "SELECT relname, pg_total_relation_size(c.oid) AS total FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND relname = ANY(%s)",
            (schema, list(TABLES)),
        )
        totals = {row["relname"]: row["total"] for row in await cursor.fetchall()}
        cursor = await conn.execute(
            sql.SQL(
                "SELECT min(pg_column_size(checkpoint) + pg_column_size(metadata)) AS low,"
                " max(pg_column_size(checkpoint) + pg_column_size(metadata)) AS high"
                " FROM {}.checkpoints"
            ).format(sql.Identifier(schema))
        )
        checkpoint_range = await cursor.fetchone()
        cursor = await conn.execute(
            sql.SQL("SELECT count(*) AS n FROM {}.checkpoint_migrations").format(
                sql.Identifier(schema)
            )
        )
        migrations = await cursor.fetchone()
    assert checkpoint_range is not None
    assert migrations is not None

    inserted = {
        "checkpoints": SHAPE.checkpoints,
        "checkpoint_blobs": SHAPE.blobs,
        "checkpoint_writes": SHAPE.writes,
        "checkpoint_migrations": migrations["n"],
    }
    for table in TABLES:
        labels = {"table": table}
        assert value(samples, "langgraph_checkpointer_tables_exists", **labels) == 1
        total = value(samples, "langgraph_checkpointer_tables_size_bytes", **labels)
        assert total == totals[table] > 0
        parts = [
            value(samples, "langgraph_checkpointer_tables_part_size_bytes", part=part, **labels)
            for part in ("heap", "toast", "indexes")
        ]
        assert sum(parts) == total
        assert all(part >= 0 for part in parts)
        rows = value(samples, "langgraph_checkpointer_tables_estimated_rows", **labels)
        assert rows == pytest.approx(inserted[table], rel=0.1)
        for kind in ("vacuum", "analyze"):
            age = value(samples, f"langgraph_checkpointer_tables_last_{kind}_age_seconds", **labels)
            assert 0 <= age < 300
    toast = value(
        samples,
        "langgraph_checkpointer_tables_part_size_bytes",
        table="checkpoint_blobs",
        part="toast",
    )
    stored = SHAPE.blobs - SHAPE.null_blobs
    assert toast > stored * BLOB_MIN_BYTES * 0.9  # the blobs live out of line

    threads = value(samples, "langgraph_checkpointer_tables_estimated_threads")
    assert threads == pytest.approx(SHAPE.threads, rel=0.1)

    # Checkpoint 0, written at `base`, lies on the heap's first page: found exactly. The age
    # is taken at the scrape, so it trails `now - base` by the few seconds since the scrape.
    age = value(samples, "langgraph_checkpointer_tables_oldest_checkpoint_age_seconds")
    assert scraped_at - base - 5 <= age <= scraped_at - base + 1e-3

    sampled = value(samples, "langgraph_checkpointer_tables_sample_rows", table="checkpoints")
    assert 0 < sampled <= SAMPLE_ROWS
    name = "langgraph_checkpointer_tables_checkpoint_size_bytes"
    assert value(samples, name + "_count") == sampled
    low, high = checkpoint_range["low"], checkpoint_range["high"]
    assert low * sampled <= value(samples, name + "_sum") <= high * sampled
    counts = buckets(samples, name)
    assert list(counts.values()) == sorted(counts.values())  # cumulative
    for bound, count in counts.items():
        if bound < low:
            assert count == 0, bound
        elif bound >= high:
            assert count == sampled, bound

    blobs = value(samples, "langgraph_checkpointer_tables_sample_rows", table="checkpoint_blobs")
    assert 0 < blobs <= SAMPLE_ROWS
    name = "langgraph_checkpointer_tables_blob_size_bytes"
    assert value(samples, name + "_count") == blobs
    assert BLOB_MIN_BYTES * blobs <= value(samples, name + "_sum") <= BLOB_MAX_BYTES * blobs
    counts = buckets(samples, name)
    assert counts[1024.0] == 0
    assert counts[4096.0] == blobs
    assert value(samples, "langgraph_checkpointer_tables_sample_age_seconds") < 5


async def test_sample_is_cached_within_the_interval(dsn: str, filled_settings: Settings) -> None:
    """Within the interval the sample is reused and ages; after it, it is redrawn."""
    await prepare_schema(dsn, filled_settings)
    clock = Clock()
    collector = TablesCollector(clock=clock)
    schema = filled_settings.postgres_schema
    async with scrape_context(dsn, filled_settings) as ctx:
        first = samples_of(await collector.collect(ctx))
        drawn = collector.sample
        async with connect(dsn) as conn:
            await checkpoint_rows.fill_blobs(conn, schema, rows=50, threads=10, null_every=0)
        clock.now += 59.0
        second = samples_of(await collector.collect(ctx))
        assert collector.sample is drawn
        clock.now += 1.0
        third = samples_of(await collector.collect(ctx))
        assert collector.sample is not drawn
    name = "langgraph_checkpointer_tables_sample_age_seconds"
    assert (value(first, name), value(second, name), value(third, name)) == (0, 59, 0)
    rows = "langgraph_checkpointer_tables_sample_rows"
    assert value(first, rows, table="checkpoint_blobs") == 0
    assert value(second, rows, table="checkpoint_blobs") == 0
    assert value(third, rows, table="checkpoint_blobs") == 50


def plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from plan_nodes(child)


async def test_queries_never_scan_the_checkpoint_tables_whole(
    dsn: str, filled_settings: Settings
) -> None:
    """No sequential scan of a checkpoint table; samples and the head read a bounded share."""
    await fill(dsn, filled_settings, time.time() - 3600)
    schema = filled_settings.postgres_schema
    checkpoints_params = sample_params(SHAPE.checkpoints)
    queries: list[tuple[bytes, dict[str, Any] | None, str | None]] = [
        (catalog_query(schema), None, None),
        (schema_query(CHECKPOINT_SAMPLE, schema).as_bytes(), checkpoints_params, "Sample Scan"),
        (
            schema_query(BLOB_SAMPLE, schema).as_bytes(),
            sample_params(SHAPE.blobs),
            "Sample Scan",
        ),
        (schema_query(OLDEST_HEAD, schema).as_bytes(), head_params(), "Tid Range Scan"),
    ]
    async with connect(dsn) as conn:
        cursor = await conn.execute(
            sql.SQL("SELECT relpages FROM pg_class WHERE oid = {}::regclass").format(
                sql.Literal(f"{schema}.checkpoints")
            )
        )
        page_row = await cursor.fetchone()
        assert page_row is not None
        pages = page_row["relpages"]
        assert pages > 20 * HEAD_PAGES
        for query, params, scan in queries:
            plan = (await explained(conn, query, params))["Plan"]
            nodes = list(plan_nodes(plan))
            for node in nodes:
                assert not (
                    node["Node Type"] == "Seq Scan" and node.get("Relation Name") in TABLES
                ), node
            if scan is not None:
                assert scan in {node["Node Type"] for node in nodes}
                touched = plan["Shared Hit Blocks"] + plan["Shared Read Blocks"]
                assert touched < pages / 4, (scan, touched, pages)


async def explained(
    conn: AsyncConnection[DictRow], query: bytes, params: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``query`` run under EXPLAIN (ANALYZE, BUFFERS): its plan and planning figures."""
    cursor = await conn.execute(b"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + query, params)
    row = await cursor.fetchone()
    assert row is not None
    document = row["QUERY PLAN"]
    result: dict[str, Any] = (json.loads(document) if isinstance(document, str) else document)[0]
    return result


async def catalog_buffers(conn: AsyncConnection[DictRow], schema: str) -> int:
    """Shared buffers the catalog query touches, planning included."""
    result = await explained(conn, catalog_query(schema))
    plan, planning = result["Plan"], result.get("Planning", {})
    return int(
        plan["Shared Hit Blocks"]
        + plan["Shared Read Blocks"]
        + planning.get("Shared Hit Blocks", 0)
        + planning.get("Shared Read Blocks", 0)
    )


async def test_catalog_cost_does_not_grow_with_the_rest_of_the_database(
    dsn: str, settings: Settings
) -> None:
    """A thousand unrelated tables (each with an index) leave the catalog query's reads as
    they were: it looks up its own tables, never the statistics of every relation."""
    await prepare_schema(dsn, settings)
    schema = settings.postgres_schema
    async with connect(dsn) as conn:
        for _ in range(3):  # warm the caches the first reads fill
            before = await catalog_buffers(conn, schema)
        await conn.execute("CREATE SCHEMA unrelated")
        await conn.execute(
            "DO $$ BEGIN FOR i IN 1..1000 LOOP "
            "EXECUTE format('CREATE TABLE unrelated.t%s (id int PRIMARY KEY)', i); "
            "END LOOP; END $$"
        )
        await conn.execute("ANALYZE pg_catalog.pg_class")
        for _ in range(3):  # the new relations invalidated those caches
            after = await catalog_buffers(conn, schema)
        await conn.execute("DROP SCHEMA unrelated CASCADE")
    assert after <= before + 10, (before, after)


async def test_dead_rows_and_vacuum_follow_the_table(dsn: str, settings: Settings) -> None:
    """Rows deleted show as dead until a VACUUM, which then shows as the last vacuum."""
    await prepare_schema(dsn, settings)
    schema = sql.Identifier(settings.postgres_schema)
    writes = sql.SQL("{}.checkpoint_writes").format(schema)
    labels = {"table": "checkpoint_writes"}
    async with connect(dsn) as conn, scrape_context(dsn, settings) as ctx:
        # A write for each of 50 checkpoints, at a fixed time: the same task ids every run.
        name = settings.postgres_schema
        await checkpoint_rows.fill_checkpoints(conn, name, 50, SHAPE.threads, 1.7e9, 50.0)
        await checkpoint_rows.fill_writes(conn, name)
        await conn.execute(sql.SQL("DELETE FROM {} WHERE idx = 0 AND task_id < '4'").format(writes))
        cursor = await conn.execute(sql.SQL("SELECT count(*) AS n FROM {}").format(writes))
        row = await cursor.fetchone()
        assert row is not None
        deleted = 50 - row["n"]
        assert 0 < deleted < 50
        await conn.execute("SELECT pg_stat_force_next_flush()")

        def dead(samples: Samples) -> float:
            return value(samples, "langgraph_checkpointer_tables_dead_rows", **labels)

        async def scrape_until(done: Callable[[Samples], bool]) -> Samples:
            # A session reports its statistics once idle, shortly after its statement.
            async def scraped() -> Samples | None:
                samples = samples_of(await TablesCollector().collect(ctx))
                return samples if done(samples) else None

            return await eventually(scraped, what="the statistics to arrive")

        samples = await scrape_until(lambda samples: dead(samples) == deleted)
        assert dead(samples) == deleted
        vacuum_age = (
            "langgraph_checkpointer_tables_last_vacuum_age_seconds",
            tuple(labels.items()),
        )
        assert vacuum_age not in samples  # never vacuumed

        await conn.execute(sql.SQL("VACUUM {}").format(writes))
        await conn.execute("SELECT pg_stat_force_next_flush()")
        samples = await scrape_until(lambda samples: dead(samples) == 0)
        assert dead(samples) == 0
        assert 0 <= samples[vacuum_age] < 60


@pytest.mark.parametrize("create_schema", [False, True], ids=["no-schema", "empty-schema"])
async def test_absent_tables_report_zeros(
    dsn: str, settings: Settings, create_schema: bool
) -> None:
    """Without the tables (or their schema): success, exists 0, zero sizes, empty histograms."""
    settings = settings.replace(postgres_schema="nothing_here")
    if create_schema:
        async with connect(dsn) as conn:
            await conn.execute("CREATE SCHEMA nothing_here")
    async with scrape_context(dsn, settings) as ctx:
        samples = samples_of(await TablesCollector().collect(ctx))
    for table in TABLES:
        assert value(samples, "langgraph_checkpointer_tables_exists", table=table) == 0
        assert value(samples, "langgraph_checkpointer_tables_size_bytes", table=table) == 0
        assert value(samples, "langgraph_checkpointer_tables_estimated_rows", table=table) == 0
    assert value(samples, "langgraph_checkpointer_tables_estimated_threads") == 0
    assert value(samples, "langgraph_checkpointer_tables_checkpoint_size_bytes_count") == 0
    assert value(samples, "langgraph_checkpointer_tables_blob_size_bytes_count") == 0
    assert value(samples, "langgraph_checkpointer_tables_sample_rows", table="checkpoints") == 0
    assert "langgraph_checkpointer_tables_oldest_checkpoint_age_seconds" not in names(samples)
    assert not {name for name in names(samples) if name.endswith("vacuum_age_seconds")}


async def test_sidecar_serves_table_metrics(dsn: str, settings: Settings) -> None:
    """Over HTTP: the tables' series appear and the collector reports success."""
    await prepare_schema(dsn, settings)
    settings = settings.replace(canary_interval=0)  # the canary's checkpoint would be sampled
    samples = await scrape_once(settings, TablesCollector())
    assert value(samples, "langgraph_checkpointer_tables_exists", table="checkpoints") == 1
    assert value(samples, "langgraph_checkpointer_tables_size_bytes", table="checkpoints") > 0
    assert value(samples, "langgraph_checkpointer_tables_sample_rows", table="checkpoints") == 0
    assert (
        value(samples, "langgraph_checkpointer_scrape_collector_success", collector="tables") == 1
    )
