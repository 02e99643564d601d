"""What workflow tracking costs the checkpoint path, measured against tracking off in one run.

Two instrumented ``AsyncPostgresSaver`` on the embedded PostgreSQL, in one
schema, each on a pool of its own; one feeds a ``WorkflowTracker`` flushing at
the default interval, the other feeds none. Rounds alternate ABBA so that the
noise of a shared machine lands on both sides alike:

1. Save latency: concurrent workers call ``aput`` through the instrumented
   saver with the workload graph's final checkpoint (a fresh id each time), each
   call timed around the ``await``, so the tracker's notification is inside it.
   p50, p95 and p99 per side, and the per-round ratio of p95s.
2. Whole-workflow throughput: the workload graph (no think time), as in
   ``bench/overhead_throughput.py``.

Ratios come with a distribution-free ~95 % interval for the median of the
per-pair ratios. The exit status is 0 whatever the verdict: a measurement, not a test.
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
from time import perf_counter
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
from langgraph.checkpoint.base.id import uuid6
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from overhead_calls import Inputs, realistic_inputs
from overhead_throughput import Round, run_round
from prometheus_client import CollectorRegistry

from exporter.checkpointer.instrumented import InstrumentedSaver, wrap_saver
from exporter.checkpointer.metrics import saver_metrics
from exporter.log import configure_logging
from exporter.target import Target
from exporter.workflows.tracker import WorkflowTracker
from exporter.workload import compile_workflow

SOURCES: Final = (
    ROOT / "exporter" / "workflows" / "tracker.py",
    *(ROOT / "exporter" / "checkpointer").glob("*.py"),
)
P95_TARGET: Final = 1.05  # tracking on / off: save p95 at most 5 % higher
THINK_TIME: Final = 0.0
STATE_KB: Final = 4.0
# A schema of the benchmark's own, dropped at start: every run begins from empty tables.
SCHEMA: Final = "bench_tracking"
MIN_PAIRS: Final = 6
SIDES: Final = ("off", "on")


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: a latency some call actually took."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))]


@dataclass(slots=True)
class SaveRound:
    side: str
    index: int
    seconds: list[float] = field(default_factory=list)

    def p(self, q: float) -> float:
        return percentile(self.seconds, q)


@dataclass(slots=True)
class Report:
    workers: int
    rounds: int
    save_seconds: float
    round_seconds: float
    saves: dict[str, list[SaveRound]] = field(default_factory=lambda: {s: [] for s in SIDES})
    workflows: dict[str, list[Round]] = field(default_factory=lambda: {s: [] for s in SIDES})
    tracker: dict[str, float] = field(default_factory=dict)

    def pooled(self, side: str) -> list[float]:
        return [s for r in self.saves[side] for s in r.seconds]

    @property
    def p95_ratios(self) -> list[float]:
        pairs = zip(self.saves["off"], self.saves["on"], strict=True)
        return [on.p(0.95) / off.p(0.95) for off, on in pairs if off.seconds and on.seconds]

    @property
    def throughput_ratios(self) -> list[float]:
        pairs = zip(self.workflows["off"], self.workflows["on"], strict=True)
        return [on.per_second / off.per_second for off, on in pairs if off.completed]

    def verdict(self) -> str:
        ratios = self.p95_ratios
        low, high = median_interval(ratios)
        if len(ratios) < MIN_PAIRS:
            return "INCONCLUSIVE (too few rounds)"
        if high < P95_TARGET:
            return "PASS"
        if low >= P95_TARGET:
            return "FAIL"
        return "INCONCLUSIVE"

    def as_dict(self) -> dict[str, Any]:
        return {
            "workers": self.workers,
            "rounds_per_side": self.rounds,
            "save_seconds": self.save_seconds,
            "round_seconds": self.round_seconds,
            "save_ms": {
                side: {
                    "calls": len(self.pooled(side)),
                    **{
                        f"p{int(q * 100)}": percentile(self.pooled(side), q) * 1000
                        for q in (0.5, 0.95, 0.99)
                    },
                    "p95_per_round": [r.p(0.95) * 1000 for r in self.saves[side]],
                }
                for side in SIDES
            },
            "p95_ratio_median": median(self.p95_ratios),
            "p95_ratio_interval": median_interval(self.p95_ratios),
            "workflows_per_s": {
                side: [r.per_second for r in self.workflows[side]] for side in SIDES
            },
            "throughput_ratio_median": median(self.throughput_ratios),
            "throughput_ratio_interval": median_interval(self.throughput_ratios),
            "failed_workflows": {
                side: sum(r.failed for r in self.workflows[side]) for side in SIDES
            },
            "tracker": self.tracker,
            "target_max_p95_ratio": P95_TARGET,
            "outcome": self.verdict(),
        }


async def save_round(
    saver: InstrumentedSaver, inputs: Inputs, side: str, index: int, seconds: float, workers: int
) -> SaveRound:
    """``workers`` loops of ``aput`` for ``seconds``, each on a thread of its own."""
    gc.collect()
    result = SaveRound(side, index)
    deadline = perf_counter() + seconds

    async def worker(number: int) -> None:
        config: Any = {"configurable": {"thread_id": f"{side}-{index}-{number}-{uuid.uuid4().hex}",
                                        "checkpoint_ns": ""}}  # fmt: skip
        while perf_counter() < deadline:
            checkpoint: Any = {**inputs.checkpoint, "id": str(uuid6())}
            started = perf_counter()
            config = await saver.aput(config, checkpoint, inputs.metadata, inputs.versions)
            result.seconds.append(perf_counter() - started)

    await asyncio.gather(*(worker(n) for n in range(workers)))
    return result


@asynccontextmanager
async def savers(
    data_dir: Path,
) -> AsyncIterator[tuple[dict[str, InstrumentedSaver], CollectorRegistry]]:
    """Tracking off and on, one schema, a pool each; the tracker's registry is returned."""
    async with paired_pools(data_dir, SCHEMA) as (url, settings, off_pool, on_pool):
        registry = CollectorRegistry()
        tracker = WorkflowTracker(
            Target.of(url, settings),
            flush_interval=settings.tracking_flush_interval,
            deadline=settings.connect_timeout + settings.collector_timeout,
            registry=registry,
        )
        async with tracker:
            off = wrap_saver(
                AsyncPostgresSaver(conn=off_pool),
                saver_metrics(CollectorRegistry()),
                None,
                None,
            )
            on = wrap_saver(
                AsyncPostgresSaver(conn=on_pool),
                saver_metrics(registry),
                None,
                None,
                tracker,
            )
            yield {"off": off, "on": on}, registry


