"""The fault scenarios, run by the tests (which assert) and by the report (which writes figures).

Each scenario takes a database, injects a fault with a real cause, and returns
what it measured; nothing here asserts.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import aiohttp
import yaml
from langgraph.graph import START, StateGraph
from prometheus_client import CollectorRegistry
from psycopg import AsyncConnection, sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import AsyncConnectionPool

from exporter import Sidecar, build_checkpointer
from exporter.checkpointer.instrumented import InstrumentedSaver
from exporter.database import EXPORTER_APPLICATION_NAME
from exporter.settings import ListenAddress, Settings
from exporter.workflows.schema import CANARY_THREAD_ID
from exporter.workload import compile_workflow, initial_state
from tests.exposition import integrity_step
from tests.faults.cluster import StoppableCluster
from tests.faults.harness import (
    HEALTH,
    HEALTHZ,
    METRICS,
    ConnectionCounter,
    Ledger,
    Poll,
    Poller,
    Workload,
    failed_collectors,
    scrape,
    unreadable_checkpoints,
)
from tests.faults.proxy import FaultyProxy
from tests.logstream import LogStream, started_url
from tests.samples import Samples

WORKFLOWS = 100
POLL_INTERVAL = 0.1
# How often Prometheus is assumed to scrape: recovery must show within two intervals.
SCRAPE_INTERVAL = 5.0
COLLECTOR_TIMEOUT = 1.0
# A request counts as answered in time within the collector deadline plus this much for
# rendering and for two cores shared with a hundred workflows.
ANSWER_MARGIN = 1.5


def fault_settings(dsn: str, **changes: Any) -> Settings:
    """Settings for the scenarios: short deadlines, a fast canary, a free port."""
    base = Settings(
        postgres_connection_string=dsn,
        listen_address=ListenAddress("127.0.0.1", 0),
        collector_timeout=COLLECTOR_TIMEOUT,
        connect_timeout=1.0,
        pool_timeout=2.0,
        canary_interval=1.0,
        canary_timeout=1.0,
        tracking_flush_interval=0.2,
        # The scenarios judge integrity once the load has stopped: no write is in flight.
        integrity_orphan_grace=0.0,
        integrity_interval=0.0,
        log_level="error",
    )
    return base.replace(**changes)


@dataclass(frozen=True, slots=True)
class PathFigures:
    """How one endpoint answered while the fault lasted."""

    path: str
    asked: int
    answered: int
    max_seconds: float
    statuses: tuple[int | None, ...]


def path_figures(polls: list[Poll], path: str) -> PathFigures:
    mine = [p for p in polls if p.path == path]
    return PathFigures(
        path=path,
        asked=len(mine),
        answered=sum(p.status is not None for p in mine),
        max_seconds=max((p.seconds for p in mine), default=0.0),
        statuses=tuple(sorted({p.status for p in mine}, key=lambda s: -1 if s is None else s)),
    )


@dataclass
class OutageResult:
    """Scenario 1: PostgreSQL stopped hard under load, then started again."""

    outage_seconds: float = 0.0
    restart_seconds: float = 0.0
    during: list[PathFigures] = field(default_factory=list)
    whole: list[PathFigures] = field(default_factory=list)
    up_values_during: tuple[float, ...] = ()
    health_during: tuple[str, ...] = ()
    up_again_after: float | None = None
    recovered_after: float | None = None
    healthy_again_after: float | None = None
    slow_answers: list[tuple[str, float, float]] = field(default_factory=list)
    final_health: str | None = None
    final_causes: tuple[str, ...] = ()
    final_up: float | None = None
    integrity_orphan_writes: float | None = None
    stored_orphan_writes: int = 0
    orphan_writes_of_saved_checkpoints: int = 0
    sidecar_alive: bool = False
    attempts: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    counter_mismatches: list[str] = field(default_factory=list)
    workflows_completed: int = 0
    workflows_failed: int = 0
    workflow_failures: dict[str, int] = field(default_factory=dict)
    checkpoints_verified: int = 0
    checkpoint_problems: list[str] = field(default_factory=list)


async def database_outage(
    cluster: StoppableCluster, dsn: str, outage: float = 3.0, warmup: float = 2.0
) -> OutageResult:
    """100 workflows run; PostgreSQL is stopped with ``-m immediate`` for ``outage`` seconds."""
    result = OutageResult()
    registry = CollectorRegistry()
    settings = fault_settings(dsn)
    ledger = Ledger()
    async with build_checkpointer(settings, registry=registry) as saver:
        ledger.install(saver)
        async with Sidecar(settings, checkpointer=saver, registry=registry) as sidecar:
            poller = Poller(sidecar.url, (METRICS, HEALTH, HEALTHZ), POLL_INTERVAL)
            workload = Workload(saver, WORKFLOWS)
            workload.start()
            poller.start()
            try:
                await asyncio.sleep(warmup)
                down = time.monotonic()
                await asyncio.to_thread(cluster.stop, "immediate")
                await asyncio.sleep(outage)
                restarting = time.monotonic()
                await asyncio.to_thread(cluster.start)
                back = time.monotonic()
                result.outage_seconds = back - down
                result.restart_seconds = back - restarting
                deadline = back + 4 * SCRAPE_INTERVAL
                while time.monotonic() < deadline:
                    up = _first_since(poller.polls, back, METRICS, lambda p: p.up == 1)
                    recovered = _first_since(poller.polls, back, HEALTH, _recovered)
                    if up is not None and recovered is not None:
                        break
                    await asyncio.sleep(POLL_INTERVAL)
                # Keep the load on a little after recovery, so that saves succeed again.
                await asyncio.sleep(1.0)
            finally:
                await workload.stop()
                await asyncio.to_thread(poller.stop)
            tracker = saver.tracker
            if tracker is not None:
                await tracker.flush()
            samples = await _settled_scrape(sidecar.url, since=time.time())
            result.sidecar_alive = True
            polls = poller.polls
            during = [p for p in polls if down <= p.at <= back]
            result.during = [path_figures(during, path) for path in (METRICS, HEALTH, HEALTHZ)]
            result.whole = [path_figures(polls, path) for path in (METRICS, HEALTH, HEALTHZ)]
            result.up_values_during = tuple(sorted({p.up for p in during if p.up is not None}))
            result.health_during = tuple(sorted({p.status_text for p in during if p.status_text}))
            up = _first_since(polls, back, METRICS, lambda p: p.up == 1)
            recovered = _first_since(polls, back, HEALTH, _recovered)
            healthy = _first_since(polls, back, HEALTH, lambda p: p.status_text == "healthy")
            result.up_again_after = None if up is None else up.at - back
            result.recovered_after = None if recovered is None else recovered.at - back
            result.healthy_again_after = None if healthy is None else healthy.at - back
            result.slow_answers = [
                (p.path, round(p.at - down, 2), round(p.seconds, 2))
                for p in polls
                if p.status is None or p.seconds > COLLECTOR_TIMEOUT + ANSWER_MARGIN
            ]
            result.final_up = samples.get(("langgraph_checkpointer_up", ()))
            result.integrity_orphan_writes = samples.get(
                ("langgraph_checkpointer_integrity_problems", (("check", "orphan_writes"),))
            )
            document, _ = await sidecar.health()
            result.final_health = str(document["status"])
            result.final_causes = degraded_causes(document)
    result.attempts = dict(ledger.attempts)
    result.errors = dict(ledger.errors)
    result.counter_mismatches = ledger.mismatches(samples)
    result.workflows_completed = workload.completed
    result.workflows_failed = workload.failed
    result.workflow_failures = dict(workload.failures)
    checked, problems = await unreadable_checkpoints(dsn, settings.postgres_schema, ledger.saved)
    result.checkpoints_verified = checked
    result.checkpoint_problems = problems
    saved_ids = {entry.config["configurable"]["checkpoint_id"] for entry in ledger.saved}
    orphans = await orphan_writes(dsn, settings.postgres_schema)
    result.stored_orphan_writes = len(orphans)
    result.orphan_writes_of_saved_checkpoints = sum(o in saved_ids for o in orphans)
    return result


def degraded_causes(document: dict[str, Any]) -> tuple[str, ...]:
    """Which of the health rules after the first two hold for ``document``."""
    causes = []
    canary = document.get("canary") or {}
    if canary.get("active") and canary.get("status") not in (None, "success"):
        causes.append("canary")
    pool = document.get("pool") or {}
    if pool.get("waiting", 0) > 0 and pool.get("available", 1) == 0:
        causes.append("pool")
    recovery = document.get("recovery") or {}
    if recovery.get("failed"):
        causes.append("recovery")
    integrity = document.get("integrity") or {}
    causes += [f"integrity:{name}" for name, n in (integrity.get("problems") or {}).items() if n]
    return tuple(causes)


def _recovered(poll: Poll) -> bool:
    """Health answers again with the database connected, and no cause but leftover data.

    Writes LangGraph stored for a checkpoint whose save failed during the outage
    stay in the store; the integrity checks rightly count them as orphans.
    """
    document = poll.health
    if document is None or not (document.get("postgres") or {}).get("connected"):
        return False
    if document.get("status") == "healthy":
        return True
    causes = degraded_causes(document)
    return document.get("status") == "degraded" and all(c.startswith("integrity:") for c in causes)


async def _settled_scrape(url: str, since: float) -> Samples:
    """A scrape whose integrity figures come from a pass that began after ``since`` (Unix time).

    With no grace for orphan writes, a pass that overlapped the load counts the
    writes of checkpoints still being saved; only a later one is comparable with
    what is stored once the load has stopped.
    """
    prefix = "langgraph_checkpointer_integrity_last_pass_"
    samples: Samples = {}
    for _ in range(600):  # steps run in the background: give each one time to finish
        samples = await scrape(url)
        finished = samples.get((prefix + "timestamp_seconds", ()))
        took = samples.get((prefix + "duration_seconds", ()))
        if finished is not None and took is not None and finished - took >= since:
            return samples
        await asyncio.sleep(0.05)
    raise AssertionError(f"no integrity pass began after the load stopped: {samples}")


async def orphan_writes(dsn: str, schema: str) -> list[str]:
    """The checkpoint id of every stored write whose checkpoint does not exist, read directly."""
    async with await AsyncConnection.connect(dsn, autocommit=True) as conn:
        cursor = await conn.execute(
            sql.SQL(
                "SELECT w.checkpoint_id FROM {schema}.checkpoint_writes w WHERE NOT EXISTS"
                " (SELECT 1 FROM {schema}.checkpoints c WHERE c.thread_id = w.thread_id"
                " AND c.checkpoint_ns = w.checkpoint_ns AND c.checkpoint_id = w.checkpoint_id)"
            ).format(schema=sql.Identifier(schema))
        )
        return [str(row[0]) for row in await cursor.fetchall()]


def _first_since(polls: list[Poll], since: float, path: str, test: Any) -> Poll | None:
    return next((p for p in polls if p.at >= since and p.path == path and test(p)), None)


@dataclass
class SlowDatabaseResult:
    """Scenario 2: a proxy between sidecar and PostgreSQL adds latency, then drops connections.

    Figures are per phase: ``healthy``, ``sluggish`` (each round trip slower
    than half the collector deadline), ``stalled`` (slower than the deadline),
    ``dropped`` (every connection cut) and ``healed``.
    """

    sluggish_delay: float = 0.0
    stalled_delay: float = 0.0
    phases: dict[str, PathFigures] = field(default_factory=dict)
    health: dict[str, PathFigures] = field(default_factory=dict)
    failed_collectors: dict[str, tuple[str, ...]] = field(default_factory=dict)
    up_values: dict[str, tuple[float, ...]] = field(default_factory=dict)
    max_connections: dict[str, int] = field(default_factory=dict)
    connection_bound: int = 0
    recovered_after: float | None = None
    final_failed_collectors: tuple[str, ...] = ()


PHASES = ("healthy", "sluggish", "stalled", "dropped", "healed")


async def slow_database(
    dsn: str, sluggish: float = 0.3, stalled: float = 2.0, hold: float = 4.0
) -> SlowDatabaseResult:
    """A standalone sidecar reaches PostgreSQL through a proxy that slows, stalls, then drops.

    ``sluggish`` and ``stalled`` are the delays added in each direction; each
    fault lasts ``hold`` seconds.
    """
    result = SlowDatabaseResult(sluggish_delay=sluggish, stalled_delay=stalled)
    settings = fault_settings(dsn)
    async with build_checkpointer(settings, registry=CollectorRegistry()) as saver:
        workload = Workload(saver, 10)
        workload.start()
        await asyncio.sleep(0.5)
        await workload.stop()
    # The exporter's pool, the leader's session, the health check's, the canary's and the
    # recovery check's.
    result.connection_bound = settings.exporter_pool_size + 4
    with FaultyProxy("127.0.0.1", int(conninfo_to_dict(dsn)["port"] or 5432)) as proxy:
        proxied = make_conninfo(dsn, host="127.0.0.1", port=proxy.port)
        counter = ConnectionCounter(dsn, EXPORTER_APPLICATION_NAME)
        async with Sidecar(fault_settings(proxied), registry=CollectorRegistry()) as sidecar:
            poller = Poller(sidecar.url, (METRICS, HEALTH), POLL_INTERVAL, overlapping=False)
            counter.start()
            poller.start()
            marks = {"healthy": time.monotonic()}
            try:
                await asyncio.sleep(1.5)
                marks["sluggish"] = time.monotonic()
                proxy.delay(sluggish)
                await asyncio.sleep(hold)
                marks["stalled"] = time.monotonic()
                proxy.delay(stalled)
                await asyncio.sleep(hold)
                marks["dropped"] = time.monotonic()
                proxy.drop()
                await asyncio.sleep(hold)
                marks["healed"] = time.monotonic()
                proxy.heal()
                deadline = time.monotonic() + 4 * SCRAPE_INTERVAL
                while time.monotonic() < deadline:
                    if _first_since(poller.polls, marks["healed"], METRICS, _all_collected):
                        break
                    await asyncio.sleep(POLL_INTERVAL)
                await asyncio.sleep(0.5)
                marks["end"] = time.monotonic()
            finally:
                await asyncio.to_thread(poller.stop)
                await asyncio.to_thread(counter.stop)
            # An integrity step begun before recovery runs in the background and may
            # still fail; it says so once, in the next scrape. The sidecar has settled
            # when the scrape after that, with the step it started done, is whole.
            await integrity_step(sidecar)
            await scrape(sidecar.url)
            await integrity_step(sidecar)
            final = await scrape(sidecar.url)
    polls = poller.polls
    for name, end in zip(PHASES, (*PHASES[1:], "end"), strict=True):
        window = [p for p in polls if marks[name] <= p.at < marks[end]]
        result.phases[name] = path_figures(window, METRICS)
        result.health[name] = path_figures(window, HEALTH)
        # A scrape that was still running when the next phase began saw both; it
        # counts for timing above, not for what either phase reported.
        settled = [p for p in window if p.at + p.seconds < marks[end]]
        result.failed_collectors[name] = tuple(
            sorted({c for p in settled if p.path == METRICS for c in p.failed})
        )
        result.up_values[name] = tuple(sorted({p.up for p in settled if p.up is not None}))
        result.max_connections[name] = counter.max_between(marks[name], marks[end])
    healed = _first_since(polls, marks["healed"], METRICS, _all_collected)
    result.recovered_after = None if healed is None else healed.at - marks["healed"]
    result.final_failed_collectors = failed_collectors(final)
    return result


def _all_collected(poll: Poll) -> bool:
    return poll.up == 1 and poll.status == 200 and not poll.failed


ALERT_RULES = Path(__file__).resolve().parents[2] / "alerts" / "alerts.rules.yml"
JOB, INSTANCE = "checkpoint-exporter", "app-1:9877"


class HoldState(TypedDict, total=False):
    done: int


def holding_graph(pool: AsyncConnectionPool[Any], hold: float) -> Any:
    """A workflow whose node runs the application's own slow query on the checkpointer's pool."""

    async def lookup(state: HoldState) -> dict[str, Any]:
        async with pool.connection() as conn:
            await conn.execute("SELECT pg_sleep(%s)", (hold,))
        return {"done": state.get("done", 0) + 1}

    graph: StateGraph[Any] = StateGraph(HoldState)
    graph.add_node("lookup", lookup)
    graph.add_node("again", lookup)
    graph.add_edge(START, "lookup")
    graph.add_edge("lookup", "again")
    return graph


@dataclass
class PoolExhaustionResult:
    """Scenario 3: the application's pool (max 2) exhausted by 20 concurrent workflows."""

    pool_max: int = 0
    workflows: int = 0
    scrapes: int = 0
    max_waiting: float = 0.0
    available_at_max: float | None = None
    max_lock_waiters: float = 0.0
    health_at_max: str | None = None
    exporter_pool_waiting: float = 0.0
    workflows_completed: int = 0
    workflows_failed: int = 0
    alerts: dict[str, str] = field(default_factory=dict)
    alert_output: dict[str, str] = field(default_factory=dict)


