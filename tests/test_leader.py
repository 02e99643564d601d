"""One sidecar per database runs the database-wide collectors, and another takes over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import ClassVar

import aiohttp
import psycopg
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from exporter import Sidecar
from exporter.collectors.base import ScrapeContext
from exporter.collectors.pool import PoolCollector
from exporter.settings import Settings
from exporter.sql.locks import LEADER_LOCK_KEY
from tests.logstream import LogStream, started_url
from tests.ports import refused_port
from tests.samples import Samples, parse_metrics, value
from tests.test_serve import wait_until_serving
from tests.waiting import eventually

WIDE = "langgraph_checkpointer_test_wide"


class WideCollector:
    """A database-wide collector that only says it ran."""

    name: ClassVar[str] = "wide"
    database_wide: ClassVar[bool] = True

    async def collect(self, ctx: ScrapeContext) -> list[Metric]:
        return [GaugeMetricFamily(WIDE, "Ran on this sidecar.", value=1.0)]


def sidecar(settings: Settings) -> Sidecar:
    return Sidecar(settings, registry=CollectorRegistry(),
                   collectors=(PoolCollector(), WideCollector()))  # fmt: skip


async def scrape(http: aiohttp.ClientSession, car: Sidecar) -> Samples:
    async with http.get(car.url + "/metrics") as response:
        assert response.status == 200
        return parse_metrics(await response.text())


def leads(samples: Samples) -> bool:
    """Leader gauge and database-wide series agree, and say whether this sidecar leads."""
    leader = value(samples, "langgraph_checkpointer_leader") == 1
    assert ((WIDE, ()) in samples) == leader
    success = ("langgraph_checkpointer_scrape_collector_success", (("collector", "wide"),))
    assert (success in samples) == leader
    assert value(samples, "langgraph_checkpointer_scrape_collector_success", collector="pool") == 1
    return leader


# The backends holding this test's leader lock: its key pair (objsubid 2) in its own
# database. pg_locks spans the cluster, and other advisory locks (the canary's, schema
# setup's) or other tests' sidecars must neither count nor be terminated.
LEADER_LOCK_HOLDERS = """
SELECT pid FROM pg_locks
WHERE locktype = 'advisory' AND granted AND objsubid = 2
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND classid = %s::oid AND objid = hashtext(%s)::oid
"""


def leader_pids(dsn: str, schema: str) -> list[int]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(LEADER_LOCK_HOLDERS, (LEADER_LOCK_KEY, schema)).fetchall()
    return [int(row[0]) for row in rows]


def lock_holders(dsn: str, schema: str) -> int:
    return len(leader_pids(dsn, schema))


async def test_exactly_one_of_two_sidecars_leads(settings: Settings, dsn: str) -> None:
    """Two sidecars on one database: one leads; stop it and the other takes over."""
    async with aiohttp.ClientSession() as http:
        first, second = sidecar(settings), sidecar(settings)
        await first.start()
        await second.start()
        try:
            verdicts = [leads(await scrape(http, car)) for car in (first, second, first, second)]
            assert verdicts == [True, False, True, False]
            assert lock_holders(dsn, settings.postgres_schema) == 1
            await first.stop()
            assert lock_holders(dsn, settings.postgres_schema) == 0
            assert leads(await scrape(http, second))
        finally:
            await first.stop()
            await second.stop()


async def test_without_election_every_sidecar_collects(settings: Settings) -> None:
    """With leader election off, each sidecar runs the database-wide collectors."""
    settings = settings.replace(leader_election=False)
    async with aiohttp.ClientSession() as http, sidecar(settings) as one, sidecar(settings) as two:
        assert leads(await scrape(http, one))
        assert leads(await scrape(http, two))


SUCCESS = "langgraph_checkpointer_scrape_collector_success"
DURATION = "langgraph_checkpointer_scrape_collector_duration_seconds"
FAILURES = "langgraph_checkpointer_scrape_collector_failures_total"


async def test_no_database_means_no_leadership_and_failed_wide_collectors(
    settings: Settings,
) -> None:
    """An unreachable database: not leading, no database-wide series, yet those collectors
    report success 0 and their duration on every scrape, so an alert on failure can fire.

    No sidecar can tell whether it would lead; each one that cannot reach the database says
    its database-wide collectors could not run, with reason ``connection``.
    """
    url = f"postgresql://u:pw@127.0.0.1:{refused_port()}/db"
    settings = settings.replace(postgres_connection_string=url, collector_timeout=1.0)
    async with aiohttp.ClientSession() as http, sidecar(settings) as car:
        for scrapes in (1, 2):
            samples = await scrape(http, car)
            assert value(samples, "langgraph_checkpointer_leader") == 0
            assert value(samples, "langgraph_checkpointer_up") == 0
            assert (WIDE, ()) not in samples
            assert value(samples, SUCCESS, collector="wide") == 0
            assert value(samples, DURATION, collector="wide") >= 0
            assert value(samples, SUCCESS, collector="pool") == 1
            assert value(samples, FAILURES, collector="wide", reason="connection") == scrapes


@pytest.fixture
def serve_process(dsn: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A standalone sidecar process on the test's database, on the port it chose."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CHECKPOINT_EXPORTER_", "POSTGRES_", "USE_POSTGRES"))}  # fmt: skip
    env["POSTGRES_CONNECTION_STRING"] = dsn
    process = subprocess.Popen(
        [sys.executable, "-m", "exporter", "serve", "--web.listen-address", "127.0.0.1:0",
         "--log.format=json"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    log = LogStream(process.stderr)
    try:
        yield process, started_url(log)
    finally:
        process.kill()
        process.wait(timeout=30)
        log.output()


async def test_a_killed_leader_is_replaced_at_the_next_scrape(
    settings: Settings, dsn: str, serve_process: tuple[subprocess.Popen[bytes], str]
) -> None:
    """SIGKILL the leading process: PostgreSQL frees its lock and the survivor leads next."""
    process, url = serve_process
    wait_until_serving(url + "/healthz", process, 60)
    async with aiohttp.ClientSession() as http, sidecar(settings) as survivor:
        async with http.get(url + "/metrics") as response:
            assert value(parse_metrics(await response.text()), "langgraph_checkpointer_leader") == 1
        assert not leads(await scrape(http, survivor))
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        # Polling the catalog: nothing signals when the server ends the dead session.
        await eventually(lambda: not lock_holders(dsn, settings.postgres_schema))
        assert leads(await scrape(http, survivor))


async def test_a_leader_whose_session_dies_drops_that_scrapes_wide_results(
    settings: Settings, dsn: str
) -> None:
    """The leader runs its collectors while confirming its session; a lost session voids them.

    Its session is terminated and another sidecar takes the lock: the former leader's
    next scrape shows no database-wide series and ``leader 0``, yet ``up 1``.
    """
    async with aiohttp.ClientSession() as http, sidecar(settings) as first:
        assert leads(await scrape(http, first))
        schema = settings.postgres_schema
        holders = leader_pids(dsn, schema)
        assert len(holders) == 1  # the first sidecar's leader session, and nothing else
        with psycopg.connect(dsn, autocommit=True) as conn:
            terminated = conn.execute("SELECT pg_terminate_backend(%s)", (holders[0],)).fetchone()
        assert terminated == (True,)
        # The backend exits a moment after it is told to.
        await eventually(lambda: not lock_holders(dsn, schema))
        async with sidecar(settings) as second:
            assert leads(await scrape(http, second))
            samples = await scrape(http, first)
            assert not leads(samples)
            assert value(samples, "langgraph_checkpointer_up") == 1
            assert not leads(await scrape(http, first))
        # The other sidecar is gone: the former leader takes the lock back.
        assert leads(await scrape(http, first))
