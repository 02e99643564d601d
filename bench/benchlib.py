"""What every benchmark script shares: robust summaries, which code a run measured, the
processes it starts, the HTTP client that scrapes them, and the database they watch."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import uuid
from collections.abc import (
    AsyncIterator,
    Callable,
    Coroutine,
    Iterable,
    Mapping,
    Sequence,
)
from contextlib import (
    AsyncExitStack,
    asynccontextmanager,
)
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from psycopg import AsyncConnection, sql
from psycopg_pool import AsyncConnectionPool

from exporter.collectors.base import Collector, ScrapeContext
from exporter.database import checkpointer_connect_kwargs, open_checkpointer_pool
from exporter.embedded import embedded_database
from exporter.factory import build_checkpointer, prepare_schema
from exporter.log import configure_logging
from exporter.scrape import Outcome, gather_outcomes, outcome_families
from exporter.settings import DEFAULT_SCHEMA, Settings
from exporter.workload import compile_workflow, initial_state

ROOT: Final = Path(__file__).resolve().parents[1]
# Below six pairs no two order statistics bracket the median with 95 % confidence.
MIN_PAIRS: Final = 6
SEED_CONCURRENCY: Final = 8
CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
# Variables that would move a child away from the defaults a benchmark promises.

T = TypeVar("T")


class BenchError(RuntimeError):
    """A process the benchmark needs did not start or answer; the message says which."""


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    """The ``--data-dir`` option every benchmark on the embedded PostgreSQL takes."""
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="embedded PostgreSQL data directory (default: a temporary one)",
    )


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


def median_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Distribution-free interval for the median, from order statistics.

    The true median lies between the k-th smallest and the k-th largest of n
    values with probability 1 - 2 P(Binomial(n, 1/2) < k); the narrowest such
    pair that still reaches ``confidence`` is returned (min and max for n = 6;
    below 6 values no pair reaches 95 %, and min and max are all there is).
    """
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        return (0.0, 0.0)

    def reaches(k: int) -> bool:
        return 2 * sum(math.comb(n, i) for i in range(k)) / (1 << n) <= 1 - confidence

    k = 1
    while k + 1 <= (n + 1) // 2 and reaches(k + 1):
        k += 1
    return (ordered[k - 1], ordered[n - k])


def span(interval: tuple[float, float], fmt: str) -> str:
    return f"[{interval[0]:{fmt}} .. {interval[1]:{fmt}}]"


def outcome(low: float, high: float, target: float, pairs: int) -> str:
    """PASS when the whole interval is within ``target``, FAIL when none of it is."""
    if pairs < MIN_PAIRS:
        return "INCONCLUSIVE (too few rounds)"
    if high <= target:
        return "PASS"
    if low > target:
        return "FAIL"
    return "INCONCLUSIVE"


def verdict_line(name: str, verdict: Mapping[str, Any], target: float) -> str:
    """The closing line of a large/small comparison: both ratios, the interval, the outcome."""
    return (
        f"Verdict {name}: large/small {verdict['ratio_of_medians']:.3f} (ratio of "
        f"medians; median of pairs {verdict['paired_ratio_median']:.3f}, ~95 % interval "
        f"{span(verdict['interval'], '.3f')}), target <= {target:g}: {verdict['outcome']}"
    )


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, check=False
        )
    except OSError:
        return None
    return done.stdout.rstrip() if done.returncode == 0 else None


def code_under_test(label: str, sources: Iterable[Path], root: Path = ROOT) -> dict[str, Any]:
    """Which code a run measured: ``label``, a hash of ``sources``, the state of the checkout
    at ``root`` (this one, or a worktree of another commit)."""
    digest = hashlib.sha256()
    for path in sorted(sources):
        digest.update(path.resolve().relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    modified = _git(root, "status", "--porcelain", "--", "exporter")
    return {
        "measured": label,
        "sha256": digest.hexdigest()[:12],
        "commit": _git(root, "rev-parse", "--short", "HEAD"),
        "modified": [line[3:] for line in modified.splitlines()] if modified else [],
    }


def describe_code(code: dict[str, Any]) -> str:
    """One line for a report: what was measured, at which commit, clean or not."""
    state = "clean" if not code["modified"] else "modified: " + ", ".join(code["modified"])
    return (
        f"measured {code['measured']} (sha256 {code['sha256']}), commit {code['commit']}, {state}"
    )


def environment(code: dict[str, Any] | None = None) -> dict[str, Any]:
    """When and where a run took place, and (``code``) what it measured."""
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        **({"code": code} if code is not None else {}),
    }


async def fresh_schema(url: str, schema: str) -> Settings:
    """Drop ``schema`` and make it again through the factory; the settings that name it."""
    settings = Settings(postgres_connection_string=url, postgres_schema=schema)
    kwargs = checkpointer_connect_kwargs(url, settings)
    async with await AsyncConnection.connect(url, **kwargs) as conn:
        await conn.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
        )
    await prepare_schema(url, settings)
    return settings


