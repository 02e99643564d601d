"""What hearing every graph run's end costs an application, measured against not hearing it.

The tracker learns that a run ended through a LangChain callback handler registered with
the process-wide configure hook (``exporter.workflows.runs``): once registered it sees every
chain event of the process and cannot be taken out again, so the two sides run in separate
child processes, alternated ABBA. Each child runs the workload graph on the in-memory saver
(no database, so that the graph's own work is all there is to slow down) with think time 0
for a fixed number of workflows, and reports workflows per second; with ``--postgres``, on
``AsyncPostgresSaver`` and the embedded PostgreSQL instead, as an application runs. The "on"
child registers the watcher with a listener subscribed, as a tracking application does.

Ratios come with a distribution-free ~95 % interval for the median of the per-pair ratios.
The exit status is 0 whatever the verdict: a measurement, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any
from uuid import UUID

from benchlib import (
    ROOT,
    add_data_dir,
    code_under_test,
    describe_code,
    environment,
    median_interval,
    span,
)
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from exporter.embedded import embedded_database
from exporter.workload import compile_workflow, initial_state

RATIO_TARGET = 1.05
SAVERS = {False: "InMemorySaver", True: "AsyncPostgresSaver (embedded PostgreSQL)"}


class Listener:
    """Counts what the watcher forwards, as the tracker's cheap enqueue would."""

    def __init__(self) -> None:
        self.began = self.ended = 0

    def run_began(self, thread_id: str, run_id: UUID) -> None:
        self.began += 1

    def run_ended(self, thread_id: str, run_id: UUID, raised: str | None) -> None:
        self.ended += 1


async def child(watched: bool, workflows: int, concurrency: int, dsn: str | None) -> dict[str, Any]:
    listener = Listener()
    if watched:
        from exporter.workflows.runs import watch

        watch(listener)
    async with AsyncExitStack() as stack:
        saver: Any
        if dsn is None:
            saver = InMemorySaver()
        else:
            pool: AsyncConnectionPool[AsyncConnection[dict[str, Any]]] = AsyncConnectionPool(
                dsn, min_size=concurrency, max_size=concurrency, open=False,
                kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
            )  # fmt: skip
            await pool.open()
            stack.push_async_callback(pool.close)
            saver = AsyncPostgresSaver(conn=pool)
        return await measure(compile_workflow(saver, 0.0, 4.0), workflows, concurrency, listener)


async def measure(
    graph: Any, workflows: int, concurrency: int, listener: Listener
) -> dict[str, Any]:
    per_worker = workflows // concurrency

    async def work() -> None:
        for _ in range(per_worker):
            thread = str(uuid.uuid4())
            await graph.ainvoke(initial_state(thread), {"configurable": {"thread_id": thread}})

    await work()  # warm-up: imports, first compilation of the channels
    started = time.perf_counter()
    await asyncio.gather(*(work() for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    done = per_worker * concurrency
    return {"per_s": done / seconds, "runs_heard": listener.ended, "workflows": done}


def run_child(watched: bool, workflows: int, concurrency: int, dsn: str | None) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", "on" if watched else "off",
         "--workflows", str(workflows), "--concurrency", str(concurrency),
         *(("--dsn", dsn) if dsn else ())],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8, help="ABBA pairs (8)")
    parser.add_argument("--workflows", type=int, default=400, help="workflows per child (400)")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent workflows (8)")
    parser.add_argument(
        "--postgres", action="store_true", help="AsyncPostgresSaver on the embedded PostgreSQL"
    )
    add_data_dir(parser)
    parser.add_argument("--child", choices=["on", "off"], help=argparse.SUPPRESS)
    parser.add_argument("--dsn", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        on = args.child == "on"
        result = asyncio.run(child(on, args.workflows, args.concurrency, args.dsn))
        print(json.dumps(result))
        return
    if not args.postgres:
        report(args, None)
        return
    asyncio.run(on_embedded(args))


async def on_embedded(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        data_dir = args.data_dir or Path(scratch) / "pgdata"
        async with embedded_database(data_dir) as url:
            connect = AsyncConnection.connect(url, autocommit=True, row_factory=dict_row)
            async with await connect as conn:
                await AsyncPostgresSaver(conn).setup()
            await asyncio.to_thread(report, args, url)


def report(args: argparse.Namespace, dsn: str | None) -> None:
    code = code_under_test("exporter/workflows/runs.py", [ROOT / "exporter/workflows/runs.py"])
    env = environment(code)
    pairs = []
    for index in range(args.rounds):
        order = (False, True) if index % 2 == 0 else (True, False)
        got = {w: run_child(w, args.workflows, args.concurrency, dsn) for w in order}
        pairs.append((got[False], got[True]))
    print(f"Run-end watcher cost, {env['date']}, Python {env['python']}, {env['cpus']} CPUs")
    print(describe_code(code))
    print(
        f"\nthe workload graph on {SAVERS[dsn is not None]}, {args.workflows} workflows per child, "
        f"{args.concurrency} concurrent, think time 0, {args.rounds} ABBA pairs of processes\n"
    )
    print(f"   {'pair':<6}{'off wf/s':>10}{'on wf/s':>10}{'ratio off/on':>14}{'runs heard':>12}")
    ratios = []
    for number, (off, on) in enumerate(pairs, 1):
        ratio = off["per_s"] / on["per_s"]
        ratios.append(ratio)
        print(
            f"   {number:<6}{off['per_s']:>10.1f}{on['per_s']:>10.1f}{ratio:>14.3f}"
            f"{on['runs_heard']:>12}"
        )
    ratios.sort()
    middle = ratios[len(ratios) // 2]
    interval = median_interval(ratios)
    verdict = "within" if middle <= RATIO_TARGET else "over"
    print(
        f"\n   slowdown off/on, median of pairs {middle:.3f}, ~95 % interval "
        f"{span(interval, '.3f')}: {verdict} the {RATIO_TARGET:g} target"
    )


if __name__ == "__main__":
    main()
