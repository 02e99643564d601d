"""Scrape latency of the sidecar next to postgres_exporter and a static floor, and its memory.

Two measurements on one embedded PostgreSQL whose checkpoint tables hold real
checkpoints of the workload graph:

1. ``/metrics`` latency, side by side: this sidecar as its own process
   (``python -m exporter serve``, every setting at its default), Debian's
   ``prometheus-postgres-exporter`` on the same database, and the floor: a
   static aiohttp server in a third process serving the exact bytes of one of
   our responses. One client in this process scrapes them one request at a
   time, round-robin, the order rotating each round, so the noise of a
   shared machine lands on all three alike. Every one of our responses
   carries its collectors' durations and the exporter pool's counters; their
   medians and deltas show where our time goes. Then one scrape is taken
   apart in this process, with the same settings: each step's wall and CPU
   time, and the CPU by package and function under cProfile.
2. Resident memory and series count of the sidecar over a soak: scraped
   every second while a load test in another process writes new threads all
   along; RSS sampled every 10 s.

Verdicts are printed, but the exit status is 0 whatever they say: this is a
measurement, not a test. Every process the script starts is stopped, and its
temporary directory (database included) removed, however it ends.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import dataclasses
import gzip
import json
import os
import pstats
import re
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import (
    AbstractContextManager,
    ExitStack,
    asynccontextmanager,
    contextmanager,
    suppress,
)
from dataclasses import dataclass, field
from pathlib import Path
from time import monotonic, perf_counter, process_time, time
from typing import Any, Final

import aiohttp
from aiohttp import web
from benchlib import (
    ROOT,
    code_under_test,
    describe_code,
    environment,
    median,
    median_interval,
    span,
)
from prometheus_client import CollectorRegistry, generate_latest
from psycopg import AsyncConnection, sql
from psycopg.conninfo import conninfo_to_dict

from exporter import sql as exporter_sql
from exporter.cli import build_parser
from exporter.collectors import activity, migrations, tables, workflows
from exporter.collectors.tables import TablesCollector
from exporter.database import exporter_connect_kwargs
from exporter.embedded import embedded_database
from exporter.exposition import Renderer, exposition
from exporter.factory import build_checkpointer
from exporter.loadtest import percentile
from exporter.log import configure_logging
from exporter.scrape import run_collector
from exporter.settings import DEFAULT_SCHEMA, SPECS, Settings
from exporter.sidecar import Sidecar
from exporter.workload import compile_workflow, initial_state

POSTGRES_EXPORTER: Final = "/usr/bin/prometheus-postgres-exporter"
OURS: Final = "checkpoint-exporter"
THEIRS: Final = "postgres_exporter"
FLOOR: Final = "static floor"
RATIO_TARGET: Final = 0.5  # our median scrape at most half of postgres_exporter's
RSS_TARGET_MB: Final = 80.0
SCHEMA: Final = DEFAULT_SCHEMA  # the load test writes here too
SEED_CONCURRENCY: Final = 8
SCRAPE_INTERVAL: Final = 1.0
RSS_INTERVAL: Final = 10.0
READY_TIMEOUT: Final = 60.0
REQUEST_TIMEOUT: Final = 30.0
# The load test stops on its own after --duration; past this it is stopped.
LOADTEST_GRACE: Final = 120.0
# Below six pairs no two order statistics bracket the median with 95 % confidence.
MIN_PAIRS: Final = 6

COLLECTOR_DURATION = re.compile(
    r'^langgraph_checkpointer_scrape_collector_duration_seconds\{collector="([^"]+)"\} (\S+)$',
    re.MULTILINE,
)
EXPORTER_POOL = re.compile(
    r"^langgraph_checkpointer_pool_(requests_total|requests_queued_total|"
    r'requests_wait_seconds_total)\{pool="exporter"\} (\S+)$',
    re.MULTILINE,
)
PROCESS_CPU = re.compile(r"^process_cpu_seconds_total (\S+)$", re.MULTILINE)
# Variables that would move a child away from the defaults this benchmark promises.
INHERITED_SETTINGS = re.compile(
    r"^(CHECKPOINT_EXPORTER_|POSTGRES_|USE_POSTGRES_SAVER$|DATA_SOURCE_)"
)


class BenchError(RuntimeError):
    """A process the benchmark needs did not start or answer; the message says which."""


def series_keys(text: str) -> list[str]:
    """Each sample line's name and labels, in order (the text format, no timestamps)."""
    keys = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        brace = line.rfind("}")
        keys.append(line[: brace + 1] if brace >= 0 else line.split(" ", 1)[0])
    return keys


