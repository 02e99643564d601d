"""Health and readiness during an outage: a 503 in time, with the real cause, and a quiet log."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from itertools import pairwise
from time import monotonic
from typing import Any

import aiohttp
import psycopg
import pytest
from prometheus_client import CollectorRegistry
from psycopg.conninfo import make_conninfo
from structlog.testing import capture_logs

from exporter import Sidecar, build_checkpointer
from exporter.causes import (
    AUTHENTICATION_FAILED,
    CONNECTION_REFUSED,
    DATABASE_NOT_FOUND,
    TIMEOUT,
    TOO_MANY_CONNECTIONS,
)
from exporter.health import DATABASE_CHECK
from exporter.outage import OutageLog
from exporter.server import HEALTH_PATH
from exporter.settings import Settings
from tests.faults.proxy import FaultyProxy, proxy_for
from tests.samples import Clock

# The probe budgets the endpoints must meet: Kubernetes gives a probe 1 s by default.
REFUSED_BUDGET = 0.25
HANG_BUDGET = 1.0
PASSWORD = "s3cr3t-pw-outage"


@pytest.fixture
def proxy(dsn: str) -> Iterator[FaultyProxy]:
    """A TCP proxy in front of this test's database, to refuse or stall it at will."""
    with proxy_for(dsn) as proxy:
        yield proxy


def through(dsn: str, proxy: FaultyProxy, **changes: Any) -> str:
    """``dsn`` reached through ``proxy``, with a password that must never be shown."""
    return make_conninfo(dsn, host="127.0.0.1", port=proxy.port, password=PASSWORD, **changes)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def timed_get(
    http: aiohttp.ClientSession, url: str
) -> tuple[int, dict[str, Any], str, float]:
    """Status, JSON body, raw text and seconds taken of one GET."""
    started = monotonic()
    async with http.get(url) as response:
        text = await response.text()
        body = await response.json()
        return response.status, body, text, monotonic() - started


async def answers(sidecar: Sidecar, http: aiohttp.ClientSession) -> dict[str, Any]:
    """Health and readiness once each: status, body and time, with no password in either."""
    result = {}
    for path in (HEALTH_PATH, "/readyz"):
        status, body, text, seconds = await timed_get(http, sidecar.url + path)
        assert PASSWORD not in text
        result[path] = (status, body, seconds)
    return result


def standalone(settings: Settings, conninfo: str) -> Settings:
    # The canary's verdict is not what these tests are about; rule 2 is.
    return settings.replace(postgres_connection_string=conninfo, canary_interval=0)


async def test_refused_connections_answer_503_at_once_naming_the_cause(
    settings: Settings, dsn: str, proxy: FaultyProxy, http: aiohttp.ClientSession
) -> None:
    """Up, then refused: both probes turn 503 well inside 250 ms, saying connection_refused."""
    settings = standalone(settings, through(dsn, proxy))
    async with Sidecar(settings, registry=CollectorRegistry()) as sidecar:
        up = await answers(sidecar, http)
        assert up[HEALTH_PATH][0] == 200
        assert up["/readyz"][0] == 200
        proxy.refuse()
        for _ in range(5):
            down = await answers(sidecar, http)
            status, body, seconds = down[HEALTH_PATH]
            assert status == 503
            assert seconds < REFUSED_BUDGET
            assert body["status"] == "unhealthy"
            assert body["postgres"]["connected"] is False
            assert body["postgres"]["cause"] == CONNECTION_REFUSED
            assert body["lastError"]["operation"] == DATABASE_CHECK
            assert body["lastError"]["cause"] == CONNECTION_REFUSED
            assert body["lastError"]["error"] == "OperationalError"
            assert "refused" in body["lastError"]["message"].lower()
            status, body, seconds = down["/readyz"]
            assert (status, body["ready"], body["cause"]) == (503, False, CONNECTION_REFUSED)
            assert seconds < REFUSED_BUDGET
        proxy.heal()
        healed = await answers(sidecar, http)
        assert healed[HEALTH_PATH][0] == 200
        assert healed[HEALTH_PATH][1]["lastError"] is None
        assert healed["/readyz"][0] == 200


