"""The workflows collector against the number of threads: 10 thousand and 1 million, in one run.

On the embedded PostgreSQL, two schemas are prepared as the application
prepares them (``prepare_schema``: LangGraph's tables, ``workflow_metadata``
and its migrations, the status-count triggers included) and ``workflow_metadata``
is filled in one ``INSERT ... SELECT generate_series`` per schema, through the
triggers: by default 10 thousand threads in ``bench_workflows_small`` and 1
million in ``bench_workflows_large``. What grows is history, not concurrency:
both hold the same active set (200 running workflows, 20 of them stuck, 50
interrupted, 20 prune candidates, the canary's row), and the rest is 1 %
failed, 0.5 % cancelled and otherwise completed, spread over 30 days. After
the fill the maintained counts are checked against a scan (the run stops if
they differ), then ``VACUUM (ANALYZE)`` and a ``CHECKPOINT``.

Timed, one execution per timing, small and large back to back in each
repetition, the order alternating: the collector's summary statement as it
runs now (the counts table), the statement it replaced (``count(*) ... GROUP
BY status``, the fallback for a schema without the counts), each on a held
connection, and a whole ``collect()`` of a fresh ``WorkflowsCollector`` per
schema, pool checkout included. The target is a large/small ratio of at most
1.5; the verdict comes from a distribution-free ~95 % interval for the median
of the per-repetition ratios, as in ``bench/collectors.py``. The exit status
is 0 whatever it says: this is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter
from typing import Any, Final

from benchlib import (
    ROOT,
    add_data_dir,
    code_under_test,
    describe_code,
    environment,
    span,
    verdict_line,
)
from collectors import RATIO_TARGET, SIZES, WARMUP, Result, Subject, connect, flush
from psycopg import AsyncConnection, sql
from psycopg.rows import DictRow

from exporter.collectors import ScrapeContext
from exporter.collectors.workflows import WorkflowsCollector, summary_query
from exporter.database import exporter_connect_kwargs, exporter_pool
from exporter.embedded import embedded_database
from exporter.factory import prepare_schema
from exporter.loadtest import percentile
from exporter.log import configure_logging
from exporter.settings import Settings
from exporter.workflows.schema import CANARY_THREAD_ID, COUNTS_TABLE, TABLE

SOURCES: Final = (
    ROOT / "exporter" / "collectors" / "workflows.py",
    ROOT / "exporter" / "workflows" / "schema.py",
)
SCHEMAS: Final = {"small": "bench_workflows_small", "large": "bench_workflows_large"}
DEFAULT_THREADS: Final = {"small": 10_000, "large": 1_000_000}
# The active set, the same at both sizes.
RUNNING: Final = 200
STUCK: Final = 20  # of the running ones
INTERRUPTED: Final = 50
PRUNE_CANDIDATES: Final = 20
# Shares of the history, per thousand.
FAILED_PER_MILLE: Final = 10
CANCELLED_PER_MILLE: Final = 5
AGE_DAYS: Final = 30

# Thread i: the active set first, then history; ages in seconds before now(). The canary's row
# is added apart, running and stuck, as the canary would leave it if it were tracked.
FILL: Final = """
INSERT INTO {table}
    (thread_id, status, first_activity, last_activity, last_checkpoint_id, checkpoint_count)
SELECT md5('thread-' || i)::uuid::text,
       CASE WHEN i < %(running)s THEN 'running'
            WHEN i < %(running)s + %(interrupted)s THEN 'interrupted'
            WHEN i %% 1000 < %(failed)s THEN 'failed'
            WHEN i %% 1000 < %(failed)s + %(cancelled)s THEN 'cancelled'
            ELSE 'completed' END,
       now() - make_interval(secs => first_age), now() - make_interval(secs => last_age),
       md5(i::text),
       CASE WHEN i %% (%(threads)s / %(prune)s) = 7 THEN %(threshold)s * 2 ELSE 1 + i %% 40 END
FROM generate_series(0, %(threads)s - 1) AS i,
LATERAL (
    SELECT CASE WHEN i < %(stuck)s THEN 3600 + i * 60
                WHEN i < %(running)s THEN 1 + i %% 30
                ELSE %(span)s::float8 * (%(threads)s - i) / %(threads)s END AS last_age
) AS l,
LATERAL (SELECT l.last_age + 60 + i %% 600 AS first_age) AS f
"""
CANARY: Final = """
INSERT INTO {table} (thread_id, status, first_activity, last_activity, checkpoint_count)
VALUES (%(canary)s, 'running', now() - interval '40 days', now() - interval '40 days', 1)
"""
SCANNED: Final = "SELECT status, count(*) AS threads FROM {table} GROUP BY status ORDER BY 1"
MAINTAINED: Final = "SELECT status, threads FROM {counts} WHERE threads <> 0 ORDER BY 1"
SIZE: Final = """
SELECT pg_total_relation_size(%(table)s::regclass) AS total,
       pg_relation_size(%(table)s::regclass) AS heap
