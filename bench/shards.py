"""Save and load latency against the number of saver shards, and what routing costs per call.

Part 1 runs the load test's workload (``exporter.loadtest.run_workflows``: each workflow run
to its end and read back, 4 KB of state, by default the load test's think time of 50 ms per
node) closed loop on the embedded PostgreSQL, at each number of concurrent workflows asked for. The
sides take turns in interleaved rounds (the order reversed every round): the raw
``AsyncPostgresSaver``, the factory's single instrumented saver, and the factory's router over
2, 4, 8 and 16 savers, each at a pool as large as its shard count and at the default pool.
Each round builds its side afresh, warms it, then measures a window in which every workflow
is in flight: every save (``aput``) and load (``aget_tuple``), this process's and the
server's CPU, the event loop's lag, the pool's queue, and the share of operation time spent
waiting for a saver's lock (the ``lock_wait_seconds`` metric). Part 2 prices the router's own
work per call over ``InMemorySaver`` with the hot loops of ``bench/overhead_calls.py``. The
exit status is 0 whatever the targets say: this is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter, process_time
from typing import Any, Final

from benchlib import (
    BenchError,
    add_data_dir,
    fresh_schema,
    machine_cpu,
    report_main,
    server_version,
    tree_cpu,
    uvloop_factory,
)
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.graph.state import CompiledStateGraph
from overhead_calls import MicroResult, call_rows, interleave, realistic_inputs, saver_blocks
from prometheus_client import CollectorRegistry
from psycopg_pool import AsyncConnectionPool

from exporter.checkpointer.instrumented import Observation, Observer
from exporter.checkpointer.placement import Placement
from exporter.checkpointer.routing import routing_saver
from exporter.database import open_checkpointer_pool
from exporter.embedded import embedded_database
from exporter.factory import build_checkpointer
from exporter.loadtest import (
    LOAD_P95_TARGET,
    SAVE_P95_TARGET,
    LoadtestOptions,
    Recorder,
    Tally,
    percentile,
    run_workflows,
)
from exporter.settings import Settings
from exporter.workload import compile_workflow

SCHEMA: Final = "bench_shards"
DEFAULTS: Final = LoadtestOptions()  # the load test's think time and state size
SAMPLE_EVERY: Final = 0.05  # seconds between two readings of the pool and the loop's lag
# The saver metrics a window reads, all labels summed: a wait counts whatever operation and
# saver it is labelled with (before 4d5a167 a router's were counted under operation="other").
TOTALS: Final = tuple(
    f"langgraph_checkpointer_{name}"
    for name in ("lock_wait_seconds_sum", "operation_duration_seconds_sum", "operations_total")
)
ROUTERS: Final = {
    "shards": "routing_saver(shards=[InMemorySaver()], memory=None) against the InMemorySaver",
    "rollout": "the rollout form: memory and one in-memory stand-in for PostgreSQL, 50 %",
}

Graph = CompiledStateGraph[Any, Any, Any, Any]


@dataclass(frozen=True, slots=True)
class Side:
    """One configuration; ``shards`` None is the raw saver (no wrapper, no tracking)."""

    shards: int | None
    pool: int

    @property
    def name(self) -> str:
        if self.shards is None:
            return f"raw, pool {self.pool}"
        return f"{self.shards} shard{'s' if self.shards > 1 else ''}, pool {self.pool}"


def sides(shard_counts: Sequence[int], pool: int) -> list[Side]:
    """Raw and single at ``pool``; each shard count at a pool of its size, and at ``pool`` if
    that is larger (a pool smaller than the shard count is a setting the exporter refuses)."""
    chosen = [Side(None, pool), Side(1, pool)]
    for n in shard_counts:
        chosen += [Side(n, n), *([Side(n, pool)] if n < pool else [])]
    return chosen


class RawSaver(AsyncPostgresSaver):
    """``AsyncPostgresSaver`` reporting its saves and loads as the instrumented saver does:
    one ``perf_counter`` pair and one observer call per operation, nothing else."""

    observer: Observer

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        started = perf_counter()
        try:
            return await super().aput(config, checkpoint, metadata, new_versions)
        finally:
            self.observer(Observation("put", perf_counter() - started, 0.0, 0, None))

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        started = perf_counter()
        try:
            return await super().aget_tuple(config)
        finally:
            self.observer(Observation("get_tuple", perf_counter() - started, 0.0, 0, None))


@dataclass
class Gate(Recorder):
    """A recorder that keeps what it is told only while ``open``: the measured window."""

    open: bool = False

    def __call__(self, observation: Observation) -> None:
        if self.open:
            super().__call__(observation)


def saver_totals(registry: CollectorRegistry) -> dict[str, float]:
    """Lock wait, time in operations and operations so far, from the saver metrics."""
    totals = dict.fromkeys(TOTALS, 0.0)
    for metric in registry.collect():
        for sample in metric.samples:
            if sample.name in totals:
                totals[sample.name] += sample.value
    return totals


@dataclass(frozen=True, slots=True)
class Snapshot:
    at: float
    cpu: float
    server: dict[int, float]
    machine: tuple[int, int]
    pool: dict[str, int]
    completed: int
    failed: int
    saver: dict[str, float]

    @classmethod
    def take(
        cls, pool: AsyncConnectionPool[Any], registry: CollectorRegistry, tally: Tally, pm: int
    ) -> Snapshot:
        return cls(
            perf_counter(), process_time(), tree_cpu(pm), machine_cpu(), pool.get_stats(),
            tally.completed, tally.failed, saver_totals(registry),
        )  # fmt: skip


@dataclass(slots=True)
class Round:
    """What one side did in one measured window."""

    side: Side
    save: list[float]
    load: list[float]
    before: Snapshot
    after: Snapshot
    in_use: list[int] = field(default_factory=list)
    waiting: list[int] = field(default_factory=list)
    lag: list[float] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return self.after.at - self.before.at

    @property
    def server_cpu(self) -> float:
        old = self.before.server
        return sum(cpu - old.get(pid, 0.0) for pid, cpu in self.after.server.items())

    @property
    def machine_busy(self) -> float:
        busy, total = (a - b for a, b in zip(self.after.machine, self.before.machine, strict=True))
        return busy / total if total else 0.0


async def sample(pool: AsyncConnectionPool[Any], seconds: float, into: Round) -> None:
    """Read the pool's connections in use and queued requests, and the loop's lag, until done."""
    end = perf_counter() + seconds
    while (now := perf_counter()) < end:
        await asyncio.sleep(SAMPLE_EVERY)
        into.lag.append(perf_counter() - now - SAMPLE_EVERY)
        stats = pool.get_stats()
        into.in_use.append(stats.get("pool_size", 0) - stats.get("pool_available", 0))
        into.waiting.append(stats.get("requests_waiting", 0))


@asynccontextmanager
async def side_graph(
    side: Side, settings: Settings, observer: Observer, registry: CollectorRegistry, think: float
) -> AsyncIterator[tuple[Graph, AsyncConnectionPool[Any]]]:
    """The workload graph (``think`` seconds per node) on ``side``'s saver, and its pool."""
    settings = settings.replace(pool_max_size=side.pool, saver_shards=side.shards or 1)
    if side.shards is None:
        assert settings.postgres_connection_string is not None
        pool = await open_checkpointer_pool(settings.postgres_connection_string, settings)
        try:
            raw = RawSaver(conn=pool)
            raw.observer = observer
            yield compile_workflow(raw, think, DEFAULTS.state_kb), pool
        finally:
            await pool.close()
        return
    async with build_checkpointer(settings, registry=registry, observer=observer) as saver:
        assert saver.backend is not None
        assert saver.backend.pool is not None
        yield compile_workflow(saver, think, DEFAULTS.state_kb), saver.backend.pool