async def test_a_database_that_never_answers_gets_503_within_a_second(
    settings: Settings, dsn: str, proxy: FaultyProxy, http: aiohttp.ClientSession
) -> None:
    """Accepting TCP but never answering: 503 within 1 s, cause timeout, every time.

    Once on the connection the check already had (the query hangs), then on fresh ones
    (the connection attempt hangs).
    """
    settings = standalone(settings, through(dsn, proxy))
    async with Sidecar(settings, registry=CollectorRegistry()) as sidecar:
        assert (await answers(sidecar, http))[HEALTH_PATH][0] == 200
        proxy.delay(3600)
        for _ in range(3):
            down = await answers(sidecar, http)
            for path in (HEALTH_PATH, "/readyz"):
                status, _, seconds = down[path]
                assert status == 503, path
                assert seconds < HANG_BUDGET, path
            assert down[HEALTH_PATH][1]["lastError"]["cause"] == TIMEOUT
            assert down["/readyz"][1]["cause"] == TIMEOUT
        proxy.heal()
        assert (await answers(sidecar, http))[HEALTH_PATH][0] == 200


async def test_concurrent_probes_share_one_check(
    settings: Settings, dsn: str, proxy: FaultyProxy, http: aiohttp.ClientSession
) -> None:
    """Twenty probes at once against a hung database: all answer in time, one attempt made."""
    settings = standalone(settings, through(dsn, proxy)).replace(leader_election=False)
    async with Sidecar(settings, registry=CollectorRegistry()) as sidecar:
        proxy.delay(3600)
        accepted = proxy.accepted
        results = await asyncio.gather(
            *(timed_get(http, sidecar.url + HEALTH_PATH) for _ in range(20))
        )
        assert all(status == 503 and seconds < HANG_BUDGET for status, _, _, seconds in results)
        # The check's own connection, plus what the exporter's pool opened meanwhile.
        assert proxy.accepted - accepted <= 1 + settings.exporter_pool_size


@pytest.mark.parametrize(
    ("change", "cause"),
    [
        ("user", AUTHENTICATION_FAILED),
        ("dbname", DATABASE_NOT_FOUND),
        ("connection_limit", TOO_MANY_CONNECTIONS),
    ],
)
async def test_a_refused_session_names_what_the_server_said(
    settings: Settings, dsn: str, http: aiohttp.ClientSession, change: str, cause: str
) -> None:
    """The server's own refusal (no such role, no such database, no slot left) is the cause."""
    if change == "user":
        conninfo = make_conninfo(dsn, user=f"nobody_{uuid.uuid4().hex[:8]}", password=PASSWORD)
    elif change == "dbname":
        conninfo = make_conninfo(dsn, dbname=f"missing_{uuid.uuid4().hex[:8]}", password=PASSWORD)
    else:
        role = f"limited_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 0")
        conninfo = make_conninfo(dsn, user=role, password=PASSWORD)
    settings = standalone(settings, conninfo)
    async with Sidecar(settings, registry=CollectorRegistry()) as sidecar:
        down = await answers(sidecar, http)
    status, body, _ = down[HEALTH_PATH]
    assert status == 503
    assert body["lastError"]["cause"] == cause
    assert body["postgres"]["cause"] == cause
    assert down["/readyz"][1]["cause"] == cause


