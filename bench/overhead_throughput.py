"""What the instrumented wrapper costs in throughput, against the raw saver in one run.

The workload graph (no think time: a stress test) on the embedded PostgreSQL,
raw ``AsyncPostgresSaver`` against the instrumented one, each on a pool of its
own; rounds alternate ABBA, so that the noise of a shared machine lands on
both sides alike. The Python process's CPU time per workflow is taken too:
the graph keeps one core busy, so the wrapper's cost shows there with less
noise than in wall-clock throughput. The ratio comes with a distribution-free
~95 % interval for the median of the per-pair ratios. ``bench/overhead.py``
runs this and ``bench/overhead_calls.py`` together, and predicts the one from
the other. The exit status is 0 whatever the verdict says: this is a
measurement, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter, process_time
from typing import Any, Final

from benchlib import (
    MIN_PAIRS,
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
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.graph.state import CompiledStateGraph
from prometheus_client import CollectorRegistry

from exporter.checkpointer.instrumented import instrument
from exporter.log import configure_logging
from exporter.workload import compile_workflow, initial_state

CHECKPOINTER: Final = ROOT / "exporter" / "checkpointer"
THROUGHPUT_TARGET: Final = 0.98  # instrumented/raw: at most 2 % slower
THINK_TIME: Final = 0.0
STATE_KB: Final = 4.0
# A schema of the benchmark's own, dropped at start: every run begins from empty tables.
SCHEMA: Final = "bench_overhead"
# The key lock acquisitions are counted under, beside the operations.
LOCKS: Final = "lock acquisitions"

Graph = CompiledStateGraph[Any, Any, Any, Any]


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
    """Operations by name, and lock acquisitions under :data:`LOCKS`, from the registry."""
    counts: dict[str, float] = {}
    for metric in registry.collect():
        for sample in metric.samples:
            if sample.name == "langgraph_checkpointer_operations_total":
                key = sample.labels["operation"]
            elif sample.name == "langgraph_checkpointer_lock_wait_seconds_count":
                key = LOCKS
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
        report.lock_acquisitions_per_workflow = per_workflow.pop(LOCKS, 0.0)
        report.calls_per_workflow = {k: v for k, v in per_workflow.items() if v}
    return report


def verdict(throughput: ThroughputReport) -> dict[str, Any]:
    """PASS when the whole interval of the paired ratios is at or above the target."""
    low, high = median_interval(throughput.paired_ratios)
    if len(throughput.paired_ratios) < MIN_PAIRS:
        outcome = "INCONCLUSIVE (too few rounds)"
    elif low >= THROUGHPUT_TARGET:
        outcome = "PASS"
    elif high < THROUGHPUT_TARGET:
        outcome = "FAIL"
    else:
        outcome = "INCONCLUSIVE"
    return {
        "ratio_of_medians": throughput.ratio,
        "paired_ratio_median": median(throughput.paired_ratios),
        "interval": (low, high),
        "target_min_ratio": THROUGHPUT_TARGET,
        "outcome": outcome,
    }


def verdict_line(v: dict[str, Any]) -> str:
    return (
        f"Verdict throughput: instrumented/raw {v['ratio_of_medians']:.3f} (ratio of medians; "
        f"median of pairs {v['paired_ratio_median']:.3f}, ~95 % interval "
        f"{span(v['interval'], '.3f')}), target >= {v['target_min_ratio']:.2f}: {v['outcome']}"
    )


def render_throughput(t: ThroughputReport, predicted: float | None = None) -> list[str]:
    """The throughput table; ``predicted`` is what the hot loops predict per workflow (us)."""
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
    if predicted is not None:
        lines.append(
            f"   the hot loops below predict {predicted:.0f} us per workflow "
            f"({predicted / (raw_cpu * 1000) if raw_cpu else 0.0:.1%} of the raw side's CPU)"
        )
    return [*lines, ""]


def add_throughput_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, default=12, help="timed rounds per side (12)")
    parser.add_argument("--round-seconds", type=float, default=4.0, help="seconds per round (4)")
    parser.add_argument("--workflows", type=int, default=16, help="concurrent workflows (16)")
    add_data_dir(parser)


def run_throughput(args: argparse.Namespace, progress: bool) -> ThroughputReport:
    """The measurement with the options :func:`add_throughput_options` adds."""
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as scratch:
        data_dir = args.data_dir or Path(scratch) / "pgdata"
        return asyncio.run(
            measure_throughput(data_dir, args.rounds, args.round_seconds, args.workflows, progress)
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_throughput_options(parser)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    configure_logging("warning", stream=sys.stderr)
    env = environment(code_under_test("exporter/checkpointer/", CHECKPOINTER.glob("*.py")))
    throughput = run_throughput(args, not args.json)
    if args.json:
        print(json.dumps({"environment": env, **throughput.as_dict()}, indent=2))
        return 0
    lines = [
        f"Wrapper throughput, {env['date']}, Python {env['python']}, {env['cpus']} CPUs",
        describe_code(env["code"]),
        "",
        *render_throughput(throughput),
    ]
    if throughput.paired_ratios:
        lines.append(verdict_line(verdict(throughput)))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