async def run_round(
    side: Side, settings: Settings, workflows: int, report: ShardsReport, pm: int
) -> Round:
    """Build ``side``, run ``workflows`` for the warm-up, then measure one window."""
    warmup, seconds = report.times
    gate, registry, tally = Gate(), CollectorRegistry(), Tally()
    think = report.think_time
    async with side_graph(side, settings, gate, registry, think) as (graph, pool):
        gc.collect()
        prefix = f"shards-{uuid.uuid4().hex[:8]}-"
        before_run = asyncio.all_tasks()
        run = asyncio.create_task(
            run_workflows(graph, workflows, warmup + seconds + 1, prefix, tally)
        )
        try:
            await asyncio.sleep(warmup)
            before = Snapshot.take(pool, registry, tally, pm)
            result = Round(side, [], [], before, before)
            gate.open = True
            await sample(pool, seconds, result)
            gate.open = False
            result.after = Snapshot.take(pool, registry, tally, pm)
        finally:
            # Cut the workflows under way short: at 300 workflows, letting each end would take
            # longer than the window. A cancelled graph run leaves its background checkpoint
            # writes running, and a worker whose run ends in another error carries on, so
            # wait for every task the round started before the pool closes; past the
            # deadline no worker starts another workflow.
            run.cancel()
            started = asyncio.all_tasks() - before_run - {asyncio.current_task()}
            _, left = await asyncio.wait(started, timeout=60) if started else (set(), set())
            if left:
                raise BenchError(f"{len(left)} tasks of a round still run a minute after it")
    result.save, result.load = gate.seconds["put"], gate.seconds["get_tuple"]
    return result


