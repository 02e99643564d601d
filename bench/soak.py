"""Resident memory and series of the sidecar over a soak, while a load test writes new threads.

On one embedded PostgreSQL whose checkpoint tables hold real checkpoints of
the workload graph, the sidecar runs as its own process (``python -m exporter
serve``, every setting at its default) and is scraped every second while
``python -m exporter loadtest`` in another process writes new threads all
along; its RSS is sampled every 10 s. Then the RSS of a fresh interpreter
after each import ``serve`` needs. Verdicts: RSS at the end under 80 MB, and
no series appearing after the first minute (the series must not grow with
the threads). They are printed, but the exit status is 0 whatever they say:
this is a measurement, not a test. Every process the script starts is
stopped, and its temporary directory (database included) removed, however
it ends.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
from collections.abc import Sequence
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path
from time import monotonic
from typing import Any, Final

import aiohttp
from benchlib import (
    BenchError,
    Counts,
    count_checkpoints,
    median,
    report_main,
    seed,
    server_version,
)
from children import (
    Response,
    add_encoding_option,
    add_sidecar_flags,
    child,
    child_environment,
    fetch,
    http_client,
    series_keys,
    sidecar_child,
    sidecar_flags,
    wait_ready,
)
from footprint import import_footprint, render_footprint
from psycopg import AsyncConnection

from exporter.embedded import embedded_database
from exporter.loadtest import percentile
from exporter.settings import DEFAULT_SCHEMA

RSS_TARGET_MB: Final = 80.0
SCRAPE_INTERVAL: Final = 1.0
RSS_INTERVAL: Final = 10.0
# The load test stops on its own after --duration; past this it is stopped.
LOADTEST_GRACE: Final = 120.0


def memory_mb(pid: int) -> tuple[float, float]:
    """Resident set size now and at its peak (VmRSS, VmHWM), in MB of 2**20 bytes."""
    fields: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) / 1024
    return fields.get("VmRSS", 0.0), fields.get("VmHWM", 0.0)


async def checkpoints_inserted(conn: AsyncConnection[Any]) -> int:
    """Rows ever inserted into ``checkpoints``, from the statistics: cheap enough to poll."""
    cursor = await conn.execute(
        "SELECT n_tup_ins FROM pg_stat_user_tables WHERE schemaname = %s AND relname = %s",
        (DEFAULT_SCHEMA, "checkpoints"),
    )
    row = await cursor.fetchone()
    return int(row[0]) if row else 0


@dataclass(frozen=True, slots=True)
class SoakScrape:
    t: float
    seconds: float | None
    series: int


@dataclass(frozen=True, slots=True)
class MemorySample:
    t: float
    rss_mb: float
    peak_mb: float
    checkpoints_inserted: int


@dataclass(slots=True)
class SoakReport:
    seconds: float
    workflows: int
    think_time: str
    sidecar_flags: list[str]
    before: Counts
    after: Counts
    scrapes: list[SoakScrape] = field(default_factory=list)
    memory: list[MemorySample] = field(default_factory=list)
    start_series: int = 0
    new_series: dict[str, float] = field(default_factory=dict)
    gone_series: dict[str, float] = field(default_factory=dict)
    loadtest: dict[str, Any] = field(default_factory=dict)
    footprint: list[tuple[str, float, int]] = field(default_factory=list)

    @property
    def settle(self) -> float:
        """The time after which no new series may appear: one minute, or half a short soak."""
        return min(60.0, self.seconds / 2)

    @property
    def late_series(self) -> dict[str, float]:
        return {key: t for key, t in self.new_series.items() if t > self.settle}

    def observe(self, t: float, response: Response | None, seen: set[str], known: set[str]) -> None:
        """Take in the scrape at ``t`` (None: it failed); ``seen`` grows with its series."""
        if response is None or response.status != 200:
            self.scrapes.append(SoakScrape(t, None, 0))
            return
        keys = set(series_keys(response.text))
        for key in keys - seen:
            self.new_series[key] = t
        for key in (seen - keys) & known:
            self.gone_series.setdefault(key, t)
        seen |= keys
        self.scrapes.append(SoakScrape(t, response.seconds, len(keys)))

    def as_dict(self) -> dict[str, Any]:
        ok = [s.seconds for s in self.scrapes if s.seconds is not None]
        return {
            "seconds": self.seconds,
            "loadtest_workflows": self.workflows,
            "loadtest_think_time": self.think_time,
            "sidecar_flags": self.sidecar_flags,
            "threads_before": self.before.threads,
            "threads_after": self.after.threads,
            "threads_written": self.after.threads - self.before.threads,
            "checkpoints_before": self.before.checkpoints,
            "checkpoints_after": self.after.checkpoints,
            "scrapes": len(self.scrapes),
            "scrape_failures": len(self.scrapes) - len(ok),
            "scrape_median_ms": median(ok) * 1000,
            "scrape_p99_ms": percentile(ok, 99) * 1000,
            "series_start": self.start_series,
            "series_end": self.scrapes[-1].series if self.scrapes else 0,
            "series_max": max((s.series for s in self.scrapes), default=0),
            "new_series_first_seen_s": self.new_series,
            "gone_series_first_missed_s": self.gone_series,
            "memory": [_memory_row(m) for m in self.memory],
            "series_by_scrape": [(s.t, s.series) for s in self.scrapes],
            "loadtest": self.loadtest,
            "import_footprint_mb": self.footprint,
            "verdicts": self.verdicts(),
        }

    def verdicts(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.memory:
            end = self.memory[-1].rss_mb
            out["memory"] = {
                "rss_end_mb": end,
                "target_max_mb": RSS_TARGET_MB,
                "outcome": "PASS" if end < RSS_TARGET_MB else "FAIL",
            }
        written = self.after.threads - self.before.threads
        out["series"] = {
            "start": self.start_series,
            "end": self.scrapes[-1].series if self.scrapes else 0,
            "threads_written": written,
            "new_after_settle": sorted(self.late_series),
            "settle_s": self.settle,
            "outcome": "INCONCLUSIVE (no threads written)"
            if written <= 0
            else ("PASS" if not self.late_series else "FAIL"),
        }
        return out


def _memory_row(sample: MemorySample) -> dict[str, Any]:
    return {
        "t": sample.t,
        "rss_mb": sample.rss_mb,
        "peak_mb": sample.peak_mb,
        "inserted": sample.checkpoints_inserted,
    }


def loadtest_argv(args: argparse.Namespace) -> list[str]:
    return [
        *(sys.executable, "-m", "exporter", "loadtest"),
        *("--workflows", str(args.soak_workflows), "--duration", f"{args.soak_seconds:g}s"),
        *("--think-time", args.soak_think_time, "--output", "json"),
    ]


async def measure_soak(url: str, scratch: Path, args: argparse.Namespace) -> SoakReport:
    flags = sidecar_flags(args)
    with ExitStack() as processes:
        ours = processes.enter_context(sidecar_child(url, scratch, flags, "soak-sidecar"))
        async with (
            http_client(args.encoding) as session,
            await AsyncConnection.connect(url, autocommit=True) as stats,
        ):
            await wait_ready(session, ours, "/healthz")
            first = await fetch(session, ours.url + "/metrics")
            known = set(series_keys(first.text))
            report = SoakReport(
                args.soak_seconds,
                args.soak_workflows,
                args.soak_think_time,
                flags,
                before=await count_checkpoints(url),
                after=Counts(0, 0),
                start_series=len(known),
            )
            rss, peak = memory_mb(ours.process.pid)
            report.memory.append(MemorySample(0.0, rss, peak, await checkpoints_inserted(stats)))
            loadtest = processes.enter_context(
                child(
                    "loadtest",
                    loadtest_argv(args),
                    child_environment(POSTGRES_CONNECTION_STRING=url),
                    scratch / "loadtest.log",
                    stdout=scratch / "loadtest.json",
                )
            )
            started = monotonic()
            seen = set(known)
            for tick in range(1, int(args.soak_seconds / SCRAPE_INTERVAL) + 1):
                t = tick * SCRAPE_INTERVAL
                await asyncio.sleep(max(0.0, started + t - monotonic()))
                try:
                    response: Response | None = await fetch(session, ours.url + "/metrics")
                except (aiohttp.ClientError, TimeoutError):
                    response = None
                report.observe(t, response, seen, known)
                if tick % round(RSS_INTERVAL / SCRAPE_INTERVAL) == 0:
                    rss, peak = memory_mb(ours.process.pid)
                    inserted = await checkpoints_inserted(stats)
                    report.memory.append(MemorySample(t, rss, peak, inserted))
                    if not args.json and tick % 60 == 0:
                        written = inserted - report.memory[0].checkpoints_inserted
                        print(
                            f"  soak {t:5.0f} s: RSS {rss:5.1f} MB, "
                            f"{report.scrapes[-1].series} series, {written} checkpoints written",
                            file=sys.stderr,
                        )
            if loadtest.process.poll() is None:
                await asyncio.to_thread(wait_quietly, loadtest.process, LOADTEST_GRACE)
            if loadtest.process.returncode is None:
                raise BenchError(f"the load test did not stop: {loadtest.tail()}")
            report.loadtest = loadtest_summary(scratch / "loadtest.json")
            report.after = await count_checkpoints(url)
    report.footprint = await asyncio.to_thread(import_footprint)
    return report


def wait_quietly(process: subprocess.Popen[bytes], timeout: float) -> None:
    with suppress(subprocess.TimeoutExpired):
        process.wait(timeout)


def loadtest_summary(path: Path) -> dict[str, Any]:
    try:
        report: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    keep = ("workflows_completed", "workflows_failed", "workflows_per_s", "checkpoints_per_s")
    return {key: report.get(key) for key in keep}


def render_soak(report: SoakReport) -> list[str]:
    d = report.as_dict()
    lines = [
        f"2. Memory and series: the sidecar scraped every {SCRAPE_INTERVAL:g} s for "
        f"{report.seconds:g} s while python -m exporter loadtest --workflows "
        f"{report.workflows} --think-time {report.think_time} writes new threads",
        "",
        f"   {'t s':>6}{'RSS MB':>9}{'peak MB':>9}{'series':>8}{'checkpoints written':>21}"
        f"{'scrape median ms':>18}",
    ]
    rows = [m for m in report.memory if m.t % 60 == 0]
    if report.memory and report.memory[-1] not in rows:
        rows.append(report.memory[-1])
    start_inserted = report.memory[0].checkpoints_inserted if report.memory else 0
    previous = 0.0
    for sample in rows:
        window = [s.seconds for s in report.scrapes if previous < s.t <= sample.t and s.seconds]
        series = next(
            (s.series for s in reversed(report.scrapes) if s.t <= sample.t and s.seconds),
            report.start_series,
        )
        median_ms = f"{median(window) * 1000:.2f}" if window else "-"
        lines.append(
            f"   {sample.t:>6.0f}{sample.rss_mb:>9.1f}{sample.peak_mb:>9.1f}{series:>8}"
            f"{sample.checkpoints_inserted - start_inserted:>21}{median_ms:>18}"
        )
        previous = sample.t
    load = report.loadtest
    lines += [
        "",
        f"   threads: {report.before.threads} before, {report.after.threads} after "
        f"({d['threads_written']} written during the soak); checkpoints "
        f"{report.before.checkpoints} -> {report.after.checkpoints}",
        f"   load test: {load.get('workflows_completed', '?')} workflows completed "
        f"({load.get('workflows_per_s') or 0:.1f}/s), {load.get('workflows_failed', '?')} failed",
        f"   scrapes: {d['scrapes']} ({d['scrape_failures']} failed), median "
        f"{d['scrape_median_ms']:.2f} ms, p99 {d['scrape_p99_ms']:.2f} ms under load",
        f"   series: {d['series_start']} at start, {d['series_end']} at the end, "
        f"{d['series_max']} at most",
    ]
    if report.new_series:
        lines.append("   series that appeared after the first scrape (first seen, s):")
        lines += [f"     {t:6.0f}  {key}" for key, t in sorted(report.new_series.items())]
    if report.footprint:
        lines += ["", *render_footprint(report.footprint)]
    if report.gone_series:
        lines.append("   series of the first scrape missing later (first missed, s):")
        lines += [f"     {t:6.0f}  {key}" for key, t in sorted(report.gone_series.items())]
    v = report.verdicts()
    lines.append("")
    if "memory" in v:
        lines.append(
            f"Verdict memory: RSS at the end {v['memory']['rss_end_mb']:.1f} MB, target < "
            f"{RSS_TARGET_MB:g} MB: {v['memory']['outcome']}"
        )
    s = v["series"]
    late = ", ".join(s["new_after_settle"]) or "none"
    lines.append(
        f"Verdict series: {s['start']} -> {s['end']} while {s['threads_written']} threads "
        f"were written; new after {s['settle_s']:g} s: {late}: {s['outcome']}"
    )
    return lines


async def run(args: argparse.Namespace, scratch: Path) -> tuple[str, SoakReport]:
    async with embedded_database(scratch / "pgdata") as url:
        postgres = await server_version(url)
        if not args.json:
            print(f"writing {args.seed_workflows} workflows ...", file=sys.stderr)
        await seed(url, args.seed_workflows)
        if not args.json:
            print(f"soaking for {args.soak_seconds:g} s ...", file=sys.stderr)
        return postgres, await measure_soak(url, scratch, args)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--seed-workflows", type=int, default=200, help="workflows written before the soak (200)"
    )
    parser.add_argument(
        "--soak-seconds", type=float, default=600.0, help="length of the soak (600)"
    )
    parser.add_argument(
        "--soak-workflows", type=int, default=8, help="concurrent load-test workflows (8)"
    )
    parser.add_argument(
        "--soak-think-time", default="20ms", help="load-test think time per node (20ms)"
    )
    add_encoding_option(parser)
    add_sidecar_flags(parser)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return report_main(
        "bench/soak.py",
        "Memory and series over a soak",
        lambda scratch: run(args, scratch),
        render_soak,
        as_json=args.json,
    )


if __name__ == "__main__":
    sys.exit(main())
