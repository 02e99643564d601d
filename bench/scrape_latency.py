"""Scrape latency of the sidecar over HTTP, side by side with postgres_exporter and a static floor.

On one embedded PostgreSQL whose checkpoint tables hold real checkpoints of
the workload graph: this sidecar as its own process (``python -m exporter
serve``, every setting at its default), Debian's ``prometheus-postgres-exporter``
on the same database, and the floor: a static aiohttp server in a third
process serving the exact bytes of one of our responses. One client in this
process scrapes them one request at a time, round-robin, the order rotating
each round, so the noise of a shared machine lands on all three alike. Every
one of our responses carries its collectors' durations and the exporter
pool's counters; their medians and deltas show where our time goes.
``--profile`` then takes one scrape apart in this process, with the same
settings (``bench/scrape_profile.py``), and sets it against the HTTP figures.

The verdict is printed, but the exit status is 0 whatever it says: this is a
measurement, not a test. Every process the script starts is stopped, and its
temporary directory (database included) removed, however it ends.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from collections.abc import Sequence
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp
from benchlib import (
    ROOT,
    BenchError,
    Counts,
    code_under_test,
    describe_code,
    environment,
    median,
    median_interval,
    outcome,
    run_main,
    seed,
    server_version,
    span,
)
from children import (
    OURS,
    POSTGRES_EXPORTER,
    THEIRS,
    Child,
    Response,
    add_encoding_option,
    add_sidecar_flags,
    child,
    child_environment,
    fetch,
    free_port,
    http_client,
    postgres_exporter_child,
    postgres_exporter_version,
    series_keys,
    sidecar_child,
    sidecar_flags,
    sidecar_settings,
    wait_ready,
)
from responses import Breakdown
from scrape_profile import ProfileReport, add_profile_options, profile_scrape, render_profile

from exporter.embedded import embedded_database
from exporter.loadtest import percentile
from exporter.log import configure_logging
from exporter.settings import DEFAULT_SCHEMA

FLOOR: Final = "static floor"
FLOOR_SCRIPT: Final = Path(__file__).resolve().with_name("floor.py")
RATIO_TARGET: Final = 0.5  # our median scrape at most half of postgres_exporter's


@dataclass(slots=True)
class Target:
    """One server being scraped, and every scrape it answered."""

    name: str
    url: str
    by_round: list[float | None] = field(default_factory=list)
    failures: int = 0
    wire_bytes: int = 0
    body_bytes: int = 0
    series: int = 0

    @property
    def seconds(self) -> list[float]:
        return [s for s in self.by_round if s is not None]

    def ms(self, q: float) -> float:
        return percentile(self.seconds, q) * 1000

    def record(self, response: Response) -> None:
        self.wire_bytes = len(response.raw)
        body = response.body
        self.body_bytes = len(body)
        self.series = len(series_keys(body.decode()))

    def as_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "scrapes": len(self.seconds),
            "failures": self.failures,
            "median_ms": median(self.seconds) * 1000,
            "p90_ms": self.ms(90),
            "p99_ms": self.ms(99),
            "max_ms": max(self.seconds, default=0.0) * 1000,
            "wire_bytes": self.wire_bytes,
            "body_bytes": self.body_bytes,
            "series": self.series,
        }


@dataclass(slots=True)
class LatencyReport:
    rounds: int
    warmup: int
    encoding: str
    sidecar_flags: list[str]
    postgres_exporter: str
    targets: list[Target]
    breakdown: Breakdown

    def target(self, name: str) -> Target:
        return next(t for t in self.targets if t.name == name)

    def paired(self, numerator: str, denominator: str) -> list[float]:
        """Per round: one target's scrape over another's, taken moments apart."""
        top, bottom = self.target(numerator).by_round, self.target(denominator).by_round
        return [a / b for a, b in zip(top, bottom, strict=True) if a is not None and b]

    def ratio(self, numerator: str, denominator: str) -> float:
        bottom = median(self.target(denominator).seconds)
        return median(self.target(numerator).seconds) / bottom if bottom else 0.0

    def verdict(self) -> dict[str, Any]:
        pairs = self.paired(OURS, THEIRS)
        low, high = median_interval(pairs)
        return {
            "ratio_of_medians": self.ratio(OURS, THEIRS),
            "paired_median": median(pairs),
            "interval": (low, high),
            "target_max_ratio": RATIO_TARGET,
            "outcome": outcome(low, high, RATIO_TARGET, len(pairs)),
        }

    def as_dict(self) -> dict[str, Any]:
        ratios = {}
        for other in (THEIRS, FLOOR):
            pairs = self.paired(OURS, other)
            ratios[f"ours/{other}"] = {
                "ratio_of_medians": self.ratio(OURS, other),
                "paired_median": median(pairs),
                "paired_interval": median_interval(pairs),
            }
        return {
            "rounds": self.rounds,
            "warmup_per_target": self.warmup,
            "accept_encoding": self.encoding,
            "sidecar_flags": self.sidecar_flags,
            "postgres_exporter": self.postgres_exporter,
            "targets": {t.name: t.as_dict() for t in self.targets},
            "ratios": ratios,
            "breakdown": self.breakdown.as_dict(),
            "verdict": self.verdict(),
        }


def floor_child(body: Path, scratch: Path) -> AbstractContextManager[Child]:
    """bench/floor.py serving ``body`` on a free port."""
    port = free_port()
    argv = [sys.executable, str(FLOOR_SCRIPT), str(body), "--port", str(port)]
    return child(
        FLOOR, argv, child_environment(), scratch / "floor.log", url=f"http://127.0.0.1:{port}"
    )


async def scrape_round(
    session: aiohttp.ClientSession, targets: list[Target], shift: int, breakdown: Breakdown
) -> None:
    """One scrape of every target, starting at ``shift``: a failure counts, and is no figure."""
    for target in targets[shift:] + targets[:shift]:
        try:
            response: Response | None = await fetch(session, target.url)
        except (aiohttp.ClientError, TimeoutError):
            response = None
        if response is None or response.status != 200:
            target.failures += 1
            target.by_round.append(None)
            continue
        target.by_round.append(response.seconds)
        if target.series == 0:
            target.record(response)
        if target.name == OURS:
            breakdown.add(response.text)


async def measure_latency(url: str, scratch: Path, args: argparse.Namespace) -> LatencyReport:
    flags = sidecar_flags(args)
    with ExitStack() as processes:
        ours = processes.enter_context(sidecar_child(url, scratch, flags))
        theirs = processes.enter_context(postgres_exporter_child(url, scratch))
        async with http_client(args.encoding) as session:
            await wait_ready(session, ours, "/healthz")
            await wait_ready(session, theirs, "/")
            check = await fetch(session, theirs.url + "/metrics")
            if "pg_up 1" not in check.text.splitlines():
                raise BenchError(f"{THEIRS} did not reach the database: {theirs.tail()}")
            # Our first scrape draws the tables collector's cached sample; the floor
            # serves a steady-state response.
            await fetch(session, ours.url + "/metrics")
            sample = await fetch(session, ours.url + "/metrics")
            body = scratch / "floor.prom"
            body.write_bytes(sample.body)
            floor = processes.enter_context(floor_child(body, scratch))
            await wait_ready(session, floor, "/metrics")

            targets = [Target(p.name, p.url + "/metrics") for p in (ours, theirs, floor)]
            for target in targets:
                for _ in range(args.warmup):
                    await fetch(session, target.url)
            breakdown = Breakdown()
            for index in range(args.rounds):
                await scrape_round(session, targets, index % len(targets), breakdown)
                if not args.json and (index + 1) % 50 == 0:
                    row = "  ".join(f"{t.name} {median(t.seconds) * 1000:.2f} ms" for t in targets)
                    print(f"  round {index + 1}/{args.rounds}: {row}", file=sys.stderr)
    version = postgres_exporter_version()
    return LatencyReport(
        args.rounds, args.warmup, args.encoding, flags, version, targets, breakdown
    )


def render_latency(report: LatencyReport, seeded: Counts | None) -> list[str]:
    lines = [
        "1. /metrics latency, side by side on one database, one request at a time, "
        f"{report.rounds} rounds round-robin",
        f"   (order rotating each round; {report.warmup} warm-up scrapes per target first; "
        f"Accept-Encoding: {report.encoding})",
        f"   {OURS}: python -m exporter serve "
        f"{' '.join(report.sidecar_flags) or '(every setting at its default)'}",
        f"   {THEIRS}: {POSTGRES_EXPORTER} "
        f"({report.postgres_exporter.removeprefix('postgres_exporter, ')}), default flags",
        f"   {FLOOR}: aiohttp serving the bytes of one of our responses",
    ]
    if seeded is not None:
        lines.append(
            f"   database: {seeded.threads} threads, {seeded.checkpoints} checkpoints in "
            f"{DEFAULT_SCHEMA} (written through build_checkpointer, then ANALYZE)"
        )
    lines += [
        "",
        f"   {'target':<22}{'median ms':>10}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}"
        f"{'bytes':>9}{'series':>8}{'failed':>8}",
    ]
    for target in report.targets:
        d = target.as_dict()
        lines.append(
            f"   {target.name:<22}{d['median_ms']:>10.2f}{d['p90_ms']:>9.2f}{d['p99_ms']:>9.2f}"
            f"{d['max_ms']:>9.2f}{d['wire_bytes']:>9}{d['series']:>8}{d['failures']:>8}"
        )
    lines.append("")
    for other in (THEIRS, FLOOR):
        pairs = report.paired(OURS, other)
        lines.append(
            f"   ours/{other:<18} ratio of medians {report.ratio(OURS, other):6.3f}; median of "
            f"per-round ratios {median(pairs):6.3f}, ~95 % interval "
            f"{span(median_interval(pairs), '.3f')}"
        )
    return [*lines, "", *report.breakdown.render()]


def verdict_line(report: LatencyReport) -> str:
    v = report.verdict()
    return (
        f"Verdict latency: ours/{THEIRS} median {v['ratio_of_medians']:.3f} (median of "
        f"per-round ratios {v['paired_median']:.3f}, ~95 % interval "
        f"{span(v['interval'], '.3f')}), target <= {v['target_max_ratio']:g}: {v['outcome']}"
    )


@dataclass(slots=True)
class Results:
    postgres: str
    seeded: Counts
    latency: LatencyReport
    profile: ProfileReport | None = None


async def run(args: argparse.Namespace, scratch: Path) -> Results:
    async with embedded_database(scratch / "pgdata") as url:
        postgres = await server_version(url)
        progress = not args.json
        if progress:
            print(f"writing {args.seed_workflows} workflows ...", file=sys.stderr)
        seeded = await seed(url, args.seed_workflows)
        if progress:
            print("measuring /metrics latency side by side ...", file=sys.stderr)
        results = Results(postgres, seeded, await measure_latency(url, scratch, args))
        if args.profile:
            if progress:
                print("taking one scrape apart in process ...", file=sys.stderr)
            settings = sidecar_settings(url, args)
            results.profile = await profile_scrape(url, settings, args.profile_scrapes, args.warmup)
    return results


def render(env: dict[str, Any], results: Results) -> str:
    lines = [
        f"Scrape latency, {env['date']}, Python {env['python']}, {env['cpus']} CPUs",
        f"{describe_code(env['code'])}; PostgreSQL {results.postgres} (embedded)",
        "",
        *render_latency(results.latency, results.seeded),
        "",
    ]
    if results.profile is not None:
        ours = median(results.latency.target(OURS).seconds) * 1000
        floor = median(results.latency.target(FLOOR).seconds) * 1000
        lines += [*render_profile(results.profile, (ours, floor)), ""]
    lines.append(verdict_line(results.latency))
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=300, help="scrapes per target (300)")
    parser.add_argument("--warmup", type=int, default=20, help="warm-up scrapes per target (20)")
    parser.add_argument(
        "--seed-workflows", type=int, default=200, help="workflows written before measuring (200)"
    )
    add_encoding_option(parser)
    add_sidecar_flags(parser)
    parser.add_argument(
        "--profile",
        action="store_true",
        help="then take one scrape apart in process, as bench/scrape_profile.py does",
    )
    add_profile_options(parser)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging("warning", stream=sys.stderr)
    env = environment(code_under_test("exporter/", (ROOT / "exporter").rglob("*.py")))
    with tempfile.TemporaryDirectory(prefix="bench-scrape-latency-") as scratch:
        results = run_main(run(args, Path(scratch)), "bench/scrape_latency.py")
    if isinstance(results, int):
        return results
    if args.json:
        report = {
            "environment": env,
            "postgres": results.postgres,
            "seeded": dataclasses.asdict(results.seeded),
            "latency": results.latency.as_dict(),
            "profile": results.profile.as_dict() if results.profile else None,
        }
        print(json.dumps(report, indent=2))
    else:
        print(render(env, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