async def pool_exhaustion(
    dsn: str, promtool: str | None, workflows: int = 20, hold: float = 0.3, seconds: float = 3.0
) -> PoolExhaustionResult:
    """20 workflows hold pool connections (max 2) in slow queries; the sidecar scrapes meanwhile.

    The peak scrape's pool series then feed the alert rules about pool
    exhaustion and the saver's lock queue, read from ``alerts/alerts.rules.yml``
    now, in a ``promtool test rules`` unit test built on the spot.
    """
    result = PoolExhaustionResult(workflows=workflows)
    registry = CollectorRegistry()
    settings = fault_settings(dsn, pool_min_size=1, pool_max_size=2, pool_timeout=30.0)
    result.pool_max = settings.pool_max_size
    async with build_checkpointer(settings, registry=registry) as saver:
        pool = saver.backend.pool if saver.backend is not None else None
        assert pool is not None
        graph = holding_graph(pool, hold).compile(checkpointer=saver)
        async with Sidecar(settings, checkpointer=saver, registry=registry) as sidecar:
            stop = time.monotonic() + seconds
            completed = failed = 0

            async def worker(index: int) -> None:
                nonlocal completed, failed
                while time.monotonic() < stop:
                    config: Any = {"configurable": {"thread_id": f"hold-{index}-{time.time_ns()}"}}
                    try:
                        await graph.ainvoke({"done": 0}, config)
                    except Exception:
                        failed += 1
                    else:
                        completed += 1

            workers = [asyncio.create_task(worker(i)) for i in range(workflows)]
            peak: Samples | None = None
            peak_health: str | None = None
            await asyncio.sleep(0.5)
            while time.monotonic() < stop - 0.5:
                samples = await scrape(sidecar.url)
                result.scrapes += 1
                waiting = samples.get(_pool_key("requests_waiting", "checkpointer"), 0.0)
                lock = sum(v for (n, _), v in samples.items() if n == LOCK_WAITERS)
                result.max_lock_waiters = max(result.max_lock_waiters, lock)
                if peak is None or waiting > result.max_waiting:
                    peak, result.max_waiting = samples, waiting
                    document, _ = await sidecar.health()
                    peak_health = str(document["status"])
                await asyncio.sleep(0.2)
            await asyncio.gather(*workers)
    assert peak is not None
    result.workflows_completed, result.workflows_failed = completed, failed
    result.available_at_max = peak.get(_pool_key("available_connections", "checkpointer"))
    result.exporter_pool_waiting = peak.get(_pool_key("requests_waiting", "exporter"), 0.0)
    result.health_at_max = peak_health
    if promtool is not None:
        for part in ("PoolExhausted", "LockQueue"):
            verdict, output = await asyncio.to_thread(alert_verdict, promtool, part, peak)
            result.alerts[part] = verdict
            result.alert_output[part] = output
    return result


