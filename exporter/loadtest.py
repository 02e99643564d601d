"""``checkpoint-exporter loadtest``: concurrent real workflows, judged against the targets.

The design note's targets: save p95 < 50 ms, load p95 < 100 ms, errors < 1 %.
Latencies come from the instrumented saver itself (every call, not a sample).
"""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from time import monotonic
from typing import Any

from langgraph.graph.state import CompiledStateGraph
from prometheus_client import REGISTRY, CollectorRegistry
from psycopg import AsyncConnection

from exporter.checkpointer.instrumented import Observation
from exporter.database import exporter_connect_kwargs
from exporter.factory import build_checkpointer
from exporter.log import get_logger
from exporter.settings import Settings
from exporter.sidecar import Sidecar
from exporter.sql.workflow_metadata import statuses_like
from exporter.workflows.schema import STATUSES
from exporter.workload import compile_workflow, initial_state

log = get_logger("loadtest")

SAVE_P95_TARGET = 0.050
LOAD_P95_TARGET = 0.100
ERROR_RATE_TARGET = 0.01


@dataclass(frozen=True, slots=True)
class LoadtestOptions:
    workflows: int = 16
    duration: float = 30.0
    think_time: float = 0.05
    state_kb: float = 4.0
    serve: bool = False


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (exact on the recorded values); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Recorder:
    """Collects every observation the instrumented saver reports."""

    seconds: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    lock_wait: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def __call__(self, observation: Observation) -> None:
        self.seconds[observation.operation].append(observation.seconds)
        self.lock_wait[observation.operation] += observation.lock_wait
        if observation.error is not None:
            self.errors[observation.operation] += 1


def summarize(
    recorder: Recorder,
    *,
    elapsed: float,
    workflows_done: int,
    workflows_failed: int,
    options: LoadtestOptions,
    checkpointer: str,
) -> dict[str, Any]:
    """The report as data: per-operation percentiles, throughput and verdicts."""
    operations: dict[str, Any] = {}
    for operation, values in sorted(recorder.seconds.items()):
        total = sum(values)
        operations[operation] = {
            "count": len(values),
            "errors": recorder.errors.get(operation, 0),
            "p50_ms": percentile(values, 50) * 1000,
            "p95_ms": percentile(values, 95) * 1000,
            "p99_ms": percentile(values, 99) * 1000,
            "lock_wait_share": recorder.lock_wait[operation] / total if total else 0.0,
        }
    calls = sum(op["count"] for op in operations.values())
    errors = sum(op["errors"] for op in operations.values())
    error_rate = errors / calls if calls else 0.0
    save = operations.get("put", {}).get("p95_ms", 0.0) / 1000
    load = operations.get("get_tuple", {}).get("p95_ms", 0.0) / 1000
    verdicts = {
        "save_p95": {
            "value_ms": save * 1000,
            "target_ms": SAVE_P95_TARGET * 1000,
            "pass": save < SAVE_P95_TARGET,
        },
        "load_p95": {
            "value_ms": load * 1000,
            "target_ms": LOAD_P95_TARGET * 1000,
            "pass": load < LOAD_P95_TARGET,
        },
        "error_rate": {
            "value": error_rate,
            "target": ERROR_RATE_TARGET,
            "pass": error_rate < ERROR_RATE_TARGET,
        },
    }
    return {
        "checkpointer": checkpointer,
        "workflows": options.workflows,
        "duration_s": elapsed,
        "think_time_s": options.think_time,
        "workflows_completed": workflows_done,
        "workflows_failed": workflows_failed,
        "workflows_per_s": workflows_done / elapsed if elapsed else 0.0,
        "checkpoints_per_s": len(recorder.seconds.get("put", [])) / elapsed if elapsed else 0.0,
        "operations": operations,
        "error_rate": error_rate,
        "verdicts": verdicts,
        "passed": all(v["pass"] for v in verdicts.values()),
    }