# --------------------------------------------------------------------------------------
# Processes and HTTP
# --------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def child_environment(**extra: str) -> dict[str, str]:
    """This process's environment without exporter settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not INHERITED_SETTINGS.match(k)}
    env.update(extra)
    return env


def stop(process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; always reaps the process."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass(slots=True)
class Child:
    """A process the benchmark started, where it writes, and where it serves."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    url: str = ""

    def tail(self, lines: int = 5) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])


@contextmanager
def child(
    name: str,
    argv: Sequence[str],
    env: dict[str, str],
    log: Path,
    *,
    url: str = "",
    stdout: Path | None = None,
) -> Iterator[Child]:
    """Start ``argv`` (serving at ``url``, if it serves); stop it on exit, whatever happens."""
    with ExitStack() as files:
        err = files.enter_context(log.open("wb"))
        out = files.enter_context(stdout.open("wb")) if stdout is not None else err
        process = subprocess.Popen(
            list(argv), env=env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=err
        )
    try:
        yield Child(name, process, log, url)
    finally:
        stop(process)


@dataclass(frozen=True, slots=True)
class Response:
    """One scrape as the client saw it."""

    seconds: float
    status: int
    raw: bytes
    gzipped: bool

    @property
    def body(self) -> bytes:
        return gzip.decompress(self.raw) if self.gzipped else self.raw

    @property
    def text(self) -> str:
        return self.body.decode()


@asynccontextmanager
async def http_client(encoding: str) -> AsyncIterator[aiohttp.ClientSession]:
    """One keep-alive client; bodies arrive as sent, so no decompression is timed."""
    async with aiohttp.ClientSession(
        auto_decompress=False,
        headers={"Accept-Encoding": encoding},
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
    ) as session:
        yield session


async def fetch(session: aiohttp.ClientSession, url: str) -> Response:
    started = perf_counter()
    async with session.get(url) as response:
        raw = await response.read()
    seconds = perf_counter() - started
    gzipped = response.headers.get("Content-Encoding", "") == "gzip"
    return Response(seconds, response.status, raw, gzipped)


async def wait_ready(session: aiohttp.ClientSession, proc: Child, path: str) -> None:
    """Poll ``proc.url + path`` until it answers 200; fail fast if the process exits."""
    deadline = monotonic() + READY_TIMEOUT
    while True:
        code = proc.process.poll()
        if code is not None:
            raise BenchError(f"{proc.name} exited with status {code}: {proc.tail()}")
        try:
            if (await fetch(session, proc.url + path)).status == 200:
                return
        except (aiohttp.ClientError, TimeoutError):
            pass
        if monotonic() > deadline:
            raise BenchError(f"{proc.name} did not answer within {READY_TIMEOUT:g} s")
        await asyncio.sleep(0.1)


def sidecar_child(
    url: str, scratch: Path, flags: Sequence[str], name: str = "sidecar"
) -> AbstractContextManager[Child]:
    """``python -m exporter serve`` on a free port, watching the database at ``url``."""
    port = free_port()
    argv = [sys.executable, "-m", "exporter", "serve", "--web.listen-address", f"127.0.0.1:{port}"]
    env = child_environment(POSTGRES_CONNECTION_STRING=url)
    log = scratch / f"{name}.log"
    return child(OURS, [*argv, *flags], env, log, url=f"http://127.0.0.1:{port}")


def postgres_exporter_dsn(socket_dir: str, port: str) -> str:
    """A lib/pq URL for the embedded server's unix socket (it listens on no TCP port)."""
    return f"postgresql://postgres@:{port}/postgres?host={socket_dir}&sslmode=disable"


def postgres_exporter_version() -> str:
    try:
        done = subprocess.run(
            [POSTGRES_EXPORTER, "--version"], capture_output=True, text=True, check=False
        )
    except OSError:
        return "not installed"
    first = (done.stdout or done.stderr).strip().splitlines()
    return first[0] if first else "unknown"


# --------------------------------------------------------------------------------------
# The database
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Counts:
    threads: int
    checkpoints: int