def tracker_figures(registry: CollectorRegistry) -> dict[str, float]:
    figures: dict[str, float] = {}
    for metric in registry.collect():
        for sample in metric.samples:
            if not sample.name.startswith("langgraph_checkpointer_tracking_"):
                continue
            name = sample.name.removeprefix("langgraph_checkpointer_tracking_")
            if name.endswith("_bucket") or name.endswith("_created"):
                continue
            key = name + "".join(f"{{{v}}}" for v in sample.labels.values())
            if sample.value or not sample.labels:
                figures[key] = sample.value
    return figures


async def measure(
    data_dir: Path,
    inputs: Inputs,
    rounds: int,
    save_seconds: float,
    round_seconds: float,
    workers: int,
    progress: bool,
) -> Report:
    report = Report(workers, rounds, save_seconds, round_seconds)
    async with savers(data_dir) as (sides, registry):
        graphs = {
            side: compile_workflow(saver, THINK_TIME, STATE_KB) for side, saver in sides.items()
        }
        for side in SIDES:  # warm connections, prepared statements and caches, untimed
            await save_round(sides[side], inputs, side, -1, min(1.0, save_seconds), workers)
            await run_round(graphs[side], side, -1, min(1.0, round_seconds), workers)
        for index in range(rounds):
            order = SIDES if index % 2 == 0 else SIDES[::-1]
            for side in order:
                saved = await save_round(sides[side], inputs, side, index, save_seconds, workers)
                report.saves[side].append(saved)
                if progress:
                    print(
                        f"  round {index + 1}/{rounds} save {side:<3} {len(saved.seconds):6d} calls"
                        f"  p95 {saved.p(0.95) * 1000:6.2f} ms",
                        file=sys.stderr,
                    )
            for side in order[::-1]:
                done = await run_round(graphs[side], side, index, round_seconds, workers)
                report.workflows[side].append(done)
                if progress:
                    print(
                        f"  round {index + 1}/{rounds} flow {side:<3} {done.per_second:7.1f} wf/s",
                        file=sys.stderr,
                    )
        tracker = sides["on"].tracker
        assert tracker is not None
        await tracker.flush()
        report.tracker = tracker_figures(registry)
    return report


