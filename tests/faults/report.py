"""Run the fault scenarios once and write RELIABILITY.md: ``python -m tests.faults.report``.

The same scenarios as ``tests/faults/test_*.py``, on a fresh Debian PostgreSQL
cluster (``/usr/lib/postgresql/NN/bin``) and ``promtool`` from PATH; the
figures are this machine's, on the day the command ran.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from exporter.log import configure_logging
from tests.debian_postgres import find_bindir
from tests.faults.cluster import stoppable_cluster
from tests.faults.scenarios import (
    ANSWER_MARGIN,
    COLLECTOR_TIMEOUT,
    PHASES,
    POLL_INTERVAL,
    SCRAPE_INTERVAL,
    WORKFLOWS,
    OutageResult,
    PoolExhaustionResult,
    RestartResult,
    SlowDatabaseResult,
    database_outage,
    pool_exhaustion,
    sidecar_restart,
    slow_database,
)
from tests.postgres import fresh_database

COMMAND = "python -m tests.faults.report"
DEFAULT_OUTPUT = Path(__file__).resolve().parents[2] / "RELIABILITY.md"


def _s(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds:.2f} s"


def outage_section(r: OutageResult) -> list[str]:
    lines = [
        "## 1. PostgreSQL stopped hard under load",
        "",
        f"{WORKFLOWS} concurrent workflows (`exporter.workload`, tracked) run through "
        "`build_checkpointer` with the sidecar in the same process. The server is stopped with "
        f"`pg_ctl stop -m immediate` and started again on the same data directory "
        f"({r.outage_seconds:.2f} s without a server; crash recovery and start took "
        f"{r.restart_seconds:.2f} s). `/metrics`, `/api/health/checkpointer` and `/healthz` are "
        f"asked every {POLL_INTERVAL * 1000:.0f} ms from another thread, without waiting for "
        "earlier answers.",
        "",
        "| Endpoint | Asked during the outage | Answered | Slowest answer | Statuses |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for f in r.during:
        statuses = ", ".join("none" if s is None else str(s) for s in f.statuses)
        lines.append(
            f"| `{f.path}` | {f.asked} | {f.answered} | {f.max_seconds:.3f} s | {statuses} |"
        )
    whole = ", ".join(
        f"`{f.path}` {f.answered}/{f.asked} answered, slowest {f.max_seconds:.3f} s"
        for f in r.whole
    )
    total = sum(r.attempts.values())
    failed = sum(r.errors.values())
    ops = ", ".join(
        f"{op} {n} ({r.errors.get(op, 0)} failed)" for op, n in sorted(r.attempts.items())
    )
    lines += [
        "",
        f"- Whole run, before, during and after: {whole}.",
        f"- `langgraph_checkpointer_up` during the outage: {_values(r.up_values_during)}; "
        f"1 again {_s(r.up_again_after)} after the server was back.",
        f"- Health during the outage: {', '.join(r.health_during)}; connected again with no "
        f"cause but leftover data {_s(r.recovered_after)} after; `healthy` "
        f"{_s(r.healthy_again_after)} after. The sidecar never exited or restarted.",
        f"- Operations the application made: {total} ({failed} failed): {ops}. The exporter's "
        "`operations_total` and `operation_errors_total` per operation equal the application's "
        f"own ledger: {'yes' if not r.counter_mismatches else '; '.join(r.counter_mismatches)}.",
        f"- Workflows: {r.workflows_completed} completed, {r.workflows_failed} failed "
        f"({_counts(r.workflow_failures)}).",
        f"- Checkpoints whose save succeeded, read back after recovery through a plain "
        f"`AsyncPostgresSaver` and compared (values and versions): {r.checkpoints_verified}, "
        f"{len(r.checkpoint_problems)} differing or missing.",
        f"- Left behind: {r.stored_orphan_writes} pending writes of checkpoints whose save failed "
        f"({r.orphan_writes_of_saved_checkpoints} of saved checkpoints). The integrity checks "
        f"count {_num(r.integrity_orphan_writes)} `orphan_writes`, so health ends "
        f"`{r.final_health}`"
        + (f" ({', '.join(r.final_causes)})" if r.final_causes else "")
        + ": LangGraph keeps running a workflow's nodes, and saving their writes, after a "
        "checkpoint save failed, and those writes stay until the thread is deleted or pruned.",
        "",
    ]
    return lines


def slow_section(r: SlowDatabaseResult) -> list[str]:
    lines = [
        "## 2. Slow, stalled and dropped connections",
        "",
        "A standalone sidecar (`Sidecar` with no checkpointer, as `checkpoint-exporter serve`) "
        "reaches PostgreSQL through a TCP proxy run by the test. The proxy adds "
        f"{r.sluggish_delay:g} s each way (*sluggish*), then {r.stalled_delay:g} s (*stalled*), "
        "then closes every connection and refuses new ones (*dropped*), then heals. Collector "
        f"deadline {COLLECTOR_TIMEOUT:g} s; `/metrics` and health are asked back to back, "
        "as Prometheus would. Sessions are counted by `application_name` in `pg_stat_activity` "
        f"on a direct connection; the bound is the exporter's pool, the leader's session, the "
        f"health check's, the canary's and the recovery check's: {r.connection_bound}.",
        "",
        "| Phase | Scrapes (answered/asked) | Slowest scrape | Slowest health | `up` "
        "| Collectors reported failed | Most sessions |",
        "| --- | ---: | ---: | ---: | --- | --- | ---: |",
    ]
    for phase in PHASES:
        m, h = r.phases[phase], r.health[phase]
        failed = ", ".join(r.failed_collectors[phase]) or "none"
        lines.append(
            f"| {phase} | {m.answered}/{m.asked} | {m.max_seconds:.3f} s | {h.max_seconds:.3f} s "
            f"| {_values(r.up_values[phase])} | {failed} | {r.max_connections[phase]} |"
        )
    lines += [
        "",
        f"- Every collector succeeded again {_s(r.recovered_after)} after the proxy healed; "
        f"failed in the last scrape: {', '.join(r.final_failed_collectors) or 'none'}.",
        "- While the database does not answer the leader check, the database-wide collectors "
        "are left out of the scrape (not leading), so only `up 0` and the local ones show.",
        "- psycopg answers the cancellation of a running query by asking the server to cancel "
        "it and waiting for the query to end (up to 5 s each). Before `exporter/deadline.py`, "
        "a stalled network held scrapes and health checks for 5.5 s with a 1 s deadline; the "
        "deadline now returns on time and lets that clean-up finish in the background.",
        "",
    ]
    return lines


def pool_section(r: PoolExhaustionResult) -> list[str]:
    alerts = "; ".join(f"{verdict}" for verdict in r.alerts.values()) or "promtool not found"
    return [
        "## 3. The application's pool exhausted",
        "",
        f"{r.workflows} concurrent workflows, each of whose nodes holds a connection of the "
        f"checkpointer's pool (max {r.pool_max}) for a slow query of its own, as an application "
        "sharing the pool would; the in-process sidecar is scraped every 200 ms meanwhile "
        f"({r.scrapes} scrapes).",
        "",
        f'- Peak `langgraph_checkpointer_pool_requests_waiting{{pool="checkpointer"}}`: '
        f"{r.max_waiting:g}, with `available_connections` {_num(r.available_at_max)}.",
        f"- Peak `langgraph_checkpointer_lock_waiters`: {r.max_lock_waiters:g} (the saver's "
        "operations queue behind the one waiting for a connection).",
        f"- Health at the peak: `{r.health_at_max}`. Workflows: {r.workflows_completed} "
        f"completed, {r.workflows_failed} failed.",
        "- Alerts: the rules whose names contain `PoolExhausted` and `LockQueue` are read from "
        "`alerts/alerts.rules.yml` at run time and, without their annotations, put in a "
        "`promtool test rules` unit test built from the peak scrape (each series held at its "
        f"scraped value for the rule's `for` plus 5 minutes): {alerts}.",
        f"- At that peak the exporter's own pool also had {r.exporter_pool_waiting:g} requests "
        "waiting: one scrape runs six database collectors on a pool of "
        "`CHECKPOINT_EXPORTER_EXPORTER_POOL_SIZE` (4) connections, so the pool collector can "
        'see its own scrape queueing, and the alert fires for `pool="exporter"` too if every '
        "scrape for 5 minutes sees that.",
        "",
    ]


def restart_section(r: RestartResult) -> list[str]:
    lines = [
        "## 4. The standalone sidecar restarted under load",
        "",
        f"{WORKFLOWS} workflows run in this process while `checkpoint-exporter serve` runs "
        "beside them as its own process, on the same database with `pg_stat_statements`. It "
        f"is stopped with SIGTERM (exit status {r.exit_code}) and started again "
        f"({r.down_seconds:.2f} s without a sidecar); the load goes on, then stops.",
        "",
        "| Figure (from the database) | Before SIGTERM | After restart | After the load | Truth |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name in sorted(r.final):
        truth = r.truth.get(name)
        if name == "statements save_checkpoint":
            truth = float(r.application_puts + r.canary_probes)
        lines.append(
            f"| {name} | {_num(r.before.get(name))} | {_num(r.after.get(name))} "
            f"| {_num(r.final[name])} | {_num(truth)} |"
        )
    lines += [
        "",
        f"- Truth: workflows by status read from `workflow_metadata` directly; save statements "
        f"are the application's {r.application_puts} successful saves plus the canary's "
        f"{r.canary_probes} probes over both processes. Workflows completed by the "
        f"application: {r.workflows_completed} ({r.workflows_failed} failed).",
        f"- Canary restart readback after the restart: `{r.restart_readback}`.",
        f"- Recovery check after the restart: {_num(r.recovery.get('workflows_checked'))} "
        f"running workflows checked, {_num(r.recovery.get('workflows_recovered'))} loaded, "
        f"{_num(r.recovery.get('workflows_failed'))} failed.",
        "",
    ]
    return lines


def _values(values: tuple[float, ...]) -> str:
    return " and ".join(_num(v) for v in values) or "none"


def _num(value: float | None) -> str:
    if value is None:
        return "n/a"
    return str(int(value)) if value == int(value) else f"{value:g}"


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {n}" for name, n in sorted(counts.items())) or "none"


async def run() -> str:
    """Run every scenario on a fresh cluster; the page, as Markdown."""
    bindir = find_bindir()
    if bindir is None:
        raise SystemExit("no Debian PostgreSQL (/usr/lib/postgresql/NN/bin); install postgresql")
    promtool = shutil.which("promtool")
    started = time.monotonic()
    with stoppable_cluster(bindir) as cluster:
        with fresh_database(cluster.admin_dsn) as dsn:
            outage = await database_outage(cluster, dsn)
        with fresh_database(cluster.admin_dsn) as dsn:
            slow = await slow_database(dsn)
        with fresh_database(cluster.admin_dsn) as dsn:
            pool = await pool_exhaustion(dsn, promtool)
        with fresh_database(cluster.admin_dsn) as dsn:
            restart = await sidecar_restart(dsn)
    lines = [
        "# Reliability",
        "",
        f"Written by `{COMMAND}` on {datetime.now(UTC):%Y-%m-%d}, "
        f"in {time.monotonic() - started:.0f} s. Do not edit by hand: run the command again.",
        "",
        "Each fault has a real cause: a PostgreSQL server stopped hard, a network proxy that "
        "slows and cuts connections, a pool held by the application's own queries, a process "
        "killed with a signal. The same scenarios run as `tests/faults/test_*.py` "
        "(marked `faults`) in the ordinary test run, which asserts what this page reports. "
        f"Machine: Python {platform.python_version()}, PostgreSQL from `{bindir}`, "
        f"{_cpus()} CPUs. Collector deadline {COLLECTOR_TIMEOUT:g} s; an answer counts as on "
        f"time within {COLLECTOR_TIMEOUT + ANSWER_MARGIN:g} s; recovery is asked within two "
        f"scrape intervals of {SCRAPE_INTERVAL:g} s.",
        "",
        *outage_section(outage),
        *slow_section(slow),
        *pool_section(pool),
        *restart_section(restart),
    ]
    return "\n".join(lines).rstrip() + "\n"


def _cpus() -> str:
    return str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="RELIABILITY.md")
    args = parser.parse_args(argv)
    configure_logging("error", "console", stream=sys.stderr)
    # The pools' reconnection warnings are the faults themselves: the page reports them.
    logging.getLogger("psycopg").setLevel(logging.ERROR)
    args.output.write_text(asyncio.run(run()))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
