"""One scrape of the sidecar taken apart in process: where its wall and CPU time go.

On one embedded PostgreSQL whose checkpoint tables hold real checkpoints of
the workload graph, a sidecar runs in this process with the settings
``python -m exporter serve`` would use (the same flags parsed by the
exporter's own CLI). Each repetition times the leader check, each collector
alone on an idle pool (its own cost, without waiting for one of the pool's
connections), a whole ``Sidecar.scrape()``, and rendering: everything anew
with ``generate_latest`` and as ``/metrics`` does, reusing unchanged text.
Then the CPU of whole scrapes by package and by function under cProfile, and
each statement a scrape runs alone, with the server's planning and execution
times from EXPLAIN ANALYZE. ``bench/scrape_latency.py --profile`` prints the
same next to the latency over HTTP. The exit status is 0: this is a
measurement, not a test.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import re
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from time import monotonic, perf_counter, process_time, time
from typing import Any, Final

from benchlib import ROOT, median, report_main, run_collector, seed, server_version
from children import add_sidecar_flags, sidecar_settings
from prometheus_client import generate_latest
from psycopg import AsyncConnection

from exporter.collectors import activity, migrations, tables, workflows
from exporter.collectors.base import Memo
from exporter.collectors.tables import TablesCollector
from exporter.database import exporter_connect_kwargs
from exporter.embedded import embedded_database
from exporter.exposition import Renderer, exposition
from exporter.settings import DEFAULT_SCHEMA, Settings
from exporter.sidecar import Sidecar
from exporter.sql import server as exporter_sql

STEP_LEADER: Final = "leader check, also the ping (own session)"
STEP_PING: Final = "ping (exporter pool)"
STEP_SCRAPE: Final = "Sidecar.scrape(): all of it"
STEP_RENDER: Final = "render (what /metrics does: unchanged families reused)"
STEP_RENDER_WHOLE: Final = "render everything anew (generate_latest)"
STEP_TOTAL: Final = "scrape + render"
STEP_HISTOGRAMS: Final = "tables: histograms from the cached sample"
PROFILED_SCRAPES: Final = 30
PROBE_REPETITIONS: Final = 100
TOP_FUNCTIONS: Final = 12
EXPLAIN: Final = b"EXPLAIN (ANALYZE, TIMING OFF, SUMMARY ON) "
PLAN_TIME = re.compile(r"^(Planning|Execution) Time: ([0-9.]+) ms$")


def statement_probes(schema: str = DEFAULT_SCHEMA) -> list[tuple[str, bytes]]:
    """Every statement a scrape runs here (no pg_stat_statements), by collector, as it runs it."""
    defaults = Settings()
    return [
        ("leader check: SERVER_VERSION", exporter_sql.SERVER_VERSION.encode()),
        ("activity: ACTIVITY", activity.ACTIVITY.encode()),
        ("migrations: TABLES_EXIST_AND_VERSION", migrations.tables_and_version_query(schema)),
        ("tables: CATALOG", tables.catalog_query(schema)),
        (
            "workflows: SUMMARY",
            workflows.summary_query(schema, defaults.stuck_after, defaults.prune_threshold),
        ),
    ]


@dataclass(slots=True)
class Step:
    """Wall and CPU time of one step of a scrape, per repetition."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def add(self, wall: float, cpu: float) -> None:
        self.wall.append(wall)
        self.cpu.append(cpu)


@dataclass(slots=True)
class ProfileReport:
    repetitions: int
    steps: dict[str, Step] = field(default_factory=dict)
    collectors: list[str] = field(default_factory=list)
    cpu_by_package: dict[str, float] = field(default_factory=dict)
    cpu_by_function: dict[str, float] = field(default_factory=dict)
    pool_size: int = 0
    sample_rows: dict[str, int] = field(default_factory=dict)
    # statement -> (round trip, server planning, server execution), medians in ms
    statements: dict[str, tuple[float, float, float]] = field(default_factory=dict)

    def step(self, name: str) -> Step:
        return self.steps.setdefault(name, Step())

    def as_dict(self) -> dict[str, Any]:
        return {
            "repetitions": self.repetitions,
            "exporter_pool_size": self.pool_size,
            "steps_ms": {
                name: {"wall": median(s.wall) * 1000, "cpu": median(s.cpu) * 1000}
                for name, s in self.steps.items()
            },
            "profiled_cpu_ms_per_scrape_by_package": self.cpu_by_package,
            "profiled_cpu_ms_per_scrape_top_functions": self.cpu_by_function,
            "tables_sample_rows": self.sample_rows,
            "statements_ms": {
                name: {"round_trip": trip, "planning": plan, "execution": run}
                for name, (trip, plan, run) in self.statements.items()
            },
        }


