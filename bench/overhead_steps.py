"""The floor of any timing at all, and the instrumented wrapper's steps one by one.

Loops of a ``perf_counter()`` pair, that pair plus one histogram observation
(through a bound child and through ``.labels()``: what the wrapper's timing
would cost with prometheus_client on the hot path), and each step the wrapper
takes per call: its stats' begin and record, the context variable, a whole
``Call``. Nanoseconds per call, medians over interleaved blocks, the empty
loop's own cost taken off. The yardstick for ``bench/overhead_calls.py``'s
added microseconds. The exit status is 0: this is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import contextvars
import gc
import json
import sys
from collections.abc import Callable, Sequence
from time import perf_counter, perf_counter_ns
from typing import Any, Final

from benchlib import code_under_test, describe_code, environment, median
from overhead_throughput import CHECKPOINTER
from prometheus_client import CollectorRegistry, Histogram

from exporter.checkpointer.call import Call, current_call
from exporter.checkpointer.metrics import DURATION_BUCKETS, saver_metrics
from exporter.log import configure_logging

COMPONENT_CALLS: Final = 20_000

Block = Callable[[int], int]
"""Runs ``n`` calls and returns the nanoseconds they took."""


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


def render_steps(components: dict[str, float]) -> list[str]:
    return [
        "   Reference floor and the wrapper's steps (ns per call, empty loop taken off)",
        "",
        *(f"   {name:<52}{ns:>8.0f}" for name, ns in components.items()),
        "",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--micro-reps", type=int, default=60, help="interleaved blocks (60)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    configure_logging("warning", stream=sys.stderr)
    env = environment(code_under_test("exporter/checkpointer/", CHECKPOINTER.glob("*.py")))
    components = measure_components(args.micro_reps)
    if args.json:
        print(json.dumps({"environment": env, "components_ns": components}, indent=2))
        return 0
    header = [
        f"The wrapper's steps, {env['date']}, Python {env['python']}, {env['cpus']} CPUs",
        describe_code(env["code"]),
        "",
    ]
    print("\n".join([*header, *render_steps(components)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