async def count_checkpoints(url: str) -> Counts:
    """Distinct threads and checkpoint rows, exactly (a full scan; never timed)."""
    query = sql.SQL(
        "SELECT count(DISTINCT thread_id) AS threads, count(*) AS checkpoints FROM {}"
    ).format(sql.Identifier(SCHEMA, "checkpoints"))
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        row = await (await conn.execute(query)).fetchone()
    return Counts(int(row[0]), int(row[1])) if row else Counts(0, 0)


async def checkpoints_inserted(conn: AsyncConnection[Any]) -> int:
    """Rows ever inserted into ``checkpoints``, from the statistics: cheap enough to poll."""
    cursor = await conn.execute(
        "SELECT n_tup_ins FROM pg_stat_user_tables WHERE schemaname = %s AND relname = %s",
        (SCHEMA, "checkpoints"),
    )
    row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def server_version(url: str) -> str:
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        row = await (await conn.execute("SHOW server_version")).fetchone()
    return str(row[0]) if row else "unknown"


async def seed(url: str, workflows: int) -> Counts:
    """Create the tables through the factory and write ``workflows`` workflows, then ANALYZE.

    ANALYZE stands in for autovacuum, which has long run on any real database:
    the catalog estimates the collectors read are then real figures.
    """
    settings = Settings(postgres_connection_string=url, postgres_schema=SCHEMA)
    async with build_checkpointer(settings, registry=CollectorRegistry()) as saver:
        graph = compile_workflow(saver)
        pending = iter(range(workflows))

        async def worker() -> None:
            for index in pending:
                config: Any = {"configurable": {"thread_id": f"seed-{index}-{uuid.uuid4()}"}}
                await graph.ainvoke(initial_state(f"seed task {index}"), config)

        await asyncio.gather(*(worker() for _ in range(SEED_CONCURRENCY)))
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        for table in ("checkpoints", "checkpoint_blobs", "checkpoint_writes"):
            await conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(SCHEMA, table)))
    return await count_checkpoints(url)


# --------------------------------------------------------------------------------------
# 1. Scrape latency
# --------------------------------------------------------------------------------------


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
class Breakdown:
    """What our own responses say about each scrape: collector durations, pool, CPU."""

    collectors: dict[str, list[float]] = field(default_factory=dict)
    first_pool: dict[str, float] = field(default_factory=dict)
    last_pool: dict[str, float] = field(default_factory=dict)
    first_cpu: float | None = None
    last_cpu: float | None = None
    scrapes: int = 0

    def add(self, text: str) -> None:
        for name, value in COLLECTOR_DURATION.findall(text):
            self.collectors.setdefault(name, []).append(float(value))
        pool = {name: float(value) for name, value in EXPORTER_POOL.findall(text)}
        cpu = PROCESS_CPU.search(text)
        if self.scrapes == 0:
            self.first_pool = pool
            self.first_cpu = float(cpu[1]) if cpu else None
        self.last_pool = pool
        self.last_cpu = float(cpu[1]) if cpu else None
        self.scrapes += 1

    def per_scrape(self, name: str) -> float:
        intervals = self.scrapes - 1
        if intervals <= 0 or name not in self.first_pool or name not in self.last_pool:
            return 0.0
        return (self.last_pool[name] - self.first_pool[name]) / intervals

    @property
    def cpu_ms(self) -> float:
        """The sidecar process's CPU per scrape (process_cpu_seconds_total, 10 ms ticks)."""
        if self.first_cpu is None or self.last_cpu is None or self.scrapes < 2:
            return 0.0
        return (self.last_cpu - self.first_cpu) * 1000 / (self.scrapes - 1)

    def as_dict(self) -> dict[str, Any]:
        return {
            "collector_ms": {
                name: {
                    "median": median(values) * 1000,
                    "p90": percentile(values, 90) * 1000,
                    "p99": percentile(values, 99) * 1000,
                }
                for name, values in sorted(self.collectors.items())
            },
            "exporter_pool_per_scrape": {
                "requests": self.per_scrape("requests_total"),
                "queued": self.per_scrape("requests_queued_total"),
                "wait_ms": self.per_scrape("requests_wait_seconds_total") * 1000,
            },
            "sidecar_cpu_ms_per_scrape": self.cpu_ms,
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
        }


