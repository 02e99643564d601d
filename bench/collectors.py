"""Collector cost against table size: every database collector at two sizes, in one run.

On the embedded PostgreSQL, two schemas get LangGraph's real tables
(``prepare_schema``), filled in bulk with checkpoint-shaped rows
(``bench/checkpoint_rows.py``): by default
10 thousand checkpoints in ``bench_small`` and 1 million in ``bench_large``,
8 checkpoints per thread, one blob of 2 to 4 KB (incompressible, so stored
in TOAST) for every second checkpoint, 2 % of blobs NULL as LangGraph stores
empty channels, and one pending write per checkpoint. Both are vacuumed and
analyzed, then a ``CHECKPOINT`` flushes the fill before anything is timed.

Each collector that reads the database (every one but ``pool``) is then timed,
one ``collect()`` per timing, on a fresh instance per schema; small and large
take turns within each repetition, the order alternating, so the noise of a
shared machine lands on both alike. ``tables`` is timed twice: its cached
path (what nearly every scrape runs) and with a clock that leaps past
``tables_interval`` on each reading, so every collect redraws the sample.
``scrape`` rows time a whole ``run_collectors`` over fresh instances of
every collector, as the server runs it.

The target is a large/small ratio of at most 1.5 for every row. Ratios come
with a distribution-free ~95 % interval for the median of the per-repetition
ratios. Verdicts are printed, but the exit status is 0 whatever they say:
this is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter
from typing import Any, Final

import checkpoint_rows
from benchlib import (
    ROOT,
    add_data_dir,
    code_under_test,
    describe_code,
    environment,
    median,
    median_interval,
    run_collectors,
    span,
    verdict_line,
)
from checkpoint_rows import Shape
from prometheus_client.metrics_core import Metric
from psycopg import AsyncConnection, sql
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from exporter.collectors import ALL, Collector, ScrapeContext, create
from exporter.collectors import tables as tables_module
from exporter.collectors.tables import TablesCollector
from exporter.database import exporter_pool
from exporter.embedded import embedded_database
from exporter.factory import prepare_schema
from exporter.log import configure_logging
from exporter.scrape import SUCCESS
from exporter.settings import Settings

COLLECTORS: Final = ROOT / "exporter" / "collectors"
RATIO_TARGET: Final = 1.5  # large/small, per collect
SIZES: Final = ("small", "large")
SCHEMAS: Final = {"small": "bench_small", "large": "bench_large"}
DEFAULT_CHECKPOINTS: Final = {"small": 10_000, "large": 1_000_000}
CHECKPOINTS_PER_THREAD: Final = 8
CHECKPOINTS_PER_BLOB: Final = 2
AGE_DAYS: Final = 30  # the oldest checkpoint is this old, the newest a moment old
WARMUP: Final = 5  # untimed collects per probe before the first timing
# Below six pairs no two order statistics bracket the median with 95 % confidence.
MIN_PAIRS: Final = 6
# Marks a schema this script filled, with its sizes, so that --reuse can trust it.
FILL_VERSION: Final = 1

STATEMENTS_NOTE: Final = (
    "the embedded PostgreSQL has no pg_stat_statements: statements reads pg_extension, finds "
    "nothing and exports only `available 0`, so its row is a floor, not the cost with the "
    "extension"
)

FILL_MARK: Final = "SELECT obj_description(%s::regnamespace, 'pg_namespace') AS mark"


# --------------------------------------------------------------------------------------
# The two schemas
# --------------------------------------------------------------------------------------


def bench_shape(checkpoints: int) -> Shape:
    """The shape of a schema of ``checkpoints``: 8 per thread, a blob for every second one."""
    return Shape(
        checkpoints,
        threads=max(1, checkpoints // CHECKPOINTS_PER_THREAD),
        blobs=checkpoints // CHECKPOINTS_PER_BLOB,
    )


def mark(shape: Shape) -> str:
    """What a finished fill of ``shape`` writes on its schema."""
    return (
        f"bench/collectors.py fill v{FILL_VERSION}: {shape.checkpoints} checkpoints, "
        f"{shape.threads} threads, {shape.blobs} blobs, {shape.writes} writes"
    )


async def connect(url: str) -> AsyncConnection[DictRow]:
    return await AsyncConnection.connect(url, autocommit=True, row_factory=dict_row)


async def filled_already(url: str, schema: str, shape: Shape) -> bool:
    """Whether ``schema`` carries the mark of a finished fill of this very shape."""
    async with await connect(url) as conn:
        cursor = await conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
        if await cursor.fetchone() is None:
            return False
        cursor = await conn.execute(FILL_MARK, (schema,))
        row = await cursor.fetchone()
    return row is not None and row["mark"] == mark(shape)


async def fill(url: str, schema: str, shape: Shape, progress: bool) -> dict[str, float]:
    """Drop ``schema``, create LangGraph's tables in it, fill them in bulk; seconds per step."""
    timings: dict[str, float] = {}

    def step(name: str, seconds: float) -> None:
        timings[name] = seconds
        if progress:
            print(f"  {schema}: {name} {seconds:.1f} s", file=sys.stderr)

    ident = sql.Identifier(schema)
    async with await connect(url) as conn:
        await conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(ident))
    await prepare_schema(url, Settings(postgres_connection_string=url, postgres_schema=schema))
    span = AGE_DAYS * 86_400
    async with await connect(url) as conn:
        await checkpoint_rows.fill(conn, schema, shape, time.time() - span, span, step)
        await conn.execute(
            sql.SQL("COMMENT ON SCHEMA {} IS {}").format(ident, sql.Literal(mark(shape)))
        )
    return timings