LOCK_WAITERS = "langgraph_checkpointer_lock_waiters"


def _pool_key(name: str, pool: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return (f"langgraph_checkpointer_pool_{name}", (("pool", pool),))


def alert_verdict(promtool: str, name_part: str, samples: Samples) -> tuple[str, str]:
    """Whether the alert whose name contains ``name_part`` fires on ``samples`` held steady.

    The rule (expression, ``for`` and labels; annotations left out, since only
    whether and for which series it fires is asked) goes into a rule file of
    its own; every series of the metrics it reads gets the scraped value,
    constant for its ``for`` plus five minutes, with ``job`` and ``instance``
    added as a scrape would. Returns ``firing``/``silent`` per series, as promtool
    confirmed, and promtool's output.
    """
    rule = _alert_rule(name_part)
    hold = _minutes(str(rule.get("for", "0m"))) + 5
    series = [
        {
            "series": _series_text(name, {**dict(labels), "job": JOB, "instance": INSTANCE}),
            "values": f"{_number(value)}+0x{hold}",
        }
        for (name, labels), value in sorted(samples.items())
        if name in rule["expr"]
    ]
    expected = _expected_alerts(rule, samples)
    stripped = {k: rule[k] for k in ("alert", "expr", "for", "labels") if k in rule}
    with tempfile.TemporaryDirectory() as directory:
        rules_path = Path(directory) / "rules.yml"
        rules_path.write_text(yaml.safe_dump({"groups": [{"name": "fault", "rules": [stripped]}]}))
        test_path = Path(directory) / "test.yml"
        test = {
            "rule_files": [str(rules_path)],
            "evaluation_interval": "1m",
            "tests": [
                {
                    "interval": "1m",
                    "input_series": series,
                    "alert_rule_test": [
                        {"eval_time": f"{hold}m", "alertname": rule["alert"],
                         "exp_alerts": expected},
                    ],
                }
            ],
        }  # fmt: skip
        test_path.write_text(yaml.safe_dump(test))
        done = subprocess.run(
            [promtool, "test", "rules", str(test_path)], capture_output=True, text=True, check=False
        )
    fired = ", ".join(sorted(a["exp_labels"].get("pool") or a["exp_labels"].get("saver", "")
                             for a in expected))  # fmt: skip
    verdict = f"{rule['alert']} fires for {fired}" if expected else f"{rule['alert']} silent"
    if done.returncode != 0:
        verdict = f"{rule['alert']}: promtool disagrees"
    return verdict, (done.stdout + done.stderr).strip()


def _alert_rule(name_part: str) -> dict[str, Any]:
    document = yaml.safe_load(ALERT_RULES.read_text())
    rules: list[dict[str, Any]] = [
        rule
        for group in document["groups"]
        for rule in group["rules"]
        if name_part in str(rule.get("alert", ""))
    ]
    if len(rules) != 1:
        raise LookupError(f"{len(rules)} alert rules in {ALERT_RULES.name} match {name_part!r}")
    return rules[0]


def _expected_alerts(rule: dict[str, Any], samples: Samples) -> list[dict[str, Any]]:
    """The alerts the rule must raise on these figures, by this scenario's reading of it."""
    labels = {str(k): str(v) for k, v in (rule.get("labels") or {}).items()}
    found: list[dict[str, Any]] = []
    if "pool_requests_waiting" in rule["expr"]:
        for (name, key), value in samples.items():
            if name != "langgraph_checkpointer_pool_requests_waiting" or value <= 0:
                continue
            pool = dict(key)["pool"]
            if pool == "exporter":  # the rules leave the sidecar's own pool out
                continue
            if "available_connections" in rule["expr"]:
                available = samples.get(_pool_key("available_connections", pool), 1.0)
                if available != 0:
                    continue
            found.append({"exp_labels": {**labels, "job": JOB, "instance": INSTANCE,
                                         "pool": pool}})  # fmt: skip
    elif LOCK_WAITERS in rule["expr"]:
        for (name, key), value in samples.items():
            if name == LOCK_WAITERS and value > 0:
                found.append({"exp_labels": {**labels, "job": JOB, "instance": INSTANCE,
                                             **dict(key)}})  # fmt: skip
    return found


def _minutes(duration: str) -> int:
    units = {"s": 1 / 60, "m": 1, "h": 60}
    return max(1, int(float(duration[:-1]) * units[duration[-1]] + 0.999))


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else repr(value)


def _series_text(name: str, labels: dict[str, str]) -> str:
    inner = ", ".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    return f"{name}{{{inner}}}"


@dataclass
class RestartResult:
    """Scenario 4: the standalone sidecar restarted with SIGTERM while the application runs."""

    exit_code: int | None = None
    down_seconds: float = 0.0
    before: dict[str, float] = field(default_factory=dict)
    after: dict[str, float] = field(default_factory=dict)
    final: dict[str, float] = field(default_factory=dict)
    truth: dict[str, float] = field(default_factory=dict)
    restart_readback: str | None = None
    recovery: dict[str, float] = field(default_factory=dict)
    application_puts: int = 0
    canary_probes: int = 0
    workflows_completed: int = 0
    workflows_failed: int = 0


THREADS = "langgraph_checkpointer_workflows_threads"
CALLS = "langgraph_checkpointer_statements_calls_total"
STATUSES = ("running", "interrupted", "completed", "failed", "cancelled")


def database_figures(samples: Samples) -> dict[str, float]:
    """The figures a standalone sidecar reads from the database: workflows, statement calls."""
    figures: dict[str, float] = {}
    for (name, labels), number in samples.items():
        if name == THREADS:
            figures[f"workflows {dict(labels)['status']}"] = number
        elif name == CALLS and dict(labels)["kind"] in ("save_checkpoint", "load_checkpoint"):
            figures[f"statements {dict(labels)['kind']}"] = number
    return figures


# Workflows paused after their first step for the whole scenario: running, whatever the
# moment of the restart, so the restarted sidecar's recovery check always has work.
PARKED = 5


async def park_workflows(saver: InstrumentedSaver, count: int) -> None:
    """Run ``count`` workflows to a static breakpoint after their first node; they stay running."""
    graph = compile_workflow(saver, 0, state_kb=4)
    for index in range(count):
        thread_id = f"parked-{index}"
        config: Any = {"configurable": {"thread_id": thread_id}}
        await graph.ainvoke(initial_state(thread_id), config, interrupt_after=["plan"])
    if saver.tracker is not None:
        await saver.tracker.flush()


async def sidecar_restart(dsn: str, workflows: int = WORKFLOWS) -> RestartResult:
    """The application runs in this process; ``checkpoint-exporter serve`` restarts beside it."""
    result = RestartResult()
    async with await AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    settings = fault_settings(dsn)
    ledger = Ledger()
    address = "127.0.0.1:0"  # the first start picks a port; the restart binds the same one
    async with build_checkpointer(settings, registry=CollectorRegistry()) as saver:
        ledger.install(saver)
        await park_workflows(saver, PARKED)
        workload = Workload(saver, workflows)
        workload.start()
        try:
            process, log = serve(dsn, address)
            try:
                url = await asyncio.to_thread(started_url, log)
                address = url.removeprefix("http://")
                await wait_serving(url, process)
                first = await scrape_until(url, lambda s: _canary_probes(s) >= 1)
                result.before = database_figures(first)
                probes = _canary_probes(first)
                process.send_signal(signal.SIGTERM)
                stopped = time.monotonic()
                result.exit_code = await asyncio.to_thread(process.wait, 30)
            finally:
                _kill(process)
            process, log = serve(dsn, address)
            try:
                assert await asyncio.to_thread(started_url, log) == url
                await wait_serving(url, process)
                result.down_seconds = time.monotonic() - stopped
                second = await scrape_until(
                    url,
                    lambda s: s.get(("langgraph_checkpointer_recovery_last_run_timestamp_seconds",
                                     ()), 0) > 0 and _canary_probes(s) >= 1,
                )  # fmt: skip
                result.after = database_figures(second)
                result.restart_readback = next(
                    (dict(labels)["result"] for (name, labels), number in second.items()
                     if name == "langgraph_checkpointer_canary_restart_readback" and number == 1),
                    None,
                )  # fmt: skip
                result.recovery = {
                    key: second.get((f"langgraph_checkpointer_recovery_{key}", ()), -1.0)
                    for key in ("workflows_checked", "workflows_recovered", "workflows_failed",
                                "last_run_success")
                }  # fmt: skip
                await workload.stop()
                if saver.tracker is not None:
                    await saver.tracker.flush()
                third = await scrape(url)
                probes += _canary_probes(third)
                result.final = database_figures(third)
            finally:
                process.send_signal(signal.SIGTERM)
                await asyncio.to_thread(process.wait, 30)
                _kill(process)
        finally:
            await workload.stop()
    result.application_puts = ledger.successes["put"]
    result.canary_probes = int(probes)
    result.workflows_completed = workload.completed
    result.workflows_failed = workload.failed
    result.truth = await workflow_counts(dsn, settings.postgres_schema)
    return result


def _canary_probes(samples: Samples) -> float:
    return sum(
        v for (n, _), v in samples.items() if n == "langgraph_checkpointer_canary_probes_total"
    )


def serve(dsn: str, address: str) -> tuple[subprocess.Popen[bytes], LogStream]:
    """``checkpoint-exporter serve`` on ``dsn``, as its own process, and its JSON log."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CHECKPOINT_EXPORTER_", "POSTGRES_", "USE_POSTGRES"))}  # fmt: skip
    env.update(
        POSTGRES_CONNECTION_STRING=dsn,
        CHECKPOINT_EXPORTER_CANARY_INTERVAL="1s",
        CHECKPOINT_EXPORTER_COLLECTOR_TIMEOUT="2s",
        CHECKPOINT_EXPORTER_LOG_LEVEL="info",
        CHECKPOINT_EXPORTER_LOG_FORMAT="json",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "exporter", "serve", "--web.listen-address", address],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    return process, LogStream(process.stderr)


def _kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(timeout=30)


async def wait_serving(url: str, process: subprocess.Popen[bytes], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the sidecar exited with {process.returncode}")
            try:
                async with http.get(url + HEALTHZ) as response:
                    if response.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {seconds}s")


async def scrape_until(url: str, ready: Any, seconds: float = 30) -> Samples:
    """Scrape every 200 ms until ``ready(samples)``; the last scrape either way."""
    deadline = time.monotonic() + seconds
    samples = await scrape(url)
    while not ready(samples) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        samples = await scrape(url)
    return samples


async def workflow_counts(dsn: str, schema: str) -> dict[str, float]:
    """Workflows by status, read from ``workflow_metadata`` directly (the canary left out)."""
    async with await AsyncConnection.connect(dsn, autocommit=True) as conn:
        cursor = await conn.execute(
            sql.SQL(
                "SELECT status, count(*) FROM {schema}.workflow_metadata"
                " WHERE thread_id <> %s GROUP BY status"
            ).format(schema=sql.Identifier(schema)),
            (CANARY_THREAD_ID,),
        )
        rows = await cursor.fetchall()
    counts = dict.fromkeys((f"workflows {s}" for s in STATUSES), 0.0)
    counts.update({f"workflows {row[0]}": float(row[1]) for row in rows})
    return counts