def floor_child(body: Path, scratch: Path) -> AbstractContextManager[Child]:
    """This script in floor mode, serving ``body`` on a free port."""
    port = free_port()
    argv = [sys.executable, str(Path(__file__).resolve()), "--serve-floor", str(body)]
    return child(
        FLOOR,
        [*argv, "--port", str(port)],
        child_environment(),
        scratch / "floor.log",
        url=f"http://127.0.0.1:{port}",
    )


def record(target: Target, response: Response) -> None:
    target.wire_bytes = len(response.raw)
    body = response.body
    target.body_bytes = len(body)
    target.series = len(series_keys(body.decode()))


async def measure_latency(
    url: str, scratch: Path, args: argparse.Namespace, progress: bool
) -> LatencyReport:
    params = conninfo_to_dict(url)
    socket_dir, port = str(params["host"]), str(params.get("port") or 5432)
    flags = sidecar_flags(args)
    with ExitStack() as processes:
        ours = processes.enter_context(sidecar_child(url, scratch, flags))
        theirs_port = free_port()
        theirs = processes.enter_context(
            child(
                THEIRS,
                [POSTGRES_EXPORTER, f"--web.listen-address=127.0.0.1:{theirs_port}"],
                child_environment(DATA_SOURCE_NAME=postgres_exporter_dsn(socket_dir, port)),
                scratch / "postgres_exporter.log",
                url=f"http://127.0.0.1:{theirs_port}",
            )
        )
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
                shift = index % len(targets)
                for target in targets[shift:] + targets[:shift]:
                    try:
                        response = await fetch(session, target.url)
                    except (aiohttp.ClientError, TimeoutError):
                        response = None
                    if response is None or response.status != 200:
                        target.failures += 1
                        target.by_round.append(None)
                        continue
                    target.by_round.append(response.seconds)
                    if target.series == 0:
                        record(target, response)
                    if target.name == OURS:
                        breakdown.add(response.text)
                if progress and (index + 1) % 50 == 0:
                    row = "  ".join(f"{t.name} {median(t.seconds) * 1000:.2f} ms" for t in targets)
                    print(f"  round {index + 1}/{args.rounds}: {row}", file=sys.stderr)
    return LatencyReport(
        args.rounds,
        args.warmup,
        args.encoding,
        flags,
        postgres_exporter_version(),
        targets,
        breakdown,
    )


def sidecar_flags(args: argparse.Namespace) -> list[str]:
    """The flags our ``serve`` gets beyond its listen address: none by default."""
    timeout = ["--collector.timeout", args.collector_timeout] if args.collector_timeout else []
    return [*timeout, *args.sidecar_flag]


def sidecar_settings(url: str, args: argparse.Namespace) -> Settings:
    """The settings ``serve`` builds from those flags, parsed by the exporter's own CLI."""
    namespace = build_parser().parse_args(["serve", *sidecar_flags(args)])
    flags = {spec.field: getattr(namespace, spec.field, None) for spec in SPECS}
    flags["listen_address"] = "127.0.0.1:0"
    return Settings.load(environ={"POSTGRES_CONNECTION_STRING": url}, flags=flags)


def serve_floor(body_path: Path, port: int) -> int:
    """The floor: the same bytes every time, no collection, gzip computed once up front."""
    body = body_path.read_bytes()
    compressed = gzip.compress(body)
    content_type = "text/plain; version=0.0.4; charset=utf-8"

    async def metrics(request: web.Request) -> web.Response:
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            headers = {"Content-Type": content_type, "Content-Encoding": "gzip"}
            return web.Response(body=compressed, headers=headers)
        return web.Response(body=body, headers={"Content-Type": content_type})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)
    return 0


# --------------------------------------------------------------------------------------
# 1b. One scrape taken apart, in process
# --------------------------------------------------------------------------------------

STEP_LEADER: Final = "leader check, also the ping (own session)"
STEP_PING: Final = "ping (exporter pool)"
STEP_SCRAPE: Final = "Sidecar.scrape(): all of it"
STEP_RENDER: Final = "render (what /metrics does: unchanged families reused)"
STEP_RENDER_WHOLE: Final = "render everything anew (generate_latest)"
STEP_TOTAL: Final = "scrape + render"
STEP_HISTOGRAMS: Final = "tables: histograms from the cached sample"
PROFILED_SCRAPES: Final = 30
PROBE_REPETITIONS: Final = 100
EXPLAIN: Final = b"EXPLAIN (ANALYZE, TIMING OFF, SUMMARY ON) "
PLAN_TIME = re.compile(r"^(Planning|Execution) Time: ([0-9.]+) ms$")