async def flush(url: str) -> None:
    """Write every dirty buffer out now, so that no checkpoint lands among the timings."""
    async with await connect(url) as conn:
        await conn.execute("CHECKPOINT")


# --------------------------------------------------------------------------------------
# What is timed
# --------------------------------------------------------------------------------------


def frozen_clock() -> Callable[[], float]:
    """A clock that never moves: the tables sample, once drawn, is never stale."""
    start = time.monotonic()
    return lambda: start


def leaping_clock(interval: float) -> Callable[[], float]:
    """A clock whose every reading is more than ``interval`` past the last: always stale."""
    readings = itertools.count()
    step = interval + 1.0
    return lambda: next(readings) * step


def fresh(collector: Collector, clock: Callable[[], float]) -> Collector:
    """A new instance of ``collector``'s class; ``tables`` reads ``clock``."""
    if isinstance(collector, TablesCollector):
        return TablesCollector(clock=clock)
    return type(collector)()


@dataclass(frozen=True, slots=True)
class Subject:
    """One row of the table: a collector on its own, or a whole scrape."""

    name: str
    collectors: tuple[Collector, ...]
    scrape: bool = False
    resample: bool = False
    note: str | None = None


def subjects() -> list[Subject]:
    """Every database collector of ``ALL`` (tables twice), then whole scrapes."""
    every = create(c.name for c in ALL)
    database = [c for c in every if c.database_wide]
    rows: list[Subject] = []
    for collector in database:
        if isinstance(collector, TablesCollector):
            rows.append(Subject("tables (cached)", (collector,)))
            rows.append(Subject("tables (resample)", (collector,), resample=True))
        else:
            note = STATEMENTS_NOTE if collector.name == "statements" else None
            rows.append(Subject(collector.name, (collector,), note=note))
    rows.append(Subject("scrape", every, scrape=True))
    rows.append(Subject("scrape (resample)", every, scrape=True, resample=True))
    return rows


class Probe:
    """A subject at one size, on instances of its own; counts sample draws and failures."""

    def __init__(self, subject: Subject, settings: Settings) -> None:
        clock = leaping_clock(settings.tables_interval) if subject.resample else frozen_clock()
        self.subject = subject
        self.collectors = tuple(fresh(c, clock) for c in subject.collectors)
        self.deadline = settings.collector_timeout
        self.draws = 0
        self.failures = 0
        self._tables = [c for c in self.collectors if isinstance(c, TablesCollector)]

    async def run(self, ctx: ScrapeContext) -> list[Metric]:
        before = [t.sample for t in self._tables]
        if self.subject.scrape:
            families = await run_collectors(self.collectors, ctx, self.deadline)
            self.failures += sum(
                1
                for family in families
                for sample in family.samples
                if sample.name == SUCCESS and sample.value == 0
            )
        else:
            families = list(await self.collectors[0].collect(ctx))
        self.draws += sum(t.sample is not b for t, b in zip(self._tables, before, strict=True))
        return families


