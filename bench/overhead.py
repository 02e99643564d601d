"""What the instrumented wrapper costs, measured against the raw saver in one run.

Both of its benchmarks, each taken side by side in interleaved rounds so that
the noise of a shared machine lands on both sides alike:

1. Throughput of the workload graph on the embedded PostgreSQL, raw
   ``AsyncPostgresSaver`` against the instrumented one
   (``bench/overhead_throughput.py``).
2. Microseconds added per direct call over ``InMemorySaver`` in hot loops
   (``bench/overhead_calls.py``), next to the floor of any timing at all and the
   wrapper's steps one by one (``bench/overhead_steps.py``).

Run together, the hot loops and the saver calls counted per workflow predict
the CPU the wrapper adds to a workflow, next to what the throughput rounds
measured. Verdicts are printed, but the exit status is 0 whatever they say:
this is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any, Final

from benchlib import code_under_test, describe_code, environment
from overhead_calls import LOCK_ROW, MicroResult, add_calls_options, measure_calls, render_calls
from overhead_calls import verdict as calls_verdict
from overhead_calls import verdict_line as calls_verdict_line
from overhead_steps import measure_components, render_steps
from overhead_throughput import (
    CHECKPOINTER,
    ThroughputReport,
    add_throughput_options,
    render_throughput,
    run_throughput,
)
from overhead_throughput import verdict as throughput_verdict
from overhead_throughput import verdict_line as throughput_verdict_line

from exporter.log import configure_logging

# Saver operation (as counted on the PostgreSQL side) -> the in-memory row that prices it.
PRICED_BY: Final = {"put": "aput", "get_tuple": "aget_tuple", "put_writes": "put_writes"}


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_throughput_options(parser)
    add_calls_options(parser)
    parser.add_argument(
        "--skip-throughput", action="store_true", help="only the in-memory measurements"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
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
        throughput = run_throughput(args, progress)
    predicted = hot_loop_estimate(throughput, calls) if throughput is not None else None
    verdicts: dict[str, Any] = {}
    if throughput is not None and throughput.paired_ratios:
        verdicts["throughput"] = throughput_verdict(throughput)
    if (per_call := calls_verdict(calls)) is not None:
        verdicts["added_per_call"] = per_call
    if args.json:
        report = {
            "environment": env,
            "throughput": throughput.as_dict() if throughput is not None else None,
            "hot_loop_estimate_us_per_workflow": predicted,
            "per_call": {c.operation: c.as_dict() for c in calls},
            "components_ns": components,
            "verdicts": verdicts,
        }
        print(json.dumps(report, indent=2))
        return 0
    lines = [
        f"Wrapper overhead, {env['date']}, Python {env['python']}, {env['cpus']} CPUs",
        describe_code(env["code"]),
        "",
    ]
    if throughput is not None:
        lines += render_throughput(throughput, predicted)
    lines += [*render_calls(calls), *render_steps(components)]
    if "throughput" in verdicts:
        lines.append(throughput_verdict_line(verdicts["throughput"]))
    if "added_per_call" in verdicts:
        lines.append(calls_verdict_line(verdicts["added_per_call"]))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