async def test_health_takes_no_connection_from_the_applications_pool(
    settings: Settings, http: aiohttp.ClientSession
) -> None:
    """In process, probes never borrow from the checkpointer's pool, nor from the exporter's."""
    async with (
        build_checkpointer(settings, registry=CollectorRegistry()) as saver,
        Sidecar(settings, checkpointer=saver, registry=CollectorRegistry()) as sidecar,
    ):
        assert saver.backend is not None
        assert saver.backend.pool is not None
        exporter_pool = sidecar.context().database
        assert exporter_pool is not None
        before = (
            saver.backend.pool.get_stats().get("requests_num", 0),
            exporter_pool.get_stats().get("requests_num", 0),
        )
        for _ in range(10):
            assert (await answers(sidecar, http))[HEALTH_PATH][0] == 200
        after = (
            saver.backend.pool.get_stats().get("requests_num", 0),
            exporter_pool.get_stats().get("requests_num", 0),
        )
    assert after == before


async def test_an_outage_logs_a_start_and_an_end_and_no_pool_warnings(
    settings: Settings,
    dsn: str,
    proxy: FaultyProxy,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """psycopg_pool's warning per reconnection attempt is folded into one outage-started
    line, and recovery logs one line with the outage's length."""
    settings = standalone(settings, through(dsn, proxy))
    caplog.set_level(logging.INFO, logger="psycopg.pool")
    with capture_logs() as events:
        async with Sidecar(settings, registry=CollectorRegistry()) as sidecar:
            assert (await answers(sidecar, http))[HEALTH_PATH][0] == 200
            pool = sidecar.context().database
            assert pool is not None
            proxy.refuse()
            # The exporter's pool finds its connection broken and retries, failing each
            # time (a warning each from psycopg_pool): probe until it has failed twice.
            await pool.check()
            while pool.get_stats().get("connections_errors", 0) < 2:
                assert (await answers(sidecar, http))[HEALTH_PATH][0] == 503
                await asyncio.sleep(0.1)
            proxy.heal()
            assert (await answers(sidecar, http))[HEALTH_PATH][0] == 200
    lines = [event for event in events if event["event"].startswith("database_")]
    names = [event["event"] for event in lines]
    assert names[0] == "database_unreachable"
    assert names[-1] == "database_reachable_again"
    # Between them, a reminder only when the cause changed (a probe that timed out on a
    # loaded machine, say): the outage is far shorter than the reminder interval.
    causes = [event["cause"] for event in lines[:-1]]
    assert set(names[1:-1]) <= {"database_still_unreachable"}
    assert all(before != after for before, after in pairwise(causes))
    started = next(e for e in events if e["event"] == "database_unreachable")
    assert started["cause"] == CONNECTION_REFUSED
    ended = next(e for e in events if e["event"] == "database_reachable_again")
    assert ended["outage_seconds"] > 0
    assert ended["failed_attempts"] >= 3
    assert not [r for r in caplog.records if r.getMessage().startswith("error connecting in")]
    assert PASSWORD not in caplog.text
    assert all(PASSWORD not in str(event) for event in events)


def test_an_outage_reminds_at_most_once_per_interval() -> None:
    """Failures inside the interval are counted, not logged; a changed cause is said at once."""
    clock = Clock()
    outages = OutageLog(remind_every=60.0, clock=clock)
    with capture_logs() as events:
        outages.failed("pool exporter", CONNECTION_REFUSED, "refused")
        for _ in range(10):
            clock.now += 5.0
            outages.failed("pool exporter", CONNECTION_REFUSED, "refused")
        clock.now += 10.0
        outages.failed("health check", CONNECTION_REFUSED, "refused")
        clock.now += 1.0
        outages.failed("health check", TIMEOUT, "no answer")
        clock.now += 1.0
        outages.answered("health check")
        outages.answered("health check")
    assert [(e["event"], e.get("failed_attempts")) for e in events] == [
        ("database_unreachable", None),
        ("database_still_unreachable", 12),
        ("database_still_unreachable", 13),
        ("database_reachable_again", 13),
    ]
    assert events[1]["outage_seconds"] == 60.0
    assert events[-1]["outage_seconds"] == 62.0
    assert not outages.down