def figures(rounds: Sequence[Round]) -> dict[str, Any]:
    """One side's rounds pooled: percentiles over every call, rates over every window."""
    side, seconds = rounds[0].side, sum(r.seconds for r in rounds)

    def pooled(name: str) -> list[Any]:
        return [v for r in rounds for v in getattr(r, name)] or [0]

    def total(get: Callable[[Snapshot], float]) -> float:
        return sum(get(r.after) - get(r.before) for r in rounds)

    def ms(values: list[float]) -> dict[str, float]:
        return {f"p{q}": percentile(values, q) * 1000 for q in (50, 95, 99)}

    wait, spent, calls = (sum(r.after.saver[k] - r.before.saver[k] for r in rounds) for k in TOTALS)
    requests = total(lambda s: s.pool.get("requests_num", 0)) or 1
    saver = side.shards is not None and calls > 0
    in_use, waiting = pooled("in_use"), pooled("waiting")
    save, load = ms(pooled("save")), ms(pooled("load"))
    return {
        "side": side.name, "shards": side.shards, "pool_max_size": side.pool,
        "rounds": len(rounds), "window_s": seconds,
        "save_ms": save, "load_ms": load,
        "save_p95_ms_by_round": [percentile(r.save, 95) * 1000 for r in rounds],
        "workflows_per_s": total(lambda s: s.completed) / seconds,
        "checkpoints_per_s": sum(len(r.save) for r in rounds) / seconds,
        "failed": total(lambda s: s.failed),
        "process_cpu": total(lambda s: s.cpu) / seconds,
        "server_cpu": sum(r.server_cpu for r in rounds) / seconds,
        "machine_busy": statistics.median(r.machine_busy for r in rounds),
        "loop_lag_ms": ms(pooled("lag")),
        "pool_in_use": {"mean": statistics.fmean(in_use), "max": max(in_use)},
        "pool_waiting": {"mean": statistics.fmean(waiting), "max": max(waiting)},
        "pool_wait_ms_per_request": total(lambda s: s.pool.get("requests_wait_ms", 0)) / requests,
        "lock_wait_share": wait / spent if saver else None,
        "held_ms_per_call": (spent - wait) / calls * 1000 if saver else None,
        "targets_met": save["p95"] < SAVE_P95_TARGET * 1000
        and load["p95"] < LOAD_P95_TARGET * 1000,
    }  # fmt: skip


