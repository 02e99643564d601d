"""What the instrumented wrapper adds to one call: microseconds over ``InMemorySaver``.

Hot loops of direct calls (``put``, ``get_tuple``, ``put_writes``, ``aput``,
``aget_tuple``) with a real checkpoint of the workload graph, raw against
instrumented in interleaved blocks; the timed lock ``instrument()`` puts into
``AsyncPostgresSaver`` against a plain ``asyncio.Lock``. The added time comes
with a distribution-free ~95 % interval for the median of the paired
differences; ``bench/overhead_steps.py`` prices the floor of any timing and
the wrapper's steps one by one. The exit status is 0 whatever the verdict
says: this is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import types
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from time import perf_counter_ns
from typing import Any, Final

from benchlib import code_under_test, describe_code, environment, median, median_interval, span
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver, ChannelVersions, Checkpoint
from langgraph.checkpoint.memory import InMemorySaver
from overhead_throughput import CHECKPOINTER, STATE_KB, THINK_TIME
from prometheus_client import CollectorRegistry

from exporter.checkpointer.instrumented import instrument
from exporter.checkpointer.locks import time_lock
from exporter.checkpointer.metrics import saver_metrics
from exporter.log import configure_logging
from exporter.workload import compile_workflow, initial_state

ADDED_US_TARGET: Final = 5.0  # microseconds the wrapper may add to one call
# Each timed block of the micro-benchmark lasts about this long: far above the timer's
# resolution, yet short enough that many interleaved blocks fit and a burst of noise
# from a neighbour spoils only a few of them, which the median then ignores.
BLOCK_NS: Final = 5_000_000
MAX_CALLS: Final = 200_000
LOCK_ROW: Final = "saver lock"


Block = Callable[[int], int]
"""Runs ``n`` calls and returns the nanoseconds they took."""
Reset = Callable[[], None]
Blocks = dict[str, tuple[Block, Reset]]
"""Each operation's timed block on one side, with the untimed reset to run before it."""


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
    stores: Sequence[InMemorySaver],
    inputs: Inputs,
    loop: asyncio.AbstractEventLoop,
) -> Blocks:
    """Each operation's timed block on ``saver``, with the untimed reset to run before it.

    ``stores`` are the ``InMemorySaver`` instances that may hold the data (``saver`` itself,
    the one it wraps, or those a router sends threads to).
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
        for store in stores:
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
    """One operation's interleaved blocks; ``instrumented_ns`` holds the side compared with
    the raw one, whatever wraps it (the instrumented proxy, a router)."""

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


def interleave(raw: Blocks, other: Blocks, reps: int) -> list[MicroResult]:
    """``reps`` blocks of each operation on each side, alternating which side goes first."""
    results: list[MicroResult] = []
    for operation in raw:
        gc.collect()
        n = calls_per_block(*raw[operation])
        result = MicroResult(operation, n, [], [])
        for side in (raw, other):  # warm both, untimed
            timed(*side[operation], n // 4 or 1)
        for rep in range(reps):
            for side in (raw, other) if rep % 2 == 0 else (other, raw):
                per_call = timed(*side[operation], n)
                (result.raw_ns if side is raw else result.instrumented_ns).append(per_call)
        results.append(result)
    return results


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
        raw = saver_blocks(raw_store, [raw_store], inputs, loop)
        instrumented = saver_blocks(wrapped, [wrapped_store], inputs, loop)
        raw[LOCK_ROW] = (lock_block(asyncio.Lock(), loop), _nothing)
        instrumented[LOCK_ROW] = (lock_block(holder.lock, loop), _nothing)
        return interleave(raw, instrumented, reps)
    finally:
        loop.close()


def verdict(calls: list[MicroResult]) -> dict[str, Any] | None:
    """The worst saver operation's added time against the target (the lock row aside)."""
    saver_calls = [c for c in calls if c.operation != LOCK_ROW]
    if not saver_calls:
        return None
    worst = max(saver_calls, key=lambda c: c.added_us)
    return {
        "worst_operation": worst.operation,
        "added_us": worst.added_us,
        "target_max_us": ADDED_US_TARGET,
        "outcome": "PASS" if worst.added_us < ADDED_US_TARGET else "FAIL",
    }


def verdict_line(v: dict[str, Any]) -> str:
    return (
        f"Verdict per call: worst {v['worst_operation']} +{v['added_us']:.2f} us, "
        f"target < {v['target_max_us']:g} us: {v['outcome']}"
    )


def call_rows(calls: list[MicroResult], sides: tuple[str, str] = ("raw", "ins")) -> list[str]:
    """The per-operation table, its two sides' columns headed ``sides``."""
    heads = [f"{side} us" for side in sides]
    one, two = (max(9, len(head) + 1) for head in heads)
    lines = [
        f"   {'operation':<12}{'calls/block':>12}{heads[0]:>{one}}{heads[1]:>{two}}"
        f"{'added us':>10}  ~95 % interval",
    ]
    for c in calls:
        d = c.as_dict()
        lines.append(
            f"   {c.operation:<12}{c.calls_per_rep:>12}{d['raw_us']:>{one}.2f}"
            f"{d['instrumented_us']:>{two}.2f}{d['added_us']:>10.2f}  "
            f"{span(d['added_us_interval'], '.2f')}"
        )
    return lines


def render_calls(calls: list[MicroResult]) -> list[str]:
    return [
        "2. Per call over InMemorySaver, hot loops (medians of interleaved blocks; "
        "added = median of the paired differences)",
        "",
        *call_rows(calls),
        f"   ({LOCK_ROW}: asyncio.Lock against the timed lock instrument() swaps into "
        "AsyncPostgresSaver; not part of the in-memory verdict)",
        "",
    ]


def add_calls_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--micro-reps", type=int, default=60, help="interleaved blocks per operation (60)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_calls_options(parser)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    configure_logging("warning", stream=sys.stderr)
    env = environment(code_under_test("exporter/checkpointer/", CHECKPOINTER.glob("*.py")))
    calls = measure_calls(args.micro_reps)
    v = verdict(calls)
    if args.json:
        report = {
            "environment": env,
            "per_call": {c.operation: c.as_dict() for c in calls},
            "verdict": v,
        }
        print(json.dumps(report, indent=2))
        return 0
    lines = [
        f"Wrapper cost per call, {env['date']}, Python {env['python']}, {env['cpus']} CPUs",
        describe_code(env["code"]),
        "",
        *render_calls(calls),
    ]
    if v is not None:
        lines.append(verdict_line(v))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