def package_of(filename: str) -> str:
    """Where a profiled function lives: a distribution, a stdlib module, ours, or C."""
    if filename.startswith("~") or filename.startswith("<"):
        return "C functions (socket, zlib, builtins)"
    path = Path(filename)
    if "site-packages" in path.parts:
        after = path.parts[path.parts.index("site-packages") + 1 :]
        return after[0].removesuffix(".py") if after else filename
    if ROOT / "exporter" in path.parents:
        return "exporter"
    stdlib = Path(os.__file__).parent
    if stdlib in path.parents:
        relative = path.relative_to(stdlib).parts
        return f"stdlib {relative[0].removesuffix('.py')}"
    return filename


class Timer:
    """Wall and CPU time of a ``with`` block, added to a step of ``report``."""

    def __init__(self, report: ProfileReport, name: str) -> None:
        self._step = report.step(name)

    def __enter__(self) -> None:
        self._wall, self._cpu = perf_counter(), process_time()

    def __exit__(self, *_: object) -> None:
        self._step.add(perf_counter() - self._wall, process_time() - self._cpu)


async def profile_scrape(
    url: str, settings: Settings, repetitions: int, warmup: int
) -> ProfileReport:
    """Time each part of a scrape in this process, with ``settings`` (those ``serve`` uses)."""
    report = ProfileReport(repetitions, pool_size=settings.exporter_pool_size)
    async with Sidecar(settings) as sidecar:
        report.collectors = [c.name for c in sidecar.collectors]
        renderer = Renderer(sidecar.registry)
        for _ in range(warmup):
            renderer.render(await sidecar.scrape())
        for _ in range(repetitions):
            if sidecar.leader is not None:
                with Timer(report, STEP_LEADER):
                    await sidecar.leader.check()
            else:  # leader election off: the scrape pings through the pool
                with Timer(report, STEP_PING):
                    await sidecar.pool_ping()
            for collector in sidecar.collectors:
                ctx = sidecar.context()
                with Timer(report, f"{collector.name} alone"):
                    await run_collector(collector, ctx, settings.collector_timeout)
            wall, cpu = perf_counter(), process_time()
            families = await sidecar.scrape()
            scraped = (perf_counter() - wall, process_time() - cpu)
            report.step(STEP_SCRAPE).add(*scraped)
            with Timer(report, STEP_RENDER_WHOLE):
                generate_latest(exposition(sidecar.registry, families))
            wall, cpu = perf_counter(), process_time()
            renderer.render(families)
            rendered = (perf_counter() - wall, process_time() - cpu)
            report.step(STEP_RENDER).add(*rendered)
            report.step(STEP_TOTAL).add(scraped[0] + rendered[0], scraped[1] + rendered[1])
        sampler = next((c for c in sidecar.collectors if isinstance(c, TablesCollector)), None)
        sample = sampler.sample if sampler is not None else None
        if sample is not None:
            report.sample_rows = {
                "checkpoints": len(sample.checkpoint_bytes),
                "checkpoint_blobs": len(sample.blob_bytes),
            }
            # As the collector builds them: the size families once per sample, the ages anew.
            sizes = Memo(tables.size_families)
            for _ in range(repetitions):
                with Timer(report, STEP_HISTOGRAMS):
                    tables.sample_families(
                        sample, settings.tables_interval, monotonic(), time(), sizes
                    )
        # CPU by package over whole scrapes; profiling inflates it, the shares hold.
        profiler = cProfile.Profile(process_time)
        profiler.enable()
        for _ in range(PROFILED_SCRAPES):
            renderer.render(await sidecar.scrape())
        profiler.disable()
    by_package: dict[str, float] = {}
    by_function: dict[str, float] = {}
    stats: dict[Any, Any] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    for (filename, line, function), (_, _, own, _, _) in stats.items():
        ms = own * 1000 / PROFILED_SCRAPES
        package = package_of(filename)
        by_package[package] = by_package.get(package, 0.0) + ms
        where = f"{Path(filename).name}:{line} " if line else ""
        name = f"{where}{function}"
        by_function[name] = by_function.get(name, 0.0) + ms
    report.cpu_by_package = dict(sorted(by_package.items(), key=lambda kv: -kv[1]))
    top = sorted(by_function.items(), key=lambda kv: -kv[1])[:TOP_FUNCTIONS]
    report.cpu_by_function = dict(top)
    report.statements = await probe_statements(url, settings)
    return report