@dataclass(slots=True)
class ShardsReport:
    sides: list[Side]
    rounds_per_side: int
    times: tuple[float, float]
    think_time: float
    rounds: dict[int, list[Round]] = field(default_factory=dict)
    calls: dict[str, list[MicroResult]] = field(default_factory=dict)

    def level(self, workflows: int) -> list[dict[str, Any]]:
        done = self.rounds[workflows]
        return [figures([r for r in done if r.side == side]) for side in self.sides]

    def as_dict(self) -> dict[str, Any]:
        return {
            "think_time_s": self.think_time,
            "state_kb": DEFAULTS.state_kb,
            "warmup_s": self.times[0],
            "round_seconds": self.times[1],
            "rounds_per_side": self.rounds_per_side,
            "levels": {str(w): self.level(w) for w in self.rounds},
            "per_call": {
                form: {c.operation: c.as_dict() for c in calls}
                for form, calls in self.calls.items()
            },
        }


def pair(first: float, second: float, fmt: str) -> str:
    return f"{first:{fmt}}/{second:{fmt}}"


def optional(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else f"{value:{fmt}}"


def render_level(report: ShardsReport, workflows: int, number: int) -> list[str]:
    rows, (warmup, seconds) = report.level(workflows), report.times
    lines = [
        f"{number}. {workflows} concurrent workflows, closed loop, think time "
        f"{report.think_time * 1000:g} ms per node, state {DEFAULTS.state_kb:g} KB; "
        f"{report.rounds_per_side} rounds x {seconds:g} s per side after {warmup:g} s of warm-up,"
        " interleaved, the order reversed every round",
        "",
        f"   {'side':<19}{'wf/s':>6}{'ckpt/s':>7}{'save p50':>10}{'p95':>7}{'p99':>7}"
        f"{'load p50':>10}{'p95':>7}{'p99':>7}   {'save p95 by round':<18}targets",
    ]
    for f in rows:
        s, g = f["save_ms"], f["load_ms"]
        lines.append(
            f"   {f['side']:<19}{f['workflows_per_s']:>6.1f}{f['checkpoints_per_s']:>7.0f}"
            f"{s['p50']:>10.1f}{s['p95']:>7.1f}{s['p99']:>7.1f}{g['p50']:>10.1f}{g['p95']:>7.1f}"
            f"{g['p99']:>7.1f}   {'/'.join(f'{v:.0f}' for v in f['save_p95_ms_by_round']):<18}"
            f"{'met' if f['targets_met'] else 'not met'}"
        )
    lines += [
        "",
        f"   {'side':<19}{'py CPU':>7}{'pg CPU':>7}{'machine':>8}{'loop lag ms':>12}"
        f"{'pool in use':>12}{'queued':>10}{'pool wait':>10}{'lock wait':>10}{'held':>7}",
        f"   {'':<19}{'cores':>7}{'cores':>7}{'busy':>8}{'p50/p95':>12}{'mean/max':>12}"
        f"{'mean/max':>10}{'ms/req':>10}{'share':>10}{'ms/op':>7}",
    ]
    for f in rows:
        lag, use, queue = f["loop_lag_ms"], f["pool_in_use"], f["pool_waiting"]
        share, held = f["lock_wait_share"], f["held_ms_per_call"]
        lines.append(
            f"   {f['side']:<19}{f['process_cpu']:>7.2f}{f['server_cpu']:>7.2f}"
            f"{f['machine_busy']:>8.0%}{pair(lag['p50'], lag['p95'], '.1f'):>12}"
            f"{pair(use['mean'], use['max'], '.1f'):>12}"
            f"{pair(queue['mean'], queue['max'], '.1f'):>10}"
            f"{f['pool_wait_ms_per_request']:>10.2f}{optional(share, '.1%'):>10}"
            f"{optional(held, '.2f'):>7}"
        )
    met = ", ".join(f["side"] for f in rows if f["targets_met"]) or "none"
    failed = sum(f["failed"] for f in rows)
    return [
        *lines,
        "",
        f"   targets (save p95 < {SAVE_P95_TARGET * 1000:g} ms, load p95 < "
        f"{LOAD_P95_TARGET * 1000:g} ms) met by: {met}; failed workflows: {failed}",
        "",
    ]


def render(report: ShardsReport) -> list[str]:
    lines: list[str] = []
    for number, workflows in enumerate(report.rounds, start=1):
        lines += render_level(report, workflows, number)
    if not report.calls:
        return lines
    lines.append(
        f"{len(report.rounds) + 1}. Routing per call over InMemorySaver, hot loops (medians of "
        "interleaved blocks; added = median of the paired differences)"
    )
    for form, calls in report.calls.items():
        lines += ["", f"   {ROUTERS[form]}", *call_rows(calls, ("memory", "routed"))]
    return [*lines, ""]


def measure_routing(reps: int) -> dict[str, list[MicroResult]]:
    """The router's own work per call, against the ``InMemorySaver`` it sends calls to: over
    one in-memory shard, and in the rollout form (memory, and one in-memory stand-in for the
    PostgreSQL side that half of the threads go to)."""
    inputs = realistic_inputs()
    loop = asyncio.new_event_loop()
    try:
        plain, shard = InMemorySaver(), InMemorySaver()
        base = saver_blocks(plain, [plain], inputs, loop)
        sharded = routing_saver(
            shards=[shard], memory=None, placement=Placement(), in_postgres=None, in_memory=None
        )
        memory, stand_in = InMemorySaver(), InMemorySaver()
        rollout = routing_saver(
            shards=[stand_in],
            memory=memory,
            placement=Placement(50.0),
            in_postgres=None,
            in_memory=lambda thread_id: thread_id in memory.storage,
        )
        return {
            "shards": interleave(base, saver_blocks(sharded, [shard], inputs, loop), reps),
            "rollout": interleave(
                base, saver_blocks(rollout, [memory, stand_in], inputs, loop), reps
            ),
        }
    finally:
        loop.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--workflows", type=int, nargs="+", default=[100, 300])
    parser.add_argument("--shards", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--pool", type=int, default=Settings().pool_max_size, help="(10)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per side per level (3)")
    parser.add_argument("--round-seconds", type=float, default=6.0, help="window (6)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before it (2)")
    parser.add_argument(
        "--think-time", type=float, default=DEFAULTS.think_time, help="seconds per node (0.05)"
    )
    parser.add_argument("--micro-reps", type=int, default=60, help="blocks per call, 0: skip")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    add_data_dir(parser)
    args = parser.parse_args(argv)
    chosen = sides(args.shards, args.pool)
    report = ShardsReport(chosen, args.rounds, (args.warmup, args.round_seconds), args.think_time)
    # Before the database starts, and on a loop of its own: the hot loops enter theirs.
    report.calls = measure_routing(args.micro_reps) if args.micro_reps else {}

    async def run(scratch: Path) -> tuple[str, ShardsReport]:
        data_dir = args.data_dir or scratch / "pgdata"
        async with embedded_database(data_dir) as url:
            settings = await fresh_schema(url, SCHEMA)
            postmaster = int((data_dir / "postmaster.pid").read_text().split()[0])
            for workflows in args.workflows:
                done = report.rounds.setdefault(workflows, [])
                for index in range(args.rounds):
                    for side in chosen if index % 2 == 0 else chosen[::-1]:
                        result = await run_round(side, settings, workflows, report, postmaster)
                        done.append(result)
                        print(
                            f"  {workflows} wf, round {index + 1}/{args.rounds}, {side.name:<19}"
                            f" save p95 {percentile(result.save, 95) * 1000:6.1f} ms",
                            file=sys.stderr,
                        )
            return await server_version(url), report

    return report_main(
        __file__, "Saver shards", run, render, as_json=args.json, loop_factory=uvloop_factory()
    )


if __name__ == "__main__":
    sys.exit(main())