@dataclass(slots=True)
class Result:
    """Timings of one subject at both sizes, in milliseconds, in repetition order."""

    subject: Subject
    ms: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in SIZES})
    series: dict[str, int] = field(default_factory=dict)
    draws: dict[str, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)

    def median_ms(self, size: str) -> float:
        return median(self.ms[size])

    @property
    def ratio(self) -> float:
        """Ratio of the medians, the headline figure."""
        small = self.median_ms("small")
        return self.median_ms("large") / small if small else 0.0

    @property
    def paired_ratios(self) -> list[float]:
        """large/small within each repetition: neighbours in time, the same stretch of noise."""
        return [
            large / small for small, large in zip(self.ms["small"], self.ms["large"], strict=True)
        ]

    def verdict(self) -> dict[str, Any]:
        ratios = self.paired_ratios
        low, high = median_interval(ratios)
        if len(ratios) < MIN_PAIRS:
            outcome = "INCONCLUSIVE (too few repetitions)"
        elif high <= RATIO_TARGET:
            outcome = "PASS"
        elif low > RATIO_TARGET:
            outcome = "FAIL"
        else:
            outcome = "INCONCLUSIVE"
        return {
            "ratio_of_medians": self.ratio,
            "paired_ratio_median": median(ratios),
            "interval": (low, high),
            "target_max_ratio": RATIO_TARGET,
            "outcome": outcome,
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "collectors": [c.name for c in self.subject.collectors],
            "scrape": self.subject.scrape,
            "resample": self.subject.resample,
            "note": self.subject.note,
            "median_ms": {size: self.median_ms(size) for size in SIZES},
            "added_ms": self.median_ms("large") - self.median_ms("small"),
            "series": self.series,
            "sample_draws": self.draws,
            "failed_collectors": self.failures,
            "ms": self.ms,
            "verdict": self.verdict(),
        }


def series_count(families: Sequence[Metric]) -> int:
    return sum(len(family.samples) for family in families)