def statement_probes() -> list[tuple[str, bytes]]:
    """Every statement a scrape runs here (no pg_stat_statements), by collector, as it runs it."""
    defaults = Settings()
    return [
        ("leader check: SERVER_VERSION", exporter_sql.SERVER_VERSION.encode()),
        ("activity: ACTIVITY", activity.ACTIVITY.encode()),
        ("migrations: TABLES_EXIST_AND_VERSION", migrations.tables_and_version_query(SCHEMA)),
        ("tables: CATALOG", tables.catalog_query(SCHEMA)),
        (
            "workflows: SUMMARY",
            workflows.summary_query(SCHEMA, defaults.stuck_after, defaults.prune_threshold),
        ),
    ]


TOP_FUNCTIONS: Final = 12


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


async def profile_scrape(url: str, args: argparse.Namespace) -> ProfileReport:
    """Time each part of a scrape in this process, with the settings ``serve`` would use.

    Each collector also runs alone, on an idle pool: its own cost, without the
    wait for one of the pool's connections that it pays in a real scrape.
    """
    settings = sidecar_settings(url, args)
    report = ProfileReport(args.profile_scrapes, pool_size=settings.exporter_pool_size)

    def step(name: str) -> Step:
        return report.steps.setdefault(name, Step())

    async with Sidecar(settings) as sidecar:
        report.collectors = [c.name for c in sidecar.collectors]
        renderer = Renderer(sidecar.registry)
        for _ in range(args.warmup):
            renderer.render(await sidecar.scrape())
        for _ in range(args.profile_scrapes):
            if sidecar.leader is not None:
                wall, cpu = perf_counter(), process_time()
                await sidecar.leader.check()
                step(STEP_LEADER).add(perf_counter() - wall, process_time() - cpu)
            else:  # leader election off: the scrape pings through the pool
                wall, cpu = perf_counter(), process_time()
                await sidecar.pool_ping()
                step(STEP_PING).add(perf_counter() - wall, process_time() - cpu)
            for collector in sidecar.collectors:
                ctx = sidecar.context()
                wall, cpu = perf_counter(), process_time()
                await run_collector(collector, ctx, settings.collector_timeout)
                step(f"{collector.name} alone").add(perf_counter() - wall, process_time() - cpu)
            wall, cpu = perf_counter(), process_time()
            families = await sidecar.scrape()
            scraped = (perf_counter() - wall, process_time() - cpu)
            step(STEP_SCRAPE).add(*scraped)
            wall, cpu = perf_counter(), process_time()
            generate_latest(exposition(sidecar.registry, families))
            step(STEP_RENDER_WHOLE).add(perf_counter() - wall, process_time() - cpu)
            wall, cpu = perf_counter(), process_time()
            renderer.render(families)
            rendered = (perf_counter() - wall, process_time() - cpu)
            step(STEP_RENDER).add(*rendered)
            step(STEP_TOTAL).add(scraped[0] + rendered[0], scraped[1] + rendered[1])
        sampler = next((c for c in sidecar.collectors if isinstance(c, TablesCollector)), None)
        sample = sampler.sample if sampler is not None else None
        if sample is not None:
            report.sample_rows = {
                "checkpoints": len(sample.checkpoint_bytes),
                "checkpoint_blobs": len(sample.blob_bytes),
            }
            for _ in range(args.profile_scrapes):
                wall, cpu = perf_counter(), process_time()
                tables.sample_families(sample, settings.tables_interval, monotonic(), time())
                step(STEP_HISTOGRAMS).add(perf_counter() - wall, process_time() - cpu)
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
    probes = statement_probes()
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


# --------------------------------------------------------------------------------------
# 2. Memory and series over a soak
# --------------------------------------------------------------------------------------