async def probe_statements(url: str, settings: Settings) -> dict[str, tuple[float, float, float]]:
    """Each statement alone on a connection set up as the exporter's: round trip and server time.

    The connection prepares as the exporter's does (``prepare_threshold`` from the settings), so
    the round trips are those of a scrape; EXPLAIN ANALYZE separates planning from execution.
    """
    probes = statement_probes(settings.postgres_schema)
    trips: dict[str, list[float]] = {name: [] for name, _ in probes}
    plans: dict[str, list[float]] = {name: [] for name, _ in probes}
    runs: dict[str, list[float]] = {name: [] for name, _ in probes}
    kwargs = exporter_connect_kwargs(url, settings)
    async with await AsyncConnection.connect(url, **kwargs) as conn:
        for _ in range(PROBE_REPETITIONS):
            for name, query in probes:
                started = perf_counter()
                await (await conn.execute(query)).fetchall()
                trips[name].append(perf_counter() - started)
        for _ in range(PROBE_REPETITIONS // 10):
            for name, query in probes:
                rows = await (await conn.execute(EXPLAIN + query)).fetchall()
                for row in rows:
                    match = PLAN_TIME.match(str(row["QUERY PLAN"]))
                    if match:
                        into = plans if match[1] == "Planning" else runs
                        into[name].append(float(match[2]) / 1000)
    return {
        name: (median(trips[name]) * 1000, median(plans[name]) * 1000, median(runs[name]) * 1000)
        for name in trips
    }


def render_profile(
    report: ProfileReport, over_http: tuple[float, float] | None = None
) -> list[str]:
    """The report's lines; ``over_http`` (our median and the floor's, ms) adds what HTTP costs."""
    lines = [
        "   One scrape taken apart in this process (the settings serve uses; "
        f"{report.repetitions} repetitions, medians; exporter pool of {report.pool_size}):",
        "",
        f"   {'step':<56}{'wall ms':>9}{'CPU ms':>9}",
    ]
    steps = report.as_dict()["steps_ms"]
    parts = [STEP_LEADER, STEP_PING, *(f"{name} alone" for name in report.collectors)]
    for name in [*parts, STEP_HISTOGRAMS, STEP_SCRAPE, STEP_RENDER_WHOLE, STEP_RENDER, STEP_TOTAL]:
        if name == STEP_SCRAPE:
            wall = sum(steps[part]["wall"] for part in parts if part in steps)
            cpu = sum(steps[part]["cpu"] for part in parts if part in steps)
            lines.append(f"   {'sum of the above, one after another':<56}{wall:>9.2f}{cpu:>9.2f}")
        if name in steps:
            lines.append(f"   {name:<56}{steps[name]['wall']:>9.2f}{steps[name]['cpu']:>9.2f}")
    if over_http is not None and STEP_TOTAL in steps:
        ours, floor = over_http
        rest = ours - floor - steps[STEP_TOTAL]["wall"]
        lines += [
            f"   {'over HTTP, ours (part 1)':<56}{ours:>9.2f}",
            f"   {'over HTTP, the static floor (part 1)':<56}{floor:>9.2f}",
            f"   {'left: handler (ours - floor - scrape - render)':<56}{rest:>9.2f}",
        ]
    if report.sample_rows:
        rows = ", ".join(f"{table} {n}" for table, n in report.sample_rows.items())
        lines.append(f"   ({STEP_HISTOGRAMS.split(':')[0]}' cached sample: {rows} rows)")
    if report.statements:
        lines += [
            "",
            "   Each statement alone, on a connection set up as the exporter's; "
            "server times from EXPLAIN ANALYZE:",
            "",
            f"   {'statement':<36}{'round trip ms':>14}{'planning ms':>13}{'execution ms':>14}",
        ]
        for name, (trip, plan, run) in report.statements.items():
            lines.append(f"   {name:<36}{trip:>14.3f}{plan:>13.3f}{run:>14.3f}")
    shares = ", ".join(
        f"{name} {ms:.2f}" for name, ms in report.cpu_by_package.items() if ms >= 0.05
    )
    lines += [
        "",
        "   CPU per scrape + render under cProfile, by package (ms; profiling inflates it):",
        *textwrap.wrap(shares, 96, initial_indent="     ", subsequent_indent="     "),
        "",
        "   Functions with the most CPU of their own (ms per scrape + render, under cProfile):",
        *(f"     {ms:6.2f}  {name}" for name, ms in report.cpu_by_function.items()),
    ]
    return lines


def add_profile_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--profile-scrapes",
        type=int,
        default=100,
        help="in-process scrapes taken apart (100)",
    )


async def run(args: argparse.Namespace, scratch: Path) -> tuple[str, ProfileReport]:
    async with embedded_database(scratch / "pgdata") as url:
        postgres = await server_version(url)
        if not args.json:
            print(f"writing {args.seed_workflows} workflows ...", file=sys.stderr)
        await seed(url, args.seed_workflows)
        settings = sidecar_settings(url, args)
        return postgres, await profile_scrape(url, settings, args.profile_scrapes, args.warmup)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_profile_options(parser)
    parser.add_argument("--warmup", type=int, default=20, help="warm-up scrapes (20)")
    parser.add_argument(
        "--seed-workflows", type=int, default=200, help="workflows written before measuring (200)"
    )
    add_sidecar_flags(parser)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    return report_main(
        "bench/scrape_profile.py",
        "One scrape taken apart",
        lambda scratch: run(args, scratch),
        render_profile,
        as_json=args.json,
    )


if __name__ == "__main__":
    sys.exit(main())
