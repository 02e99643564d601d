"""The load test drives real workflows through the instrumented saver and reports them exactly."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from exporter.loadtest import LoadtestOptions, percentile, run_loadtest
from exporter.settings import ListenAddress, Settings
from tests.samples import parse_metrics, value
from tests.waiting import eventually

# The input checkpoint (step -1), the one after START, then one per node run:
# plan, research, draft, review, draft, review.
CHECKPOINTS_PER_WORKFLOW = 8


def test_percentile_is_nearest_rank() -> None:
    """p50/p95/p99 are values that were observed, chosen by nearest rank."""
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 95) == 95
    assert percentile(values, 99) == 99
    assert percentile([3.0], 99) == 3.0
    assert percentile([], 95) == 0.0


async def test_report_accounts_for_every_operation(settings: Settings) -> None:
    """Each completed workflow saved eight checkpoints and was loaded twice; nothing failed."""
    options = LoadtestOptions(workflows=4, duration=1.0, think_time=0.005, state_kb=2)
    report = await run_loadtest(settings, options, registry=CollectorRegistry())
    completed = report["workflows_completed"]
    assert completed > 0
    assert report["workflows_failed"] == 0
    operations = report["operations"]
    assert operations["put"]["count"] == CHECKPOINTS_PER_WORKFLOW * completed
    assert operations["get_tuple"]["count"] == 2 * completed
    assert report["error_rate"] == 0
    assert report["verdicts"]["error_rate"]["pass"] is True
    put = operations["put"]
    assert 0 < put["p50_ms"] <= put["p95_ms"] <= put["p99_ms"]
    assert 0 <= put["lock_wait_share"] < 1
    assert report["checkpointer"] == "PostgresSaver"
    # No application marks: every workflow that reached END reads completed, none running.
    statuses = report["workflow_statuses"]
    assert statuses == {s: completed if s == "completed" else 0 for s in statuses}


async def test_loadtest_serves_metrics_while_it_runs(settings: Settings) -> None:
    """Given a listen address, the running workload can be scraped and its health read."""
    settings = settings.replace(listen_address=ListenAddress("127.0.0.1", 0))
    options = LoadtestOptions(workflows=4, duration=4.0, think_time=0.01, serve=True)
    registry = CollectorRegistry()
    seen: dict[str, Any] = {}
    with capture_logs() as logs:
        run = asyncio.create_task(run_loadtest(settings, options, registry=registry))

        def started() -> str | None:
            assert not run.done(), "the load test ended before it served"
            return next((e["url"] for e in logs if e["event"] == "sidecar_started"), None)

        url = await eventually(started, what="the load test's sidecar to start")
    async with aiohttp.ClientSession() as http:

        async def put_seen() -> bool:
            async with http.get(f"{url}/metrics") as response:
                samples = parse_metrics(await response.text())
            async with http.get(f"{url}/api/health/checkpointer") as response:
                seen["health"] = await response.json()
            seen["put"] = value(
                samples,
                "langgraph_checkpointer_operations_total",
                operation="put",
                saver="AsyncPostgresSaver",
            )
            return seen["put"] > 0 or run.done()

        await eventually(put_seen, what="a put counted while the load test runs")
    report = await run
    assert seen["put"] > 0
    assert seen["health"]["status"] == "healthy"
    assert seen["health"]["saver"] == "AsyncPostgresSaver"
    assert report["workflows_completed"] > 0


def test_hundred_concurrent_workflows_from_the_command_line(dsn: str) -> None:
    """`loadtest --workflows 100` runs on this machine and prints a JSON verdict."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CHECKPOINT_EXPORTER_", "POSTGRES_", "USE_POSTGRES"))
    }
    env["POSTGRES_CONNECTION_STRING"] = dsn
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "exporter",
            "loadtest",
            "--workflows",
            "100",
            "--duration",
            "3s",
            "--think-time",
            "50ms",
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["workflows"] == 100
    assert report["workflows_completed"] >= 100
    assert report["workflows_failed"] == 0
    assert report["error_rate"] == 0
    assert report["operations"]["put"]["count"] == (
        CHECKPOINTS_PER_WORKFLOW * report["workflows_completed"]
    )
    assert set(report["verdicts"]) == {"save_p95", "load_p95", "error_rate"}
