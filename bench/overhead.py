"""What the instrumented wrapper costs, measured against the raw saver in one run.

Two figures, each taken side by side in interleaved rounds so that the noise
of a shared machine lands on both sides alike:

1. Throughput of the workload graph (no think time: a stress test) on the
   embedded PostgreSQL, raw ``AsyncPostgresSaver`` against the instrumented
   one, each on a pool of its own; rounds alternate ABBA. The Python process's
   CPU time per workflow is taken too: the graph keeps one core busy, so the
   wrapper's cost shows there with less noise than in wall-clock throughput.
2. Microseconds added per direct call over ``InMemorySaver`` in hot loops,
   next to the floor of any timing at all (a ``perf_counter()`` pair and one
   histogram observation) and the wrapper's steps one by one.

Ratios come with a distribution-free ~95 % interval for the median of the
per-pair ratios, so a verdict never claims more than the noise allows.
Verdicts are printed, but the exit status is 0 whatever they say: this is a
measurement, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import gc
import json
import sys
import tempfile
import types
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter, perf_counter_ns, process_time
from typing import Any, Final

from benchlib import (
    ROOT,
    add_data_dir,
    code_under_test,
    describe_code,
    environment,
    median,
    median_interval,
    paired_pools,
    span,
)
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver, ChannelVersions, Checkpoint
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.graph.state import CompiledStateGraph
from prometheus_client import CollectorRegistry, Histogram

from exporter.checkpointer.call import Call, current_call
from exporter.checkpointer.instrumented import instrument
from exporter.checkpointer.locks import time_lock
from exporter.checkpointer.metrics import DURATION_BUCKETS, saver_metrics
from exporter.log import configure_logging
from exporter.workload import compile_workflow, initial_state

CHECKPOINTER: Final = ROOT / "exporter" / "checkpointer"
THROUGHPUT_TARGET: Final = 0.98  # instrumented/raw: at most 2 % slower
ADDED_US_TARGET: Final = 5.0  # microseconds the wrapper may add to one call
THINK_TIME: Final = 0.0
STATE_KB: Final = 4.0
# A schema of the benchmark's own, dropped at start: every run begins from empty tables.
SCHEMA: Final = "bench_overhead"
# Each timed block of the micro-benchmark lasts about this long: far above the timer's
# resolution, yet short enough that many interleaved blocks fit and a burst of noise
# from a neighbour spoils only a few of them, which the median then ignores.
BLOCK_NS: Final = 5_000_000
MAX_CALLS: Final = 200_000
COMPONENT_CALLS: Final = 20_000
LOCK_ROW: Final = "saver lock"
# Below six pairs no two order statistics bracket the median with 95 % confidence.
MIN_PAIRS: Final = 6
# Saver operation (as counted on the PostgreSQL side) -> the in-memory row that prices it.
PRICED_BY: Final = {"put": "aput", "get_tuple": "aget_tuple", "put_writes": "put_writes"}

Graph = CompiledStateGraph[Any, Any, Any, Any]


# --------------------------------------------------------------------------------------
# 1. Throughput on PostgreSQL
# --------------------------------------------------------------------------------------


@dataclass(slots=True)
class Round:
    """One timed round of one side."""

    side: str
    index: int
    completed: int
    failed: int
    seconds: float
    cpu_seconds: float

    @property
    def per_second(self) -> float:
        return self.completed / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms_per_workflow(self) -> float:
        return self.cpu_seconds * 1000 / self.completed if self.completed else 0.0


@dataclass(slots=True)
class ThroughputReport:
    workflows: int
    rounds: int
    round_seconds: float
    raw: list[Round] = field(default_factory=list)
    instrumented: list[Round] = field(default_factory=list)
    calls_per_workflow: dict[str, float] = field(default_factory=dict)
    lock_acquisitions_per_workflow: float = 0.0

    @property
    def raw_median(self) -> float:
        return median([r.per_second for r in self.raw])

    @property
    def instrumented_median(self) -> float:
        return median([r.per_second for r in self.instrumented])

    @property
    def ratio(self) -> float:
        """The ratio of the two medians, as asked for; the verdict uses the paired ratios."""
        return self.instrumented_median / self.raw_median if self.raw_median else 0.0

    def _pairs(self) -> list[tuple[Round, Round]]:
        return [(r, i) for r, i in zip(self.raw, self.instrumented, strict=True) if r.completed]

    @property
    def paired_ratios(self) -> list[float]:
        """instrumented/raw within each pair of rounds: the same stretch of machine noise."""
        return [i.per_second / r.per_second for r, i in self._pairs() if i.completed]

    @property
    def paired_cpu_ratios(self) -> list[float]:
        return [
            i.cpu_ms_per_workflow / r.cpu_ms_per_workflow for r, i in self._pairs() if i.completed
        ]

    @property
    def paired_cpu_added_us(self) -> list[float]:
        """Extra Python CPU per workflow on the instrumented side, in microseconds."""
        return [
            (i.cpu_ms_per_workflow - r.cpu_ms_per_workflow) * 1000
            for r, i in self._pairs()
            if i.completed
        ]

    @property
    def calls(self) -> float:
        return sum(self.calls_per_workflow.values())

    def as_dict(self) -> dict[str, Any]:
        ratios, cpu = self.paired_ratios, self.paired_cpu_ratios
        added = self.paired_cpu_added_us
        return {
            "workflows": self.workflows,
            "rounds_per_side": self.rounds,
            "round_seconds": self.round_seconds,
            "think_time_s": THINK_TIME,
            "state_kb": STATE_KB,
            "raw_per_s": [r.per_second for r in self.raw],
            "instrumented_per_s": [r.per_second for r in self.instrumented],
            "raw_cpu_ms_per_workflow": [r.cpu_ms_per_workflow for r in self.raw],
            "instrumented_cpu_ms_per_workflow": [r.cpu_ms_per_workflow for r in self.instrumented],
            "failed": {
                "raw": sum(r.failed for r in self.raw),
                "instrumented": sum(r.failed for r in self.instrumented),
            },
            "raw_median_per_s": self.raw_median,
            "instrumented_median_per_s": self.instrumented_median,
            "ratio_of_medians": self.ratio,
            "paired_ratio_median": median(ratios),
            "paired_ratio_interval": median_interval(ratios),
            "paired_cpu_ratio_median": median(cpu),
            "paired_cpu_ratio_interval": median_interval(cpu),
            "cpu_added_us_per_workflow": median(added),
            "cpu_added_us_per_call": median(added) / self.calls if self.calls else None,
            "calls_per_workflow": self.calls_per_workflow,
            "lock_acquisitions_per_workflow": self.lock_acquisitions_per_workflow,
        }


async def run_round(graph: Graph, side: str, index: int, seconds: float, workers: int) -> Round:
    """Keep ``workers`` workflows in flight for ``seconds``; count those that completed."""
    gc.collect()
    completed = failed = 0
    deadline = perf_counter() + seconds

    async def worker() -> None:
        nonlocal completed, failed
        while perf_counter() < deadline:
            thread_id = f"{side}-{uuid.uuid4().hex}"
            config: RunnableConfig = {"configurable": {"thread_id": thread_id}}
            try:
                await graph.ainvoke(initial_state(f"task {thread_id}"), config)
            except Exception:
                failed += 1
            else:
                completed += 1

    started, cpu = perf_counter(), process_time()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return Round(side, index, completed, failed, perf_counter() - started, process_time() - cpu)


@asynccontextmanager
async def postgres_graphs(data_dir: Path) -> AsyncIterator[tuple[Graph, Graph, CollectorRegistry]]:
    """The raw and the instrumented graph, each saver on a pool of its own."""
    async with paired_pools(data_dir, SCHEMA) as (_, _, raw_pool, instrumented_pool):
        registry = CollectorRegistry()
        raw = compile_workflow(AsyncPostgresSaver(conn=raw_pool), THINK_TIME, STATE_KB)
        wrapped = instrument(AsyncPostgresSaver(conn=instrumented_pool), registry=registry)
        yield raw, compile_workflow(wrapped, THINK_TIME, STATE_KB), registry


def counted(registry: CollectorRegistry) -> dict[str, float]:
    """Operations by name, and lock acquisitions under ``LOCK_ROW``, from the registry."""
    counts: dict[str, float] = {}
    for metric in registry.collect():
        for sample in metric.samples:
            if sample.name == "langgraph_checkpointer_operations_total":
                key = sample.labels["operation"]
            elif sample.name == "langgraph_checkpointer_lock_wait_seconds_count":
                key = LOCK_ROW
            else:
                continue
            counts[key] = counts.get(key, 0.0) + sample.value
    return counts


async def measure_throughput(
    data_dir: Path, rounds: int, round_seconds: float, workers: int, progress: bool
) -> ThroughputReport:
    report = ThroughputReport(workers, rounds, round_seconds)
    async with postgres_graphs(data_dir) as (raw, instrumented, registry):
        graphs = {"raw": raw, "instrumented": instrumented}
        # Warm both sides (connections, prepared statements, caches) before anything counts.
        for side, graph in graphs.items():
            await run_round(graph, side, -1, min(2.0, round_seconds), workers)
        before = counted(registry)
        for index in range(rounds):
            order = ("raw", "instrumented") if index % 2 == 0 else ("instrumented", "raw")
            for side in order:
                result = await run_round(graphs[side], side, index, round_seconds, workers)
                (report.raw if side == "raw" else report.instrumented).append(result)
                if progress:
                    print(
                        f"  round {index + 1}/{rounds} {side:<12} {result.per_second:7.1f} wf/s"
                        f"  {result.cpu_ms_per_workflow:6.2f} CPU ms/wf",
                        file=sys.stderr,
                    )
        after = counted(registry)
    done = sum(r.completed + r.failed for r in report.instrumented)
    if done:
        per_workflow = {key: (after[key] - before.get(key, 0.0)) / done for key in sorted(after)}
        report.lock_acquisitions_per_workflow = per_workflow.pop(LOCK_ROW, 0.0)
        report.calls_per_workflow = {k: v for k, v in per_workflow.items() if v}
    return report


# --------------------------------------------------------------------------------------
# 2. Per-call cost over InMemorySaver
# --------------------------------------------------------------------------------------

Block = Callable[[int], int]
"""Runs ``n`` calls and returns the nanoseconds they took."""
Reset = Callable[[], None]


def _nothing() -> None:
    pass


@dataclass(slots=True)
class Inputs:
    """A real checkpoint of the workload graph, and writes of its size."""

    config: RunnableConfig
    checkpoint: Checkpoint
    metadata: Any
    versions: ChannelVersions
    writes: list[tuple[str, Any]]


def realistic_inputs() -> Inputs:
    """Run the workload graph once and take its final checkpoint, channel values included."""
    saver = InMemorySaver()
    graph = compile_workflow(saver, THINK_TIME, STATE_KB)
    config: RunnableConfig = {"configurable": {"thread_id": "source"}}
    asyncio.run(graph.ainvoke(initial_state("describe the benchmark"), config))
    saved = saver.get_tuple(config)
    assert saved is not None
    checkpoint = saved.checkpoint
    values = checkpoint["channel_values"]
    return Inputs(
        config={"configurable": {"thread_id": "bench-micro", "checkpoint_ns": ""}},
        checkpoint=checkpoint,
        metadata=saved.metadata,
        versions={k: v for k, v in checkpoint["channel_versions"].items() if k in values},
        writes=[(k, values[k]) for k in ("messages", "scratchpad") if k in values],
    )


def saver_blocks(
    saver: BaseCheckpointSaver[Any],
    store: InMemorySaver,
    inputs: Inputs,
    loop: asyncio.AbstractEventLoop,
) -> dict[str, tuple[Block, Reset]]:
    """Each operation's timed block on ``saver``, with the untimed reset to run before it.

    ``store`` is the ``InMemorySaver`` holding the data (``saver`` itself, or the one it wraps).
    """
    config, checkpoint, metadata, versions = (
        inputs.config,
        inputs.checkpoint,
        inputs.metadata,
        inputs.versions,
    )
    saved = saver.put(config, checkpoint, metadata, versions)
    # Writes go to a thread of their own, so that they never pile up as pending writes
    # of the checkpoint that get_tuple reads back.
    writes_to = saver.put(
        {"configurable": {"thread_id": "bench-writes", "checkpoint_ns": ""}},
        checkpoint,
        metadata,
        versions,
    )
    writes = inputs.writes
    # A fresh task id per call: repeating one would let put_writes skip every write.
    task_ids = [f"task-{i}" for i in range(MAX_CALLS)]

    def put(n: int) -> int:
        call = saver.put
        started = perf_counter_ns()
        for _ in range(n):
            call(config, checkpoint, metadata, versions)
        return perf_counter_ns() - started

    def get_tuple(n: int) -> int:
        call = saver.get_tuple
        started = perf_counter_ns()
        for _ in range(n):
            call(saved)
        return perf_counter_ns() - started

    def put_writes(n: int) -> int:
        call = saver.put_writes
        ids = task_ids[:n]
        started = perf_counter_ns()
        for task_id in ids:
            call(writes_to, writes, task_id)
        return perf_counter_ns() - started

    async def aput(n: int) -> int:
        call = saver.aput
        started = perf_counter_ns()
        for _ in range(n):
            await call(config, checkpoint, metadata, versions)
        return perf_counter_ns() - started

    async def aget_tuple(n: int) -> int:
        call = saver.aget_tuple
        started = perf_counter_ns()
        for _ in range(n):
            await call(saved)
        return perf_counter_ns() - started

    def clear_writes() -> None:
        store.writes.clear()

    return {
        "put": (put, _nothing),
        "get_tuple": (get_tuple, _nothing),
        "put_writes": (put_writes, clear_writes),
        "aput": (on_loop(loop, aput), _nothing),
        "aget_tuple": (on_loop(loop, aget_tuple), _nothing),
    }


def on_loop(loop: asyncio.AbstractEventLoop, body: Callable[[int], Awaitable[int]]) -> Block:
    """A block whose loop runs inside one coroutine: the event loop is entered once per block."""

    async def main(n: int) -> int:
        return await body(n)

    return lambda n: loop.run_until_complete(main(n))


def lock_block(lock: asyncio.Lock, loop: asyncio.AbstractEventLoop) -> Block:
    """``async with lock`` uncontended, as ``AsyncPostgresSaver`` takes it once per operation."""

    async def body(n: int) -> int:
        started = perf_counter_ns()
        for _ in range(n):
            async with lock:
                pass
        return perf_counter_ns() - started

    return on_loop(loop, body)


def timed(block: Block, reset: Reset, n: int) -> float:
    """Nanoseconds per call of one block, after an untimed reset.

    The garbage collector stays on: the wrapper's extra allocations make it run
    more often, and that is part of what the wrapper costs.
    """
    reset()
    return block(n) / n


def calls_per_block(block: Block, reset: Reset) -> int:
    """Enough calls for one block to last about :data:`BLOCK_NS`."""
    probe = 200
    per_call = min(timed(block, reset, probe) for _ in range(3))
    return min(MAX_CALLS, max(probe, int(BLOCK_NS / max(per_call, 1.0))))


@dataclass(slots=True)
class MicroResult:
    operation: str
    calls_per_rep: int
    raw_ns: list[float]
    instrumented_ns: list[float]

    @property
    def added_ns(self) -> list[float]:
        return [i - r for r, i in zip(self.raw_ns, self.instrumented_ns, strict=True)]

    @property
    def added_us(self) -> float:
        return median(self.added_ns) / 1000

    def as_dict(self) -> dict[str, Any]:
        low, high = median_interval(self.added_ns)
        return {
            "calls_per_rep": self.calls_per_rep,
            "reps": len(self.raw_ns),
            "raw_us": median(self.raw_ns) / 1000,
            "instrumented_us": median(self.instrumented_ns) / 1000,
            "added_us": self.added_us,
            "added_us_interval": (low / 1000, high / 1000),
        }


def measure_calls(reps: int) -> list[MicroResult]:
    """Interleaved blocks of raw and instrumented calls; the last row is the saver's lock."""
    inputs = realistic_inputs()
    raw_store, wrapped_store = InMemorySaver(), InMemorySaver()
    wrapped = instrument(wrapped_store, registry=CollectorRegistry())
    # The lock instrument() puts into AsyncPostgresSaver, against the plain asyncio.Lock.
    holder = types.SimpleNamespace(lock=asyncio.Lock())
    time_lock(holder, saver_metrics(CollectorRegistry()))
    loop = asyncio.new_event_loop()
    try:
        sides = {
            "raw": saver_blocks(raw_store, raw_store, inputs, loop),
            "instrumented": saver_blocks(wrapped, wrapped_store, inputs, loop),
        }
        sides["raw"][LOCK_ROW] = (lock_block(asyncio.Lock(), loop), _nothing)
        sides["instrumented"][LOCK_ROW] = (lock_block(holder.lock, loop), _nothing)
        results: list[MicroResult] = []
        for operation in sides["raw"]:
            gc.collect()
            n = calls_per_block(*sides["raw"][operation])
            result = MicroResult(operation, n, [], [])
            for side in sides.values():  # warm both, untimed
                timed(*side[operation], n // 4 or 1)
            for rep in range(reps):
                order = ("raw", "instrumented") if rep % 2 == 0 else ("instrumented", "raw")
                for name in order:
                    per_call = timed(*sides[name][operation], n)
                    (result.raw_ns if name == "raw" else result.instrumented_ns).append(per_call)
            results.append(result)
    finally:
        loop.close()
    return results


# --------------------------------------------------------------------------------------
# The floor, and the wrapper's steps one by one
# --------------------------------------------------------------------------------------


def component_blocks() -> dict[str, Block]:
    """Loops of the single steps the wrapper takes per call, each on its own."""
    registry = CollectorRegistry()
    floor_histogram = Histogram(
        "bench_floor_seconds",
        "Reference histogram.",
        ("operation", "saver"),
        buckets=DURATION_BUCKETS,
        registry=registry,
    )
    floor_child = floor_histogram.labels("put", "InMemorySaver")
    stats = saver_metrics(registry).stats("put", "InMemorySaver")
    args: tuple[Any, ...] = ({"configurable": {"thread_id": "bench-micro", "checkpoint_ns": ""}},)
    no_kwargs: dict[str, Any] = {}

    class Owner:
        def _finish(self, call: Call) -> None:
            call.stats.record(call.spent, None, call.payload, None, call.args, call.kwargs,
                              call.ended)  # fmt: skip

    owner = Owner()
    var: contextvars.ContextVar[Call | None] = current_call
    held = Call(owner, stats)

    def empty(n: int) -> int:
        started = perf_counter_ns()
        for _ in range(n):
            pass
        return perf_counter_ns() - started

    def timer_pair(n: int) -> int:
        started = perf_counter_ns()
        for _ in range(n):
            t = perf_counter()
            perf_counter() - t
        return perf_counter_ns() - started

    def floor(n: int) -> int:
        observe = floor_child.observe
        started = perf_counter_ns()
        for _ in range(n):
            t = perf_counter()
            observe(perf_counter() - t)
        return perf_counter_ns() - started

    def floor_labels(n: int) -> int:
        started = perf_counter_ns()
        for _ in range(n):
            t = perf_counter()
            floor_histogram.labels("put", "InMemorySaver").observe(perf_counter() - t)
        return perf_counter_ns() - started

    def begin_record(n: int) -> int:
        started = perf_counter_ns()
        for _ in range(n):
            stats.begin()
            stats.record(0.00002, None, 512, None, args, no_kwargs, perf_counter())
        return perf_counter_ns() - started

    def contextvar(n: int) -> int:
        started = perf_counter_ns()
        for _ in range(n):
            var.reset(var.set(held))
        return perf_counter_ns() - started

    def contextvar_get(n: int) -> int:
        started = perf_counter_ns()
        for _ in range(n):
            var.get()
        return perf_counter_ns() - started

    def whole_call(n: int) -> int:
        started = perf_counter_ns()
        for _ in range(n):
            with Call(owner, stats, args, no_kwargs):
                pass
        return perf_counter_ns() - started

    return {
        "empty loop": empty,
        "perf_counter() pair": timer_pair,
        "floor: perf_counter pair + observe (bound child)": floor,
        "floor: perf_counter pair + .labels().observe()": floor_labels,
        "stats begin + record (one lock each)": begin_record,
        "contextvar set + reset": contextvar,
        "contextvar get (serde, per dumps/loads)": contextvar_get,
        "whole Call: with-block, timer, context, record": whole_call,
    }


def measure_components(reps: int) -> dict[str, float]:
    """Median ns per step, the empty loop's own cost taken off (except for itself)."""
    blocks = component_blocks()
    samples: dict[str, list[float]] = {name: [] for name in blocks}
    gc.collect()
    for _ in range(reps):
        for name, block in blocks.items():
            samples[name].append(block(COMPONENT_CALLS) / COMPONENT_CALLS)
    medians = {name: median(values) for name, values in samples.items()}
    loop = medians["empty loop"]
    return {
        name: value if name == "empty loop" else value - loop for name, value in medians.items()
    }


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------


def hot_loop_estimate(throughput: ThroughputReport, calls: list[MicroResult]) -> float | None:
    """Wrapper microseconds per workflow predicted from the hot loops and the call counts."""
    added = {c.operation: c.added_us for c in calls}
    if not throughput.calls_per_workflow or LOCK_ROW not in added:
        return None
    total = throughput.lock_acquisitions_per_workflow * added[LOCK_ROW]
    for operation, count in throughput.calls_per_workflow.items():
        row = PRICED_BY.get(operation, operation)
        if row not in added:
            return None
        total += count * added[row]
    return total


def verdicts(throughput: ThroughputReport | None, calls: list[MicroResult]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if throughput is not None and throughput.paired_ratios:
        low, high = median_interval(throughput.paired_ratios)
        if len(throughput.paired_ratios) < MIN_PAIRS:
            outcome = "INCONCLUSIVE (too few rounds)"
        elif low >= THROUGHPUT_TARGET:
            outcome = "PASS"
        elif high < THROUGHPUT_TARGET:
            outcome = "FAIL"
        else:
            outcome = "INCONCLUSIVE"
        out["throughput"] = {
            "ratio_of_medians": throughput.ratio,
            "paired_ratio_median": median(throughput.paired_ratios),
            "interval": (low, high),
            "target_min_ratio": THROUGHPUT_TARGET,
            "outcome": outcome,
        }
    saver_calls = [c for c in calls if c.operation != LOCK_ROW]
    if saver_calls:
        worst = max(saver_calls, key=lambda c: c.added_us)
        out["added_per_call"] = {
            "worst_operation": worst.operation,
            "added_us": worst.added_us,
            "target_max_us": ADDED_US_TARGET,
            "outcome": "PASS" if worst.added_us < ADDED_US_TARGET else "FAIL",
        }
    return out


def render_throughput(t: ThroughputReport, calls: list[MicroResult]) -> list[str]:
    lines = [
        f"1. Throughput: AsyncPostgresSaver on the embedded PostgreSQL, {t.workflows} "
        f"concurrent workflows, think time 0, state {STATE_KB:g} KB,",
        f"   {t.rounds} rounds x {t.round_seconds:g} s per side, interleaved ABBA",
        "",
        f"   {'pair':<6}{'order':<9}{'raw wf/s':>9}{'ins wf/s':>9}{'ratio':>7}"
        f"{'raw CPU ms/wf':>15}{'ins CPU ms/wf':>15}{'ratio':>7}",
    ]
    for index, (r, i) in enumerate(zip(t.raw, t.instrumented, strict=True)):
        ratio = i.per_second / r.per_second if r.per_second else 0.0
        cpu = i.cpu_ms_per_workflow / r.cpu_ms_per_workflow if r.cpu_ms_per_workflow else 0.0
        order = "raw,ins" if index % 2 == 0 else "ins,raw"
        lines.append(
            f"   {index + 1:<6}{order:<9}{r.per_second:>9.1f}{i.per_second:>9.1f}{ratio:>7.3f}"
            f"{r.cpu_ms_per_workflow:>15.2f}{i.cpu_ms_per_workflow:>15.2f}{cpu:>7.3f}"
        )
    raw_cpu = median([r.cpu_ms_per_workflow for r in t.raw])
    ins_cpu = median([r.cpu_ms_per_workflow for r in t.instrumented])
    ratios, cpu_ratios = t.paired_ratios, t.paired_cpu_ratios
    added = median(t.paired_cpu_added_us)
    lines += [
        f"   {'median':<15}{t.raw_median:>9.1f}{t.instrumented_median:>9.1f}{t.ratio:>7.3f}"
        f"{raw_cpu:>15.2f}{ins_cpu:>15.2f}{ins_cpu / raw_cpu if raw_cpu else 0.0:>7.3f}",
        "",
        f"   throughput ratio, median of pairs {median(ratios):.3f}, "
        f"~95 % interval {span(median_interval(ratios), '.3f')}",
        f"   CPU per workflow ratio, median of pairs {median(cpu_ratios):.3f}, "
        f"~95 % interval {span(median_interval(cpu_ratios), '.3f')}",
        f"   failed workflows: raw {sum(r.failed for r in t.raw)}, "
        f"instrumented {sum(r.failed for r in t.instrumented)}",
        "   per workflow: "
        + ", ".join(f"{op} {count:.1f}" for op, count in t.calls_per_workflow.items())
        + f" saver calls, {t.lock_acquisitions_per_workflow:.1f} lock acquisitions",
    ]
    if t.calls:
        lines.append(
            f"   extra CPU on the instrumented side: {added:.0f} us per workflow, "
            f"{added / t.calls:.1f} us per saver call"
        )
    predicted = hot_loop_estimate(t, calls)
    if predicted is not None:
        lines.append(
            f"   the hot loops below predict {predicted:.0f} us per workflow "
            f"({predicted / (raw_cpu * 1000) if raw_cpu else 0.0:.1%} of the raw side's CPU)"
        )
    return [*lines, ""]


def render(
    env: dict[str, Any],
    throughput: ThroughputReport | None,
    calls: list[MicroResult],
    components: dict[str, float],
    verdict: dict[str, Any],
) -> str:
    code = env["code"]
    lines = [
        f"Wrapper overhead, {env['date']}, Python {env['python']}, {env['cpus']} CPUs",
        describe_code(code),
        "",
    ]
    if throughput is not None:
        lines += render_throughput(throughput, calls)
    if calls:
        lines += [
            "2. Per call over InMemorySaver, hot loops (medians of interleaved blocks; "
            "added = median of the paired differences)",
            "",
            f"   {'operation':<12}{'calls/block':>12}{'raw us':>9}{'ins us':>9}"
            f"{'added us':>10}  ~95 % interval",
        ]
        for c in calls:
            d = c.as_dict()
            lines.append(
                f"   {c.operation:<12}{c.calls_per_rep:>12}{d['raw_us']:>9.2f}"
                f"{d['instrumented_us']:>9.2f}{d['added_us']:>10.2f}  "
                f"{span(d['added_us_interval'], '.2f')}"
            )
        lines += [
            f"   ({LOCK_ROW}: asyncio.Lock against the timed lock instrument() swaps into "
            "AsyncPostgresSaver; not part of the in-memory verdict)",
            "",
        ]
    if components:
        lines += [
            "   Reference floor and the wrapper's steps (ns per call, empty loop taken off)",
            "",
        ]
        for name, ns in components.items():
            lines.append(f"   {name:<52}{ns:>8.0f}")
        lines.append("")
    if "throughput" in verdict:
        v = verdict["throughput"]
        lines.append(
            f"Verdict throughput: instrumented/raw {v['ratio_of_medians']:.3f} (ratio of medians; "
            f"median of pairs {v['paired_ratio_median']:.3f}, ~95 % interval "
            f"{span(v['interval'], '.3f')}), target >= {v['target_min_ratio']:.2f}: "
            f"{v['outcome']}"
        )
    if "added_per_call" in verdict:
        v = verdict["added_per_call"]
        lines.append(
            f"Verdict per call: worst {v['worst_operation']} +{v['added_us']:.2f} us, "
            f"target < {v['target_max_us']:g} us: {v['outcome']}"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=12, help="timed rounds per side (12)")
    parser.add_argument("--round-seconds", type=float, default=4.0, help="seconds per round (4)")
    parser.add_argument("--workflows", type=int, default=16, help="concurrent workflows (16)")
    add_data_dir(parser)
    parser.add_argument(
        "--micro-reps", type=int, default=60, help="interleaved blocks per operation (60)"
    )
    parser.add_argument(
        "--skip-throughput", action="store_true", help="only the in-memory measurements"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging("warning", stream=sys.stderr)
    env = environment(code_under_test("exporter/checkpointer/", CHECKPOINTER.glob("*.py")))
    progress = not args.json
    if progress:
        print("measuring per-call cost over InMemorySaver ...", file=sys.stderr)
    calls = measure_calls(args.micro_reps)
    components = measure_components(args.micro_reps)
    throughput: ThroughputReport | None = None
    if not args.skip_throughput:
        if progress:
            print("measuring throughput on the embedded PostgreSQL ...", file=sys.stderr)
        with tempfile.TemporaryDirectory(prefix="bench-overhead-") as scratch:
            data_dir = args.data_dir or Path(scratch) / "pgdata"
            throughput = asyncio.run(
                measure_throughput(
                    data_dir, args.rounds, args.round_seconds, args.workflows, progress
                )
            )
    verdict = verdicts(throughput, calls)
    if args.json:
        report = {
            "environment": env,
            "throughput": throughput.as_dict() if throughput is not None else None,
            "hot_loop_estimate_us_per_workflow": (
                hot_loop_estimate(throughput, calls) if throughput is not None else None
            ),
            "per_call": {c.operation: c.as_dict() for c in calls},
            "components_ns": components,
            "verdicts": verdict,
        }
        print(json.dumps(report, indent=2))
    else:
        print(render(env, throughput, calls, components, verdict))
    return 0


if __name__ == "__main__":
    sys.exit(main())
