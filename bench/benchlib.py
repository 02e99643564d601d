"""What every benchmark script shares: robust summaries, and which code a run measured."""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import platform
import statistics
import subprocess
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from psycopg import AsyncConnection, sql
from psycopg_pool import AsyncConnectionPool

from exporter.database import checkpointer_connect_kwargs, open_checkpointer_pool
from exporter.embedded import embedded_database
from exporter.factory import prepare_schema
from exporter.settings import Settings

ROOT: Final = Path(__file__).resolve().parents[1]


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


def verdict_line(name: str, verdict: Mapping[str, Any], target: float) -> str:
    """The closing line of a large/small comparison: both ratios, the interval, the outcome."""
    return (
        f"Verdict {name}: large/small {verdict['ratio_of_medians']:.3f} (ratio of "
        f"medians; median of pairs {verdict['paired_ratio_median']:.3f}, ~95 % interval "
        f"{span(verdict['interval'], '.3f')}), target <= {target:g}: {verdict['outcome']}"
    )


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False
        )
    except OSError:
        return None
    return done.stdout.rstrip() if done.returncode == 0 else None


def code_under_test(label: str, sources: Iterable[Path]) -> dict[str, Any]:
    """Which code a run measured: ``label``, a hash of ``sources``, the checkout's state."""
    digest = hashlib.sha256()
    for path in sorted(sources):
        digest.update(path.resolve().relative_to(ROOT).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    modified = _git("status", "--porcelain", "--", "exporter")
    return {
        "measured": label,
        "sha256": digest.hexdigest()[:12],
        "commit": _git("rev-parse", "--short", "HEAD"),
        "modified": [line[3:] for line in modified.splitlines()] if modified else [],
    }


def describe_code(code: dict[str, Any]) -> str:
    """One line for a report: what was measured, at which commit, clean or not."""
    state = "clean" if not code["modified"] else "modified: " + ", ".join(code["modified"])
    return (
        f"measured {code['measured']} (sha256 {code['sha256']}), commit {code['commit']}, {state}"
    )


def environment(code: dict[str, Any]) -> dict[str, Any]:
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "code": code,
    }


@asynccontextmanager
async def paired_pools(
    data_dir: Path, schema: str
) -> AsyncIterator[tuple[str, Settings, AsyncConnectionPool[Any], AsyncConnectionPool[Any]]]:
    """An embedded PostgreSQL with ``schema`` made afresh, and two checkpointer pools on it.

    One pool per side of a side-by-side comparison, so neither side queues behind the other.
    """
    async with embedded_database(data_dir) as url:
        settings = Settings(postgres_connection_string=url, postgres_schema=schema)
        kwargs = checkpointer_connect_kwargs(url, settings)
        async with await AsyncConnection.connect(url, **kwargs) as conn:
            await conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
            )
        await prepare_schema(url, settings)
        async with AsyncExitStack() as stack:
            pools = []
            for _ in range(2):
                pool = await open_checkpointer_pool(url, settings)
                stack.push_async_callback(pool.close)
                pools.append(pool)
            yield url, settings, pools[0], pools[1]