"""


@dataclass(frozen=True, slots=True)
class Fill:
    """What one schema holds once filled, as read back."""

    threads: int
    counts: dict[str, int]
    total_bytes: int
    heap_bytes: int
    seconds: float


async def fill(url: str, size: str, threads: int, settings: Settings, progress: bool) -> Fill:
    """Make ``size``'s schema afresh and fill it in one statement; check the counts are exact."""
    schema = SCHEMAS[size]
    table = sql.Identifier(schema, TABLE)
    async with await connect(url) as conn:
        await conn.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
        )
    await prepare_schema(url, settings)
    started = perf_counter()
    async with await connect(url) as conn:
        params = {
            "threads": threads,
            "running": RUNNING,
            "stuck": STUCK,
            "interrupted": INTERRUPTED,
            "failed": FAILED_PER_MILLE,
            "cancelled": CANCELLED_PER_MILLE,
            "prune": PRUNE_CANDIDATES,
            "threshold": settings.prune_threshold,
            "span": AGE_DAYS * 86_400,
        }
        await conn.execute(sql.SQL(FILL).format(table=table), params)
        await conn.execute(sql.SQL(CANARY).format(table=table), {"canary": CANARY_THREAD_ID})
        for name in (TABLE, COUNTS_TABLE):
            await conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(schema, name)))
        seconds = perf_counter() - started
        scanned = await _counts(conn, sql.SQL(SCANNED).format(table=table))
        maintained = await _counts(
            conn, sql.SQL(MAINTAINED).format(counts=sql.Identifier(schema, COUNTS_TABLE))
        )
        if maintained != scanned:
            raise SystemExit(f"{schema}: counts {maintained} differ from a scan {scanned}")
        cursor = await conn.execute(SIZE, {"table": f"{schema}.{TABLE}"})
        row = await cursor.fetchone()
    assert row is not None
    if progress:
        print(f"  {schema}: {threads:,} threads in {seconds:.1f} s, counts exact", file=sys.stderr)
    return Fill(threads, maintained, int(row["total"]), int(row["heap"]), seconds)


async def _counts(conn: AsyncConnection[DictRow], query: sql.Composed) -> dict[str, int]:
    cursor = await conn.execute(query)
    return {row["status"]: int(row["threads"]) for row in await cursor.fetchall()}


Timed = Callable[[], Awaitable[object]]


