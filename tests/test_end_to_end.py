"""End to end: a live sidecar and workload, scraped by a real Prometheus that evaluates the real
rules in alerts/, and pages through a real Alertmanager configured from alerts/alertmanager.yml.

The scenario: healthy traffic; then the ``checkpoints`` table disappears (renamed away), so every
checkpoint operation fails with ``UndefinedTable``; the fast-burn error-budget alert must page,
routed by the real Alertmanager configuration, and resolve once the table is back and healthy
traffic has diluted the errors. Afterwards every dashboard query must return data from the same
Prometheus, except exactly those that read a metric in ``ABSENT_METRICS``.

Timing: the rules are not rescaled. In a test whose whole history is shorter than five minutes,
every window of a burn-rate rule (``rate(...[5m])`` to ``[3d]``) covers the same history, so each
ratio is the share of failed operations since the start, and the alert's lowest threshold (6 %,
the 6h/30m pair) decides: it fires a few seconds after the failures start and resolves a few
seconds after healthy operations have brought the share back under 6 %. This holds only while
the alert has no ``for:`` clause, as the SRE workbook's multi-window alerts have none.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
import yaml
from aiohttp import web
from prometheus_client import CollectorRegistry
from psycopg import sql

from exporter.checkpointer.instrumented import InstrumentedSaver
from exporter.factory import build_checkpointer
from exporter.settings import Settings
from exporter.sidecar import Sidecar
from exporter.workload import compile_workflow, initial_state
from tests.dashboards import dashboard_expressions, substitute
from tests.ports import listening_port
from tests.tools import require_tool
from tests.waiting import eventually

ROOT = Path(__file__).resolve().parent.parent
ALERTS = ROOT / "alerts"

JOB = "checkpoint-exporter"
PAGE_ALERT = "CheckpointErrorBudgetFastBurn"
ERROR_RATIO = "job:langgraph_checkpointer_errors:ratio_rate5m"

# Metrics that are legitimately absent in this scenario, and why. A dashboard query that reads one
# of them must return nothing, every other query must return data, and every metric listed here
# must be read by some query: the list stays exact.
ABSENT_METRICS: dict[str, str] = {
    **dict.fromkeys(
        (
            "langgraph_checkpointer_statements_calls_total",
            "langgraph_checkpointer_statements_seconds_total",
            "langgraph_checkpointer_statements_rows_total",
            "langgraph_checkpointer_statements_mean_seconds",
        ),
        "the test's database has no pg_stat_statements (statements_available is 0)",
    ),
    **dict.fromkeys(
        (
            "langgraph_checkpointer_tables_last_autovacuum_age_seconds",
            "langgraph_checkpointer_tables_last_autoanalyze_age_seconds",
        ),
        "absent until autovacuum visits a table; the test turns it off on its tables, so that "
        "this holds whenever autovacuum's schedule would have come round",
    ),
    "langgraph_checkpointer_rollout_threads": "the scenario runs at 100 %, on one shard: every "
    "thread goes to PostgreSQL, and nothing is placed to count",
}
METRIC_NAME = re.compile(r"\b(langgraph_checkpointer_[a-z0-9_]+)\b")


# ---------------------------------------------------------------------------------------------
# Servers


@dataclass
class Notifications:
    """What the webhook received: Alertmanager's payloads, with the receiver from the path."""

    received: list[dict[str, Any]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def matching(self, alertname: str, status: str) -> list[dict[str, Any]]:
        return [
            payload
            for payload in self.received
            if payload.get("status") == status
            and any(a["labels"].get("alertname") == alertname for a in payload["alerts"])
        ]

    async def wait_for(self, alertname: str, status: str, within: float) -> dict[str, Any]:
        deadline = time.monotonic() + within
        while not (found := self.matching(alertname, status)):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                seen = [(p["receiver"], p["status"], p["groupLabels"]) for p in self.received]
                raise AssertionError(f"no {status} notification of {alertname}; received {seen}")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), remaining)
        return found[0]