def memory_mb(pid: int) -> tuple[float, float]:
    """Resident set size now and at its peak (VmRSS, VmHWM), in MB of 2**20 bytes."""
    fields: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) / 1024
    return fields.get("VmRSS", 0.0), fields.get("VmHWM", 0.0)


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
            "memory": [
                {
                    "t": m.t,
                    "rss_mb": m.rss_mb,
                    "peak_mb": m.peak_mb,
                    "inserted": m.checkpoints_inserted,
                }
                for m in self.memory
            ],
            "series_by_scrape": [(s.t, s.series) for s in self.scrapes],
            "loadtest": self.loadtest,
            "import_footprint_mb": self.footprint,
        }


# What `python -m exporter serve` imports, in the order it needs them; each step's RSS
# is measured in one fresh interpreter after importing it and everything above.
IMPORT_STEPS: Final = (
    ("asyncio", "asyncio"),
    ("prometheus_client, structlog", "prometheus_client,structlog"),
    ("aiohttp.web", "aiohttp.web"),
    ("psycopg, psycopg_pool", "psycopg,psycopg_pool"),
    ("langgraph.checkpoint.postgres.aio", "langgraph.checkpoint.postgres.aio"),
    ("exporter.server (the sidecar's code)", "exporter.server"),
    ("exporter.cli (adds loadtest: langgraph.graph)", "exporter.cli"),
)
FOOTPRINT_SCRIPT: Final = """
import json, sys
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
out = [["bare interpreter", rss(), len(sys.modules)]]
for label, modules in json.loads(sys.argv[1]):
    for module in modules.split(","):
        __import__(module)
    out.append([label, rss(), len(sys.modules)])
print(json.dumps(out))
"""