async def measure(
    pool: AsyncConnectionPool[Any],
    settings: dict[str, Settings],
    repetitions: int,
    progress: bool,
) -> list[Result]:
    """Time every subject at both sizes, interleaved; the order alternates per repetition."""
    probes = {
        subject.name: {size: Probe(subject, settings[size]) for size in SIZES}
        for subject in subjects()
    }
    contexts = {
        size: {
            False: ScrapeContext(settings[size], pool),
            True: ScrapeContext(settings[size], pool, pools={"exporter": pool}),
        }
        for size in SIZES
    }
    results = {name: Result(by_size["small"].subject) for name, by_size in probes.items()}
    for name, by_size in probes.items():
        for size, probe in by_size.items():
            ctx = contexts[size][probe.subject.scrape]
            families: list[Metric] = []
            for _ in range(WARMUP):
                families = await probe.run(ctx)
            results[name].series[size] = series_count(families)
            probe.draws = probe.failures = 0
    for rep in range(repetitions):
        order = SIZES if rep % 2 == 0 else SIZES[::-1]
        gc.collect()
        for name, by_size in probes.items():
            for size in order:
                probe = by_size[size]
                ctx = contexts[size][probe.subject.scrape]
                started = perf_counter()
                await probe.run(ctx)
                results[name].ms[size].append((perf_counter() - started) * 1000)
        if progress and (rep + 1) % max(1, repetitions // 10) == 0:
            print(f"  repetition {rep + 1}/{repetitions}", file=sys.stderr)
    for name, by_size in probes.items():
        results[name].draws = {size: probe.draws for size, probe in by_size.items()}
        results[name].failures = {size: probe.failures for size, probe in by_size.items()}
    return list(results.values())


async def describe(pool: AsyncConnectionPool[Any], settings: Settings) -> dict[str, Any]:
    """What the tables collector itself reports of a schema: rows and bytes per table."""
    families = await TablesCollector().collect(ScrapeContext(settings, pool))
    out: dict[str, Any] = {"estimated_rows": {}, "size_bytes": {}, "sample_rows": {}}
    for family in families:
        for sample in family.samples:
            if sample.name == tables_module.PREFIX + "estimated_rows":
                out["estimated_rows"][sample.labels["table"]] = sample.value
            elif sample.name == tables_module.PREFIX + "size_bytes":
                out["size_bytes"][sample.labels["table"]] = sample.value
            elif sample.name == tables_module.PREFIX + "sample_rows":
                out["sample_rows"][sample.labels["table"]] = sample.value
            elif sample.name == tables_module.PREFIX + "estimated_threads":
                out["estimated_threads"] = sample.value
            elif sample.name == tables_module.PREFIX + "oldest_checkpoint_age_seconds":
                out["oldest_checkpoint_age_seconds"] = sample.value
    out["total_bytes"] = sum(out["size_bytes"].values())
    return out


async def server_version(pool: AsyncConnectionPool[Any]) -> str:
    async with pool.connection() as conn:
        cursor = await conn.execute("SELECT current_setting('server_version') AS version")
        row = await cursor.fetchone()
    return str(row["version"]) if row else "?"


@dataclass(slots=True)
class Run:
    shapes: dict[str, Shape]
    fill_seconds: dict[str, dict[str, float]]
    reused: dict[str, bool]
    data: dict[str, dict[str, Any]]
    server: str
    results: list[Result]


async def run(
    data_dir: Path, shapes: dict[str, Shape], repetitions: int, reuse: bool, progress: bool
) -> Run:
    async with embedded_database(data_dir) as url:
        fill_seconds: dict[str, dict[str, float]] = {}
        reused: dict[str, bool] = {}
        for size in SIZES:
            schema, shape = SCHEMAS[size], shapes[size]
            reused[size] = reuse and await filled_already(url, schema, shape)
            if reused[size]:
                if progress:
                    print(f"  {schema}: reusing the earlier fill ({mark(shape)})", file=sys.stderr)
                continue
            if progress:
                print(f"filling {schema} ...", file=sys.stderr)
            fill_seconds[size] = await fill(url, schema, shape, progress)
        await flush(url)
        settings = {
            size: Settings(postgres_connection_string=url, postgres_schema=SCHEMAS[size])
            for size in SIZES
        }
        pool = exporter_pool(url, settings["small"])
        await pool.open(wait=True)
        try:
            data = {size: await describe(pool, settings[size]) for size in SIZES}
            version = await server_version(pool)
            if progress:
                print(f"timing {repetitions} repetitions ...", file=sys.stderr)
            results = await measure(pool, settings, repetitions, progress)
        finally:
            await pool.close()
    return Run(shapes, fill_seconds, reused, data, version, results)


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------


def _bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def render(env: dict[str, Any], result: Run, repetitions: int) -> str:
    code = env["code"]
    lines = [
        f"Collector cost against table size, {env['date']}, Python {env['python']}, "
        f"{env['cpus']} CPUs, PostgreSQL {result.server} (embedded)",
        describe_code(code),
        "",
    ]
    for size in SIZES:
        shape, data = result.shapes[size], result.data[size]
        rows = data["estimated_rows"]
        sizes = data["size_bytes"]
        filled = (
            "reused"
            if result.reused[size]
            else f"filled in {sum(result.fill_seconds[size].values()):.0f} s"
        )
        lines.append(
            f"{SCHEMAS[size]:<12} {shape.checkpoints:>9,} checkpoints ({shape.threads:,} threads), "
            f"{shape.blobs:,} blobs ({shape.null_blobs:,} NULL), {shape.writes:,} writes; {filled}"
        )
        tables = [
            f"{table} {rows.get(table, 0):,.0f} rows {_bytes(sizes.get(table, 0))}"
            for table in tables_module.TABLES[:3]
        ]
        lines += [
            f"{'':<13}as the tables collector reads it: {tables[0]}, {tables[1]},",
            f"{'':<13}{tables[2]}; {data.get('estimated_threads', 0):,.0f} threads; "
            f"{_bytes(data['total_bytes'])} in all",
            f"{'':<13}its sample: "
            + ", ".join(f"{n:,.0f} {table}" for table, n in data["sample_rows"].items())
            + f" rows; oldest checkpoint "
            f"{data.get('oldest_checkpoint_age_seconds', 0) / 86_400:.1f} days old",
        ]
    lines += [
        "",
        f"{repetitions} repetitions; in each, every row is timed at both sizes back to back, "
        "small first in odd repetitions, large first in even ones;",
        "one collect() (scrape rows: one run_collectors over all five collectors) per timing, "
        "on a fresh instance per schema",
        "",
        f"   {'collector':<20}{'series':>7}{'small ms':>10}{'large ms':>10}{'+ms':>8}"
        f"{'large/small':>13}  paired ratio, ~95 % interval",
    ]
    notes: list[str] = []
    for r in result.results:
        v = r.verdict()
        mark = ""
        if r.subject.note is not None:
            notes.append(r.subject.note)
            mark = " (" + "*" * len(notes) + ")"
        series = r.series.get("large", 0)
        lines.append(
            f"   {r.subject.name + mark:<20}{series:>7}{r.median_ms('small'):>10.3f}"
            f"{r.median_ms('large'):>10.3f}{r.median_ms('large') - r.median_ms('small'):>+8.3f}"
            f"{r.ratio:>13.3f}  {v['paired_ratio_median']:.3f} {span(v['interval'], '.3f')}"
        )
    lines.append("")
    for index, note in enumerate(notes, start=1):
        lines.append(f"   ({'*' * index}) {note}")
    draws = {r.subject.name: r.draws for r in result.results if r.draws and any(r.draws.values())}
    cached = [r for r in result.results if r.subject.name in ("tables (cached)", "scrape")]
    lines.append(
        "   sample draws during the timings: "
        + ", ".join(f"{name} {d['small']}/{d['large']}" for name, d in draws.items())
        + " (small/large; one per collect expected)"
        + (
            ""
            if not any(any(r.draws.values()) for r in cached)
            else "; cached rows redrew the sample!"
        )
    )
    failed = {r.subject.name: r.failures for r in result.results if any(r.failures.values())}
    lines.append(
        "   failed collectors in scrapes: "
        + (", ".join(f"{n} {f['small']}/{f['large']}" for n, f in failed.items()) or "none")
    )
    lines.append("")
    lines += [verdict_line(r.subject.name, r.verdict(), RATIO_TARGET) for r in result.results]
    return "\n".join(lines)


def report_dict(env: dict[str, Any], result: Run, repetitions: int) -> dict[str, Any]:
    return {
        "environment": {**env, "postgres": result.server},
        "repetitions": repetitions,
        "target_max_ratio": RATIO_TARGET,
        "schemas": {
            size: {
                "schema": SCHEMAS[size],
                "checkpoints": result.shapes[size].checkpoints,
                "threads": result.shapes[size].threads,
                "blobs": result.shapes[size].blobs,
                "null_blobs": result.shapes[size].null_blobs,
                "writes": result.shapes[size].writes,
                "reused": result.reused[size],
                "fill_seconds": result.fill_seconds.get(size),
                **result.data[size],
            }
            for size in SIZES
        },
        "results": {r.subject.name: r.as_dict() for r in result.results},
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--small",
        type=int,
        default=DEFAULT_CHECKPOINTS["small"],
        help=f"checkpoints in {SCHEMAS['small']} ({DEFAULT_CHECKPOINTS['small']:_})",
    )
    parser.add_argument(
        "--large",
        type=int,
        default=DEFAULT_CHECKPOINTS["large"],
        help=f"checkpoints in {SCHEMAS['large']} ({DEFAULT_CHECKPOINTS['large']:_})",
    )
    parser.add_argument(
        "--repetitions", type=int, default=200, help="timings per row and size (200)"
    )
    add_data_dir(parser)
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="with --data-dir: keep a schema this script already filled to the same size",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if args.small < 1 or args.large < 1 or args.repetitions < 1:
        parser.error("--small, --large and --repetitions must be at least 1")
    if args.reuse and args.data_dir is None:
        parser.error("--reuse needs --data-dir")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging("warning", stream=sys.stderr)
    env = environment(code_under_test("exporter/collectors/", COLLECTORS.glob("*.py")))
    shapes = {"small": bench_shape(args.small), "large": bench_shape(args.large)}
    with tempfile.TemporaryDirectory(prefix="bench-collectors-") as scratch:
        data_dir = args.data_dir or Path(scratch) / "pgdata"
        result = asyncio.run(run(data_dir, shapes, args.repetitions, args.reuse, not args.json))
    if args.json:
        print(json.dumps(report_dict(env, result, args.repetitions), indent=2))
    else:
        print(render(env, result, args.repetitions))
    return 0


if __name__ == "__main__":
    sys.exit(main())