@contextlib.asynccontextmanager
async def webhook(notifications: Notifications) -> AsyncIterator[str]:
    """An HTTP receiver for Alertmanager's webhook notifications; yields its base URL."""

    async def receive(request: web.Request) -> web.Response:
        payload = await request.json()
        payload["path_receiver"] = request.match_info["receiver"]
        notifications.received.append(payload)
        notifications.changed.set()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/{receiver}", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@contextlib.contextmanager
def process(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` with its output in ``log``; stop it (SIGTERM, then SIGKILL) on exit."""
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def wait_ready(
    session: aiohttp.ClientSession, url: str, proc: subprocess.Popen[bytes], log: Path
) -> None:
    """Poll ``url`` until it answers 200; fail with the log if the process exits or stalls."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{proc.args!r} exited {proc.returncode}:\n{read(log)}")
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(url) as response:
                if response.status == 200:
                    return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{url} not ready after 30 s:\n{read(log)}")


def read(log: Path) -> str:
    return log.read_text(errors="replace")


def route_for_test(route: dict[str, Any]) -> dict[str, Any]:
    """The route tree with notifications as prompt as Alertmanager allows, matchers unchanged."""
    route = dict(route)
    for key, value in (("group_wait", "1s"), ("group_interval", "1s"), ("repeat_interval", "1h")):
        if key in route or "receiver" in route:
            route[key] = value
    if "routes" in route:
        route["routes"] = [route_for_test(child) for child in route["routes"]]
    return route


def alertmanager_config(webhook_url: str) -> dict[str, Any]:
    """alerts/alertmanager.yml with each receiver replaced by the test's webhook.

    Each receiver posts to ``<webhook>/<receiver name>``, so the test sees which receiver the
    real routing tree chose. Routes, matchers and inhibition rules are kept as they are.
    """
    config: dict[str, Any] = yaml.safe_load((ALERTS / "alertmanager.yml").read_text())
    config["receivers"] = [
        {
            "name": receiver["name"],
            "webhook_configs": [
                {"url": f"{webhook_url}/{receiver['name']}", "send_resolved": True}
            ],
        }
        for receiver in config["receivers"]
    ]
    config["route"] = route_for_test(config["route"])
    config.pop("templates", None)
    return config


def prometheus_config(target: str, alertmanager: str) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [
            str(ALERTS / "recording.rules.yml"),
            str(ALERTS / "alerts.rules.yml"),
        ],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
        "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [target]}]}],
    }


def expected_receiver(labels: dict[str, str]) -> str:
    """The receiver alerts/alertmanager.yml routes ``labels`` to, as amtool works it out."""
    amtool = require_tool("amtool")
    done = subprocess.run(
        [
            amtool,
            "config",
            "routes",
            "test",
            f"--config.file={ALERTS / 'alertmanager.yml'}",
            *(f"{name}={value}" for name, value in labels.items()),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


class Prometheus:
    """A client for the instant-query API of the test's Prometheus."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session, self.url = session, url

    async def query(self, expr: str) -> list[dict[str, Any]]:
        async with self.session.get(f"{self.url}/api/v1/query", params={"query": expr}) as resp:
            body = await resp.json()
        assert body["status"] == "success", f"{expr}: {body}"
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    async def value(self, expr: str) -> float | None:
        result = await self.query(expr)
        return float(result[0]["value"][1]) if result else None

    async def firing(self, alertname: str) -> bool:
        return bool(await self.query(f'ALERTS{{alertname="{alertname}", alertstate="firing"}}'))


# ---------------------------------------------------------------------------------------------
# The application side


class Workload:
    """Workers running the demo workflow through the instrumented saver until stopped."""

    def __init__(self, saver: InstrumentedSaver, workers: int) -> None:
        self.graph = compile_workflow(saver, think_time=0.01, state_kb=1)
        self.workers = workers
        self.completed = self.failed = 0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def _work(self, index: int) -> None:
        while not self._stop.is_set():
            config: Any = {"configurable": {"thread_id": f"e2e-{index}-{uuid.uuid4()}"}}
            try:
                await self.graph.ainvoke(initial_state("end-to-end"), config)
                await self.graph.aget_state(config)
            except Exception:
                self.failed += 1
                # A failing run fails at its first load; pace it like a healthy run.
                await asyncio.sleep(0.05)
            else:
                self.completed += 1

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._work(i)) for i in range(self.workers)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


async def set_autovacuum(dsn: str, schema: str, enabled: bool) -> None:
    """Turn autovacuum (and autoanalyze) on or off for every table in ``schema``."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,)
        )
        for (table,) in await cursor.fetchall():
            await conn.execute(
                sql.SQL("ALTER TABLE {}.{} SET (autovacuum_enabled = {})").format(
                    sql.Identifier(schema), sql.Identifier(table), sql.Literal(enabled)
                )
            )


async def vacuum_analyze(dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute("VACUUM ANALYZE")


async def rename_table(dsn: str, schema: str, old: str, new: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute("SET lock_timeout = '10s'")
        await conn.execute(
            sql.SQL("ALTER TABLE {}.{} RENAME TO {}").format(
                sql.Identifier(schema), sql.Identifier(old), sql.Identifier(new)
            )
        )


# ---------------------------------------------------------------------------------------------
# Dashboards


# What Grafana substitutes for its own variables at 1 s scrapes, over the last 5 minutes.
GRAFANA_BUILTINS = {"__rate_interval": "5s", "__interval": "1s", "__range": "5m"}


# ---------------------------------------------------------------------------------------------
# The test


@pytest.mark.slow
async def test_error_budget_page_fires_resolves_and_dashboards_show_data(
    settings: Settings, dsn: str, registry: CollectorRegistry, tmp_path: Path
) -> None:
    """Failing operations page through the real rules and Alertmanager, then resolve."""
    rules = yaml.safe_load((ALERTS / "alerts.rules.yml").read_text())
    rule = next(r for g in rules["groups"] for r in g["rules"] if r.get("alert") == PAGE_ALERT)
    assert "for" not in rule, f"{PAGE_ALERT} has `for: {rule['for']}`: see the module docstring"
    prometheus_bin = require_tool("prometheus")
    alertmanager_bin = require_tool("prometheus-alertmanager")
    settings = settings.replace(canary_interval=2.0, tables_interval=1.0)
    notifications = Notifications()

    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        webhook(notifications) as webhook_url,
        build_checkpointer(settings, registry=registry) as saver,
        Sidecar(settings, checkpointer=saver, registry=registry) as sidecar,
    ):
        target = f"127.0.0.1:{sidecar.port}"
        am_yml = tmp_path / "alertmanager.yml"
        am_yml.write_text(yaml.safe_dump(alertmanager_config(webhook_url)))
        am_log, prom_log = tmp_path / "alertmanager.log", tmp_path / "prometheus.log"
        with process(
            [
                alertmanager_bin,
                f"--config.file={am_yml}",
                f"--storage.path={tmp_path / 'am-data'}",
                "--web.listen-address=127.0.0.1:0",
                "--cluster.listen-address=",
            ],
            am_log,
        ) as alertmanager:
            am_port = await asyncio.to_thread(listening_port, am_log, alertmanager)
            await wait_ready(session, f"http://127.0.0.1:{am_port}/-/ready", alertmanager, am_log)
            prom_yml = tmp_path / "prometheus.yml"
            prom_yml.write_text(yaml.safe_dump(prometheus_config(target, f"127.0.0.1:{am_port}")))
            with process(
                [
                    prometheus_bin,
                    f"--config.file={prom_yml}",
                    f"--storage.tsdb.path={tmp_path / 'prom-data'}",
                    "--web.listen-address=127.0.0.1:0",
                ],
                prom_log,
            ) as prometheus_proc:
                prom_port = await asyncio.to_thread(listening_port, prom_log, prometheus_proc)
                prom_url = f"http://127.0.0.1:{prom_port}"
                await wait_ready(session, f"{prom_url}/-/ready", prometheus_proc, prom_log)
                prometheus = Prometheus(session, prom_url)

                await set_autovacuum(dsn, settings.postgres_schema, enabled=False)
                workload = Workload(saver, workers=4)
                workload.start()
                try:
                    await run_scenario(prometheus, notifications, workload, settings, dsn)
                finally:
                    await workload.stop()
                await vacuum_analyze(dsn)
                await check_dashboards(prometheus, target)


async def run_scenario(
    prometheus: Prometheus,
    notifications: Notifications,
    workload: Workload,
    settings: Settings,
    dsn: str,
) -> None:
    # Healthy: the recording rule reads 0 and the page is silent.
    await eventually(
        lambda: prometheus.query(f'{ERROR_RATIO}{{job="{JOB}"}} == 0'),
        within=30,
        what="a zero error ratio recorded",
    )
    await eventually(  # some healthy history for the ratios to weigh the errors against
        lambda: prometheus.query(f'count_over_time({ERROR_RATIO}{{job="{JOB}"}}[5m]) >= 5'),
        what="five healthy evaluations of the error ratio",
    )
    assert await prometheus.value(f'{ERROR_RATIO}{{job="{JOB}"}}') == 0
    assert not await prometheus.firing(PAGE_ALERT)
    assert workload.failed == 0, "the workload failed before the fault"

    # The page must arrive while the cause lasts: the alert resolves soon after it ends.
    schema = settings.postgres_schema
    await rename_table(dsn, schema, "checkpoints", "checkpoints_away")
    try:
        page = await notifications.wait_for(PAGE_ALERT, "firing", within=45)
        assert await prometheus.firing(PAGE_ALERT)
    finally:
        await rename_table(dsn, schema, "checkpoints_away", "checkpoints")

    alert = next(a for a in page["alerts"] if a["labels"]["alertname"] == PAGE_ALERT)
    assert alert["labels"]["severity"] == "page"
    assert alert["labels"]["job"] == JOB
    assert page["receiver"] == page["path_receiver"]
    assert page["receiver"] == expected_receiver(alert["labels"])
    assert alert["annotations"]["runbook_url"].endswith("#checkpointerrorbudgetfastburn")
    causes = await prometheus.query(
        f'sum by (error) (langgraph_checkpointer_operation_errors_total{{job="{JOB}"}})'
    )
    assert {c["metric"]["error"] for c in causes} == {"UndefinedTable"}

    completed = workload.completed
    resolved = await notifications.wait_for(PAGE_ALERT, "resolved", within=90)
    assert resolved["receiver"] == page["receiver"]
    assert workload.completed > completed, "no healthy workflow after the table came back"
    assert not await prometheus.firing(PAGE_ALERT)


async def check_dashboards(prometheus: Prometheus, instance: str) -> None:
    """Every dashboard query returns data, except exactly those reading ABSENT_METRICS."""
    queries = [
        (dashboard, title, expr, set(METRIC_NAME.findall(expr)) & ABSENT_METRICS.keys())
        for dashboard, title, expr in dashboard_expressions()
    ]
    read = set().union(*(absent for *_, absent in queries))
    assert read == ABSENT_METRICS.keys(), f"no dashboard reads {ABSENT_METRICS.keys() - read}"

    async def wrong() -> list[str]:
        found = []
        for dashboard, title, expr, absent in queries:
            query = substitute(expr, job=JOB, instance=instance, builtins=GRAFANA_BUILTINS)
            if bool(await prometheus.query(query)) == bool(absent):
                state = "has data" if absent else "has no data"
                found.append(f"{dashboard} / {title}: {state}: {expr}")
        return found

    # A freshly sampled figure may take a scrape or two to arrive.
    problems: list[str] = []

    async def settled() -> bool:
        problems[:] = await wrong()
        return not problems

    try:
        await eventually(settled, what="every dashboard query to answer as expected", poll=1)
    except AssertionError as timed_out:
        raise AssertionError("\n".join(problems)) from timed_out