def import_footprint() -> list[tuple[str, float, int]]:
    """RSS (MB) and module count after each import step, in one fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", FOOTPRINT_SCRIPT, json.dumps(IMPORT_STEPS)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env=child_environment(),
    )
    if done.returncode != 0:
        return []
    return [(str(label), float(mb), int(n)) for label, mb, n in json.loads(done.stdout)]


async def measure_soak(
    url: str, scratch: Path, args: argparse.Namespace, progress: bool
) -> SoakReport:
    flags = sidecar_flags(args)
    loadtest_argv = [
        sys.executable,
        "-m",
        "exporter",
        "loadtest",
        "--workflows",
        str(args.soak_workflows),
        "--duration",
        f"{args.soak_seconds:g}s",
        "--think-time",
        args.soak_think_time,
        "--output",
        "json",
    ]
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
                    loadtest_argv,
                    child_environment(POSTGRES_CONNECTION_STRING=url),
                    scratch / "loadtest.log",
                    stdout=scratch / "loadtest.json",
                )
            )
            started = monotonic()
            tick = 0
            seen = set(known)
            while True:
                tick += 1
                t = tick * SCRAPE_INTERVAL
                if t > args.soak_seconds:
                    break
                await asyncio.sleep(max(0.0, started + t - monotonic()))
                try:
                    response: Response | None = await fetch(session, ours.url + "/metrics")
                except (aiohttp.ClientError, TimeoutError):
                    response = None
                if response is None or response.status != 200:
                    report.scrapes.append(SoakScrape(t, None, 0))
                else:
                    keys = set(series_keys(response.text))
                    for key in keys - seen:
                        report.new_series[key] = t
                    for key in (seen - keys) & known:
                        report.gone_series.setdefault(key, t)
                    seen |= keys
                    report.scrapes.append(SoakScrape(t, response.seconds, len(keys)))
                if tick % round(RSS_INTERVAL / SCRAPE_INTERVAL) == 0:
                    rss, peak = memory_mb(ours.process.pid)
                    inserted = await checkpoints_inserted(stats)
                    report.memory.append(MemorySample(t, rss, peak, inserted))
                    if progress and tick % 60 == 0:
                        print(
                            f"  soak {t:5.0f} s: RSS {rss:5.1f} MB, "
                            f"{report.scrapes[-1].series} series, "
                            f"{inserted - report.memory[0].checkpoints_inserted} checkpoints "
                            "written",
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


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------


def outcome(low: float, high: float, target: float, pairs: int) -> str:
    """PASS when the whole interval is within the target, FAIL when none of it is."""
    if pairs < MIN_PAIRS:
        return "INCONCLUSIVE (too few rounds)"
    if high <= target:
        return "PASS"
    if low > target:
        return "FAIL"
    return "INCONCLUSIVE"


def verdicts(latency: LatencyReport | None, soak: SoakReport | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if latency is not None:
        pairs = latency.paired(OURS, THEIRS)
        low, high = median_interval(pairs)
        out["latency"] = {
            "ratio_of_medians": latency.ratio(OURS, THEIRS),
            "paired_median": median(pairs),
            "interval": (low, high),
            "target_max_ratio": RATIO_TARGET,
            "outcome": outcome(low, high, RATIO_TARGET, len(pairs)),
        }
    if soak is not None and soak.memory:
        end = soak.memory[-1].rss_mb
        out["memory"] = {
            "rss_end_mb": end,
            "target_max_mb": RSS_TARGET_MB,
            "outcome": "PASS" if end < RSS_TARGET_MB else "FAIL",
        }
        written = soak.after.threads - soak.before.threads
        late = soak.late_series
        out["series"] = {
            "start": soak.start_series,
            "end": soak.scrapes[-1].series if soak.scrapes else 0,
            "threads_written": written,
            "new_after_settle": sorted(late),
            "settle_s": soak.settle,
            "outcome": "INCONCLUSIVE (no threads written)"
            if written <= 0
            else ("PASS" if not late else "FAIL"),
        }
    return out


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
            f"{SCHEMA} (written through build_checkpointer, then ANALYZE)"
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
    b = report.breakdown.as_dict()
    pool = b["exporter_pool_per_scrape"]
    lines += [
        "",
        "   Where our time goes, from our own responses (langgraph_checkpointer_scrape_"
        "collector_duration_seconds):",
        "",
        f"   {'collector':<14}{'median ms':>10}{'p90 ms':>9}{'p99 ms':>9}",
    ]
    for name, ms in b["collector_ms"].items():
        lines.append(f"   {name:<14}{ms['median']:>10.2f}{ms['p90']:>9.2f}{ms['p99']:>9.2f}")
    lines += [
        "",
        f"   exporter pool per scrape: {pool['requests']:.2f} connection requests, "
        f"{pool['queued']:.2f} queued, {pool['wait_ms']:.2f} ms waiting in total",
        f"   sidecar process CPU per scrape: {b['sidecar_cpu_ms_per_scrape']:.2f} ms "
        "(process_cpu_seconds_total)",
    ]
    return lines


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
        lines += [
            "",
            "   RSS of a fresh interpreter after each import `python -m exporter serve` needs:",
        ]
        lines += [f"     {mb:6.1f} MB {n:>6} modules  {label}" for label, mb, n in report.footprint]
    if report.gone_series:
        lines.append("   series of the first scrape missing later (first missed, s):")
        lines += [f"     {t:6.0f}  {key}" for key, t in sorted(report.gone_series.items())]
    return lines


def render_profile(report: ProfileReport, latency: LatencyReport | None) -> list[str]:
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
    if latency is not None and STEP_TOTAL in steps:
        ours = median(latency.target(OURS).seconds) * 1000
        floor = median(latency.target(FLOOR).seconds) * 1000
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


def render(env: dict[str, Any], results: Results, verdict: dict[str, Any]) -> str:
    code = env["code"]
    lines = [
        f"Scrape latency and memory, {env['date']}, Python {env['python']}, {env['cpus']} CPUs",
        f"{describe_code(code)}; PostgreSQL {results.postgres} (embedded)",
        "",
    ]
    if results.latency is not None:
        lines += [*render_latency(results.latency, results.seeded), ""]
    if results.profile is not None:
        lines += [*render_profile(results.profile, results.latency), ""]
    if results.soak is not None:
        lines += [*render_soak(results.soak), ""]
    if "latency" in verdict:
        v = verdict["latency"]
        lines.append(
            f"Verdict latency: ours/{THEIRS} median {v['ratio_of_medians']:.3f} (median of "
            f"per-round ratios {v['paired_median']:.3f}, ~95 % interval "
            f"{span(v['interval'], '.3f')}), target <= {v['target_max_ratio']:g}: {v['outcome']}"
        )
    if "memory" in verdict:
        v = verdict["memory"]
        lines.append(
            f"Verdict memory: RSS at the end {v['rss_end_mb']:.1f} MB, target < "
            f"{v['target_max_mb']:g} MB: {v['outcome']}"
        )
    if "series" in verdict:
        v = verdict["series"]
        late = ", ".join(v["new_after_settle"]) or "none"
        lines.append(
            f"Verdict series: {v['start']} -> {v['end']} while {v['threads_written']} threads "
            f"were written; new after {v['settle_s']:g} s: {late}: {v['outcome']}"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------


@dataclass(slots=True)
class Results:
    seeded: Counts | None = None
    postgres: str = "unknown"
    latency: LatencyReport | None = None
    profile: ProfileReport | None = None
    soak: SoakReport | None = None


async def run(args: argparse.Namespace, scratch: Path, progress: bool) -> Results:
    # SIGTERM cancels the run like Ctrl-C does, so every finally below still runs.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    results = Results()
    async with embedded_database(scratch / "pgdata") as url:
        results.postgres = await server_version(url)
        if progress:
            print(f"writing {args.seed_workflows} workflows ...", file=sys.stderr)
        results.seeded = await seed(url, args.seed_workflows)
        if not args.skip_latency:
            if progress:
                print("measuring /metrics latency side by side ...", file=sys.stderr)
            results.latency = await measure_latency(url, scratch, args, progress)
            if progress:
                print("taking one scrape apart in process ...", file=sys.stderr)
            results.profile = await profile_scrape(url, args)
        if not args.skip_soak:
            if progress:
                print(f"soaking for {args.soak_seconds:g} s ...", file=sys.stderr)
            results.soak = await measure_soak(url, scratch, args, progress)
    return results


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=300, help="scrapes per target (300)")
    parser.add_argument("--warmup", type=int, default=20, help="warm-up scrapes per target (20)")
    parser.add_argument(
        "--seed-workflows", type=int, default=200, help="workflows written before measuring (200)"
    )
    parser.add_argument(
        "--encoding",
        choices=("identity", "gzip"),
        default="identity",
        help="Accept-Encoding of every scrape (identity)",
    )
    parser.add_argument(
        "--collector-timeout",
        default=None,
        metavar="DURATION",
        help="our --collector.timeout (default: the exporter's own default)",
    )
    parser.add_argument(
        "--profile-scrapes",
        type=int,
        default=100,
        help="in-process scrapes taken apart after the comparison (100)",
    )
    parser.add_argument(
        "--sidecar-flag",
        action="append",
        default=[],
        metavar="FLAG",
        help="one more flag for our serve, e.g. --sidecar-flag=--exporter.pool-size=5 "
        "(repeatable; default: none)",
    )
    parser.add_argument("--skip-latency", action="store_true", help="only the soak")
    parser.add_argument("--skip-soak", action="store_true", help="only the latency comparison")
    parser.add_argument(
        "--soak-seconds", type=float, default=600.0, help="length of the soak (600)"
    )
    parser.add_argument(
        "--soak-workflows", type=int, default=8, help="concurrent load-test workflows (8)"
    )
    parser.add_argument(
        "--soak-think-time", default="20ms", help="load-test think time per node (20ms)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    # The floor server runs as this same script in a process of its own.
    parser.add_argument("--serve-floor", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_floor is not None:
        return serve_floor(args.serve_floor, args.port)
    configure_logging("warning", stream=sys.stderr)
    env = environment(code_under_test("exporter/", (ROOT / "exporter").rglob("*.py")))
    progress = not args.json
    with tempfile.TemporaryDirectory(prefix="bench-scrape-") as scratch:
        try:
            results = asyncio.run(run(args, Path(scratch), progress))
        except BenchError as exc:
            print(f"bench/scrape.py: error: {exc}", file=sys.stderr)
            return 1
        except (asyncio.CancelledError, KeyboardInterrupt):
            print(
                "bench/scrape.py: interrupted; every process it started is stopped", file=sys.stderr
            )
            return 130
    verdict = verdicts(results.latency, results.soak)
    if args.json:
        report = {
            "environment": env,
            "postgres": results.postgres,
            "seeded": dataclasses.asdict(results.seeded) if results.seeded else None,
            "latency": results.latency.as_dict() if results.latency else None,
            "profile": results.profile.as_dict() if results.profile else None,
            "soak": results.soak.as_dict() if results.soak else None,
            "verdicts": verdict,
        }
        print(json.dumps(report, indent=2))
    else:
        print(render(env, results, verdict))
    return 0


if __name__ == "__main__":
    sys.exit(main())