def render(env: dict[str, Any], report: Report) -> str:
    d = report.as_dict()
    lines = [
        f"Workflow tracking cost, {env['date']}, Python {env['python']}, {env['cpus']} CPUs",
        describe_code(env["code"]),
        "",
        f"1. Save latency: aput through the instrumented AsyncPostgresSaver, {report.workers} "
        f"concurrent workers, state {STATE_KB:g} KB,",
        f"   {report.rounds} rounds x {report.save_seconds:g} s per side, interleaved ABBA",
        "",
        f"   {'pair':<6}{'off p95 ms':>11}{'on p95 ms':>11}{'ratio':>8}",
    ]
    for index, (off, on) in enumerate(zip(report.saves["off"], report.saves["on"], strict=True)):
        ratio = on.p(0.95) / off.p(0.95) if off.seconds else 0.0
        lines.append(
            f"   {index + 1:<6}{off.p(0.95) * 1000:>11.2f}{on.p(0.95) * 1000:>11.2f}{ratio:>8.3f}"
        )
    lines += [
        "",
        f"   {'side':<6}{'calls':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}",
    ]
    for side in SIDES:
        s = d["save_ms"][side]
        lines.append(f"   {side:<6}{s['calls']:>8}{s['p50']:>9.2f}{s['p95']:>9.2f}{s['p99']:>9.2f}")
    lines += [
        "",
        f"   p95 ratio on/off, median of pairs {d['p95_ratio_median']:.3f}, "
        f"~95 % interval {span(d['p95_ratio_interval'], '.3f')}",
        "",
        f"2. Throughput: the workload graph, {report.workers} concurrent workflows, think time 0,",
        f"   {report.rounds} rounds x {report.round_seconds:g} s per side, interleaved ABBA",
        "",
        f"   {'pair':<6}{'off wf/s':>9}{'on wf/s':>9}{'ratio':>8}",
    ]
    flows = zip(report.workflows["off"], report.workflows["on"], strict=True)
    for index, (untracked, tracked) in enumerate(flows):
        ratio = tracked.per_second / untracked.per_second if untracked.per_second else 0.0
        lines.append(
            f"   {index + 1:<6}{untracked.per_second:>9.1f}{tracked.per_second:>9.1f}{ratio:>8.3f}"
        )
    lines += [
        "",
        f"   throughput ratio on/off, median of pairs {d['throughput_ratio_median']:.3f}, "
        f"~95 % interval {span(d['throughput_ratio_interval'], '.3f')}",
        f"   failed workflows: off {d['failed_workflows']['off']}, "
        f"on {d['failed_workflows']['on']}",
        "",
        "3. The tracker over the whole run (tracking_* metrics, non-zero or unlabelled)",
        "",
    ]
    for key, value in report.tracker.items():
        lines.append(f"   {key:<48}{value:>12.6g}")
    lines += [
        "",
        f"Verdict save p95: on/off {d['p95_ratio_median']:.3f} (median of pairs, ~95 % interval "
        f"{span(d['p95_ratio_interval'], '.3f')}), target < {P95_TARGET:.2f}: {d['outcome']}",
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=12, help="timed rounds per side (12)")
    parser.add_argument(
        "--save-seconds", type=float, default=2.0, help="seconds per save round (2)"
    )
    parser.add_argument(
        "--round-seconds", type=float, default=3.0, help="seconds per workflow round (3)"
    )
    parser.add_argument("--workers", type=int, default=8, help="concurrent workers (8)")
    add_data_dir(parser)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging("warning", stream=sys.stderr)
    env = environment(code_under_test("exporter/workflows/tracker.py + checkpointer/", SOURCES))
    inputs = realistic_inputs()
    with tempfile.TemporaryDirectory(prefix="bench-tracking-") as scratch:
        data_dir = args.data_dir or Path(scratch) / "pgdata"
        report = asyncio.run(
            measure(
                data_dir,
                inputs,
                args.rounds,
                args.save_seconds,
                args.round_seconds,
                args.workers,
                not args.json,
            )
        )
    if args.json:
        print(json.dumps({"environment": env, **report.as_dict()}, indent=2))
    else:
        print(render(env, report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