def render_text(report: Mapping[str, Any]) -> str:
    """A terminal table of the report."""
    lines = [
        f"checkpointer {report['checkpointer']}: {report['workflows']} concurrent workflows for "
        f"{report['duration_s']:.1f}s, think time {report['think_time_s'] * 1000:g} ms",
        f"completed {report['workflows_completed']} workflows ({report['workflows_per_s']:.1f}/s), "
        f"failed {report['workflows_failed']}, saved {report['checkpoints_per_s']:.1f} "
        "checkpoints/s",
        "",
        f"{'operation':<28}{'count':>8}{'errors':>8}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}"
        f"{'lock wait':>11}",
    ]
    for name, op in report["operations"].items():
        lines.append(
            f"{name:<28}{op['count']:>8}{op['errors']:>8}{op['p50_ms']:>10.2f}"
            f"{op['p95_ms']:>10.2f}{op['p99_ms']:>10.2f}{op['lock_wait_share']:>10.1%}"
        )
    v = report["verdicts"]
    mark = {True: "PASS", False: "FAIL"}
    lines += [
        "",
        f"save p95  {v['save_p95']['value_ms']:8.2f} ms  target < {v['save_p95']['target_ms']:g} ms"
        f"  {mark[v['save_p95']['pass']]}",
        f"load p95  {v['load_p95']['value_ms']:8.2f} ms  target < {v['load_p95']['target_ms']:g} ms"
        f"  {mark[v['load_p95']['pass']]}",
        f"errors    {v['error_rate']['value']:8.2%}     target < {v['error_rate']['target']:.0%}"
        f"      {mark[v['error_rate']['pass']]}",
    ]
    if "workflow_statuses" in report:
        statuses = ", ".join(f"{n} {s}" for s, n in report["workflow_statuses"].items() if n)
        lines.append(f"tracked    {statuses or 'nothing'}")
    return "\n".join(lines)


@dataclass(slots=True)
class Tally:
    """Workflows finished so far; readable while they run."""

    completed: int = 0
    failed: int = 0


async def run_workflows(
    graph: CompiledStateGraph[Any, Any, Any, Any],
    workflows: int,
    duration: float,
    prefix: str,
    tally: Tally | None = None,
) -> Tally:
    """Keep ``workflows`` workflows in flight (closed loop) for ``duration`` seconds, each
    run to its end and read back.

    The counts go into ``tally`` as each workflow ends (one under way at the deadline is run
    to its end), so a caller timing a window of the run reads them there.
    """
    tally = Tally() if tally is None else tally
    deadline = monotonic() + duration

    async def worker(index: int) -> None:
        while monotonic() < deadline:
            thread_id = f"{prefix}{index}-{uuid.uuid4()}"
            config: Any = {"configurable": {"thread_id": thread_id}}
            try:
                await graph.ainvoke(initial_state(f"task {thread_id}"), config)
                # Read the workflow back, as a status page or a resume would.
                await graph.aget_state(config)
            except Exception as exc:
                tally.failed += 1
                log.warning("workflow_failed", error=type(exc).__name__)
            else:
                tally.completed += 1

    await asyncio.gather(*(worker(i) for i in range(workflows)))
    return tally


async def run_loadtest(
    settings: Settings, options: LoadtestOptions, registry: CollectorRegistry | None = None
) -> dict[str, Any]:
    """Run the workload through the configured, instrumented checkpointer and report."""
    recorder = Recorder()
    registry = REGISTRY if registry is None else registry
    async with build_checkpointer(settings, registry=registry, observer=recorder) as saver:
        sidecar = (
            Sidecar(settings, checkpointer=saver, registry=registry) if options.serve else None
        )
        if sidecar is not None:
            await sidecar.start()
        try:
            graph = compile_workflow(saver, options.think_time, options.state_kb)
            prefix = f"loadtest-{uuid.uuid4().hex[:8]}-"
            started = monotonic()
            tally = await run_workflows(graph, options.workflows, options.duration, prefix)
            elapsed = monotonic() - started
        finally:
            if sidecar is not None:
                await sidecar.stop()
        backend = saver.backend
        report = summarize(
            recorder,
            elapsed=elapsed,
            workflows_done=tally.completed,
            workflows_failed=tally.failed,
            options=options,
            checkpointer=backend.checkpointer if backend else saver.saver_name,
        )
        if saver.tracker is not None and backend is not None and backend.connection_string:
            await saver.tracker.flush()
            report["workflow_statuses"] = await tracked_statuses(
                backend.connection_string, settings, prefix
            )
        return report


async def tracked_statuses(conninfo: str, settings: Settings, prefix: str) -> dict[str, int]:
    """How ``workflow_metadata`` reads this run's threads once it is over: every one should
    be completed (or failed), none left running."""
    query = statuses_like(settings.postgres_schema)
    async with await AsyncConnection.connect(
        conninfo, **exporter_connect_kwargs(conninfo, settings)
    ) as conn:
        cursor = await conn.execute(query, (prefix + "%",))
        rows = await cursor.fetchall()
    return {status: 0 for status in STATUSES} | {row["status"]: row["n"] for row in rows}


def render(report: Mapping[str, Any], output: str) -> str:
    return json.dumps(report, indent=2) if output == "json" else render_text(report)