@asynccontextmanager
async def paired_pools(
    data_dir: Path, schema: str
) -> AsyncIterator[tuple[str, Settings, AsyncConnectionPool[Any], AsyncConnectionPool[Any]]]:
    """An embedded PostgreSQL with ``schema`` made afresh, and two checkpointer pools on it.

    One pool per side of a side-by-side comparison, so neither side queues behind the other.
    """
    async with embedded_database(data_dir) as url:
        settings = await fresh_schema(url, schema)
        async with AsyncExitStack() as stack:
            pools = []
            for _ in range(2):
                pool = await open_checkpointer_pool(url, settings)
                stack.push_async_callback(pool.close)
                pools.append(pool)
            yield url, settings, pools[0], pools[1]


def uvloop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop where it is installed: what ``checkpoint-exporter`` runs on
    (``exporter.cli.run``), for a benchmark that stands for the command."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run_main(
    main: Coroutine[Any, Any, T],
    script: str,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
) -> T | int:
    """Run ``main`` (on ``loop_factory``'s loop, asyncio's by default); SIGTERM cancels it as
    Ctrl-C does, so every ``finally`` still runs.

    A :class:`BenchError` is one line on stderr and status 1; an interruption, status 130.
    """

    async def cancellable() -> T:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await main

    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(cancellable())
    except BenchError as exc:
        print(f"{script}: error: {exc}", file=sys.stderr)
        return 1
    except (asyncio.CancelledError, KeyboardInterrupt):
        print(f"{script}: interrupted; every process it started is stopped", file=sys.stderr)
        return 130


class Report(Protocol):
    """What a benchmark returns: its figures as JSON-ready data."""

    def as_dict(self) -> dict[str, Any]: ...


R = TypeVar("R", bound=Report)


def report_main(
    script: str,
    title: str,
    run: Callable[[Path], Coroutine[Any, Any, tuple[str, R]]],
    render: Callable[[R], list[str]],
    *,
    as_json: bool,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
) -> int:
    """The end every report-printing benchmark shares: run in a scratch directory, then print.

    ``run`` gets the scratch directory and returns PostgreSQL's version and the report;
    the report prints as JSON, or as ``render``'s lines under a header naming the code.
    """
    configure_logging("warning", stream=sys.stderr)
    env = environment(code_under_test("exporter/", (ROOT / "exporter").rglob("*.py")))
    prefix = "bench-" + Path(script).stem.replace("_", "-") + "-"
    with tempfile.TemporaryDirectory(prefix=prefix) as scratch:
        result = run_main(run(Path(scratch)), script, loop_factory)
    if isinstance(result, int):
        return result
    postgres, report = result
    if as_json:
        print(json.dumps({"environment": env, "postgres": postgres, **report.as_dict()}, indent=2))
        return 0
    header = [
        f"{title}, {env['date']}, Python {env['python']}, {env['cpus']} CPUs",
        f"{describe_code(env['code'])}; PostgreSQL {postgres} (embedded)",
        "",
    ]
    print("\n".join([*header, *render(report)]))
    return 0


# --------------------------------------------------------------------------------------
# Collectors outside the sidecar
# --------------------------------------------------------------------------------------


async def run_collector(collector: Collector, ctx: ScrapeContext, deadline: float) -> Outcome:
    """Run ``collector`` alone within ``deadline`` seconds, isolated as in a scrape."""
    (result,) = await gather_outcomes((collector,), ctx, deadline)
    return result


async def run_collectors(
    collectors: Sequence[Collector], ctx: ScrapeContext, deadline: float
) -> list[Metric]:
    """Run every collector at once, as a scrape does, and gather what they produced."""
    return outcome_families(await gather_outcomes(collectors, ctx, deadline))


# --------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------


def tree_cpu(parent: int) -> dict[int, float]:
    """CPU seconds of ``parent`` and of each of its children, by pid (Linux: from /proc).

    For the embedded PostgreSQL: the postmaster and its backends and workers. Compare two
    readings pid by pid; a child that ends between them takes its seconds with it.
    """
    found: dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the process ended while we looked
            continue
        fields = text[text.rindex(")") + 2 :].split()  # from the state on, after the name
        pid = int(stat.parent.name)
        if pid == parent or int(fields[1]) == parent:
            found[pid] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return found


def machine_cpu() -> tuple[int, int]:
    """Busy and total clock ticks of all cores so far (from /proc/stat), neighbours included."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)  # idle and iowait are not busy


@dataclass(frozen=True, slots=True)
class Counts:
    threads: int
    checkpoints: int


async def count_checkpoints(url: str, schema: str = DEFAULT_SCHEMA) -> Counts:
    """Distinct threads and checkpoint rows, exactly (a full scan; never timed)."""
    query = sql.SQL(
        "SELECT count(DISTINCT thread_id) AS threads, count(*) AS checkpoints FROM {}"
    ).format(sql.Identifier(schema, "checkpoints"))
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        row = await (await conn.execute(query)).fetchone()
    return Counts(int(row[0]), int(row[1])) if row else Counts(0, 0)


async def server_version(url: str) -> str:
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        row = await (await conn.execute("SHOW server_version")).fetchone()
    return str(row[0]) if row else "unknown"


async def seed(url: str, workflows: int, schema: str = DEFAULT_SCHEMA) -> Counts:
    """Create the tables through the factory and write ``workflows`` workflows, then ANALYZE.

    ANALYZE stands in for autovacuum, which has long run on any real database:
    the catalog estimates the collectors read are then real figures.
    """
    settings = Settings(postgres_connection_string=url, postgres_schema=schema)
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
            await conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(schema, table)))
    return await count_checkpoints(url, schema)