async def measure(
    url: str, settings: dict[str, Settings], repetitions: int, progress: bool
) -> tuple[list[Result], dict[str, int]]:
    """Time every subject at both sizes, interleaved; the order alternates per repetition."""
    pool = exporter_pool(url, settings["small"])
    await pool.open(wait=True)
    # Connections as the exporter's own: its timeouts, and statements prepared as it prepares them.
    held = {
        size: await AsyncConnection.connect(url, **exporter_connect_kwargs(url, settings[size]))
        for size in SIZES
    }
    try:

        def statement(size: str, counted: bool) -> Timed:
            s = settings[size]
            query = summary_query(
                s.postgres_schema, s.stuck_after, s.prune_threshold, counted=counted
            )

            async def run() -> object:
                cursor = await held[size].execute(query)
                return await cursor.fetchone()

            return run

        def collect(size: str) -> Timed:
            collector, ctx = WorkflowsCollector(), ScrapeContext(settings[size], pool)
            return lambda: collector.collect(ctx)

        subjects: dict[str, dict[str, Timed]] = {
            "summary (counts)": {size: statement(size, True) for size in SIZES},
            "summary (scan, before)": {size: statement(size, False) for size in SIZES},
            "collect()": {size: collect(size) for size in SIZES},
        }
        results = {name: Result(Subject(name, ())) for name in subjects}
        series: dict[str, int] = {}
        for size in SIZES:
            for timed in subjects.values():
                for _ in range(WARMUP):
                    await timed[size]()
            families = await WorkflowsCollector().collect(ScrapeContext(settings[size], pool))
            series[size] = sum(len(f.samples) for f in families)
        for rep in range(repetitions):
            order = SIZES if rep % 2 == 0 else SIZES[::-1]
            gc.collect()
            for name, by_size in subjects.items():
                for size in order:
                    started = perf_counter()
                    await by_size[size]()
                    results[name].ms[size].append((perf_counter() - started) * 1000)
            if progress and (rep + 1) % max(1, repetitions // 10) == 0:
                print(f"  repetition {rep + 1}/{repetitions}", file=sys.stderr)
    finally:
        for conn in held.values():
            await conn.close()
        await pool.close()
    return list(results.values()), series


async def server_version(url: str) -> str:
    async with await connect(url) as conn:
        cursor = await conn.execute("SELECT current_setting('server_version') AS version")
        row = await cursor.fetchone()
    return str(row["version"]) if row else "?"


@dataclass(slots=True)
class Run:
    fills: dict[str, Fill]
    server: str
    series: dict[str, int]
    results: list[Result]


async def run(data_dir: Path, threads: dict[str, int], repetitions: int, progress: bool) -> Run:
    async with embedded_database(data_dir) as url:
        settings = {
            size: Settings(postgres_connection_string=url, postgres_schema=SCHEMAS[size])
            for size in SIZES
        }
        fills = {}
        for size in SIZES:
            if progress:
                print(f"filling {SCHEMAS[size]} ...", file=sys.stderr)
            fills[size] = await fill(url, size, threads[size], settings[size], progress)
        await flush(url)
        if progress:
            print(f"timing {repetitions} repetitions ...", file=sys.stderr)
        results, series = await measure(url, settings, repetitions, progress)
        return Run(fills, await server_version(url), series, results)


def _mb(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MB"


def render(env: dict[str, Any], result: Run, repetitions: int) -> str:
    lines = [
        f"Workflows collector against threads, {env['date']}, Python {env['python']}, "
        f"{env['cpus']} CPUs, PostgreSQL {result.server} (embedded)",
        describe_code(env["code"]),
        "",
    ]
    for size in SIZES:
        f = result.fills[size]
        counts = ", ".join(f"{status} {n:,}" for status, n in f.counts.items())
        lines.append(
            f"{SCHEMAS[size]:<22} {f.threads:>9,} threads (+ the canary), filled in "
            f"{f.seconds:.1f} s; {_mb(f.heap_bytes)} heap, {_mb(f.total_bytes)} with indexes"
        )
        lines.append(f"{'':<23}counts (maintained = scanned): {counts}")
    lines += [
        "",
        f"{repetitions} repetitions; in each, every row is timed at both sizes back to back, "
        "small first in odd repetitions, large first in even ones; "
        f"{result.series.get('large', 0)} series per collect",
        "",
        f"   {'subject':<24}{'small ms':>9}{'p95':>8}{'large ms':>10}{'p95':>8}"
        f"{'large/small':>13}  paired ratio, ~95 % interval",
    ]
    for r in result.results:
        v = r.verdict()
        lines.append(
            f"   {r.subject.name:<24}{r.median_ms('small'):>9.3f}"
            f"{percentile(r.ms['small'], 95):>8.3f}{r.median_ms('large'):>10.3f}"
            f"{percentile(r.ms['large'], 95):>8.3f}{r.ratio:>13.3f}  "
            f"{v['paired_ratio_median']:.3f} {span(v['interval'], '.3f')}"
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
                "threads": f.threads,
                "counts": f.counts,
                "heap_bytes": f.heap_bytes,
                "total_bytes": f.total_bytes,
                "fill_seconds": f.seconds,
            }
            for size, f in result.fills.items()
        },
        "results": {
            r.subject.name: {
                **r.as_dict(),
                "p95_ms": {size: percentile(r.ms[size], 95) for size in SIZES},
            }
            for r in result.results
        },
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    for size in SIZES:
        parser.add_argument(
            f"--{size}",
            type=int,
            default=DEFAULT_THREADS[size],
            help=f"threads in {SCHEMAS[size]} ({DEFAULT_THREADS[size]:_})",
        )
    parser.add_argument(
        "--repetitions", type=int, default=200, help="timings per row and size (200)"
    )
    add_data_dir(parser)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    floor = RUNNING + INTERRUPTED + PRUNE_CANDIDATES
    if min(args.small, args.large) < floor or args.repetitions < 1:
        parser.error(f"--small and --large must be at least {floor}, --repetitions at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging("warning", stream=sys.stderr)
    env = environment(code_under_test("exporter/collectors/workflows.py + schema", SOURCES))
    threads = {"small": args.small, "large": args.large}
    with tempfile.TemporaryDirectory(prefix="bench-workflows-") as scratch:
        data_dir = args.data_dir or Path(scratch) / "pgdata"
        result = asyncio.run(run(data_dir, threads, args.repetitions, not args.json))
    if args.json:
        print(json.dumps(report_dict(env, result, args.repetitions), indent=2))
    else:
        print(render(env, result, args.repetitions))
    return 0


if __name__ == "__main__":
    sys.exit(main())
