"""The sidecar's HTTP surface over real HTTP, against a real database (or a missing one)."""

from __future__ import annotations

import asyncio
import gzip
import uuid
from collections.abc import AsyncIterator
from time import monotonic
from typing import Any, ClassVar
from urllib.parse import quote

import aiohttp
import psycopg
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from psycopg.conninfo import conninfo_to_dict

from exporter import Sidecar, build_checkpointer
from exporter.collectors.base import ScrapeContext
from exporter.collectors.pool import PoolCollector
from exporter.settings import ListenAddress, Settings
from tests.graphs import config, review_graph
from tests.ports import refused_port
from tests.samples import parse_metrics, value

PASSWORD = "development_password"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


def password_url(dsn: str, user: str) -> str:
    """``dsn`` as a URL logging in as ``user`` with PASSWORD (sockets go in ``host=``)."""
    params = conninfo_to_dict(dsn)
    host = str(params.get("host") or "localhost")
    port = str(params.get("port") or "5432")
    database = str(params["dbname"])
    if host.startswith("/"):
        return f"postgresql://{user}:{PASSWORD}@/{database}?host={quote(host)}&port={port}"
    return f"postgresql://{user}:{PASSWORD}@{host}:{port}/{database}"


@pytest.fixture
def password_dsn(dsn: str) -> str:
    """A URL to this test's database for a role that logs in with a password."""
    role = f"claude_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{PASSWORD}'")
        conn.execute(f"GRANT ALL ON DATABASE {conninfo_to_dict(dsn)['dbname']} TO {role}")
        conn.execute(f"GRANT pg_monitor TO {role}")
    return password_url(dsn, role)


async def test_standalone_sidecar_reports_a_healthy_database(
    settings: Settings, password_dsn: str, http: aiohttp.ClientSession
) -> None:
    """Health is the design note's document: healthy, PostgresSaver, password masked."""
    settings = settings.replace(postgres_connection_string=password_dsn)
    async with (
        Sidecar(settings, registry=CollectorRegistry()) as sidecar,
        http.get(sidecar.url + "/api/health/checkpointer") as response,
    ):
        assert response.status == 200
        body = await response.text()
        document = await response.json()
    assert PASSWORD not in body
    assert document["status"] == "healthy"
    assert document["checkpointer"] == "PostgresSaver"
    postgres = document["postgres"]
    assert postgres["connected"] is True
    assert postgres["schema"] == "workflow_checkpoints"
    assert postgres["connectionString"] == password_dsn.replace(PASSWORD, "***")
    assert ":***@" in postgres["connectionString"]
    assert postgres["serverVersion"]
    assert document["fallback"] == {"active": False, "reason": None}


async def test_metrics_from_an_application_sidecar(
    settings: Settings, http: aiohttp.ClientSession
) -> None:
    """In-process, /metrics carries the saver's operations, both pools and the identity."""
    registry = CollectorRegistry()
    async with (
        build_checkpointer(settings, registry=registry) as saver,
        Sidecar(settings, checkpointer=saver, registry=registry) as sidecar,
    ):
        await review_graph(saver).ainvoke({"n": 1}, config("t"))
        async with http.get(sidecar.url + "/metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            samples = parse_metrics(await response.text())
        async with http.get(sidecar.url + "/api/health/checkpointer") as response:
            document = await response.json()
    saver_labels = {"saver": "AsyncPostgresSaver"}
    assert value(samples, "langgraph_checkpointer_up") == 1
    assert (
        value(
            samples,
            "langgraph_checkpointer_info",
            checkpointer="PostgresSaver",
            saver="AsyncPostgresSaver",
            schema="workflow_checkpoints",
        )
        == 1
    )
    assert value(samples, "langgraph_checkpointer_fallback_active") == 0
    assert (
        value(samples, "langgraph_checkpointer_operations_total", operation="put", **saver_labels)
        == 5
    )
    assert (
        value(
            samples,
            "langgraph_checkpointer_operations_total",
            operation="get_tuple",
            **saver_labels,
        )
        == 1
    )
    assert value(samples, "langgraph_checkpointer_pool_max_connections", pool="checkpointer") == 10
    assert (
        value(samples, "langgraph_checkpointer_pool_max_connections", pool="exporter")
        == settings.exporter_pool_size
    )
    assert value(samples, "langgraph_checkpointer_pool_requests_total", pool="checkpointer") >= 5
    assert value(samples, "langgraph_checkpointer_scrape_collector_success", collector="pool") == 1
    assert document["saver"] == "AsyncPostgresSaver"
    assert document["pool"]["max"] == 10
    assert document["lastError"] is None


async def test_metrics_negotiation_compression_and_filtering(
    memory_settings: Settings, http: aiohttp.ClientSession
) -> None:
    """OpenMetrics on request, gzip on request, and name[] narrowing the families."""
    async with Sidecar(memory_settings, registry=CollectorRegistry()) as sidecar:
        url = sidecar.url + "/metrics"
        headers = {"Accept": "application/openmetrics-text; version=1.0.0"}
        async with http.get(url, headers=headers) as response:
            assert response.headers["Content-Type"].startswith("application/openmetrics-text")
            assert (await response.text()).endswith("# EOF\n")
        async with http.get(
            url, headers={"Accept-Encoding": "gzip"}, auto_decompress=False
        ) as response:
            assert response.headers["Content-Encoding"] == "gzip"
            text = gzip.decompress(await response.read()).decode()
            assert "langgraph_checkpointer_up 1.0" in text
        async with http.get(url, params=[("name[]", "langgraph_checkpointer_up")]) as response:
            names = {f.name for f in text_string_to_metric_families(await response.text())}
            assert names == {"langgraph_checkpointer_up"}


PROMETHEUS_3_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;"
    "version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,"
    "text/plain;version=0.0.4;q=0.2,*/*;q=0.1"
)
TEXT_0_0_4 = "text/plain; version=0.0.4; charset=utf-8"


@pytest.mark.parametrize(
    ("accept_encoding", "encoding"),
    [
        ("gzip;q=0", None),
        ("gzip, deflate, br", "gzip"),
        ("deflate, br", None),
        ("deflate;q=1, gzip;q=0.5", "gzip"),
        ("*", "gzip"),
        ("gzip;q=0, *", None),
        ("identity", None),
    ],
)
async def test_compression_follows_the_quality_values(
    memory_settings: Settings, http: aiohttp.ClientSession, accept_encoding: str, encoding: str
) -> None:
    """gzip when acceptable (q above 0, by name or by *), identity otherwise; never deflate."""
    headers = {"Accept-Encoding": accept_encoding}
    async with (
        Sidecar(memory_settings, registry=CollectorRegistry()) as sidecar,
        http.get(sidecar.url + "/metrics", headers=headers, auto_decompress=False) as response,
    ):
        body = await response.read()
        assert response.headers.get("Content-Encoding") == encoding
        assert "Accept-Encoding" in response.headers["Vary"]
    text = gzip.decompress(body) if encoding else body
    assert b"langgraph_checkpointer_up 1.0" in text


@pytest.mark.parametrize(
    ("accept", "content_type"),
    [
        ("application/openmetrics-text; version=999999999.0", TEXT_0_0_4),
        ("application/openmetrics-text; version=0.0.1", TEXT_0_0_4),
        ("application/openmetrics-text; version=1.0", TEXT_0_0_4),
        ("application/openmetrics-text;q=0", TEXT_0_0_4),
        (
            "application/openmetrics-text; version=999.0, application/openmetrics-text;"
            " version=1.0.0",
            "application/openmetrics-text; version=1.0.0",
        ),
        (
            "text/plain;q=0.1, application/openmetrics-text;q=0.9",
            "application/openmetrics-text; version=1.0.0",
        ),
        (PROMETHEUS_3_ACCEPT, "application/openmetrics-text; version=1.0.0"),
    ],
)
async def test_openmetrics_only_in_a_version_prometheus_client_writes(
    memory_settings: Settings, http: aiohttp.ClientSession, accept: str, content_type: str
) -> None:
    """An unknown or refused OpenMetrics version falls back to text 0.0.4, never echoed back."""
    async with (
        Sidecar(memory_settings, registry=CollectorRegistry()) as sidecar,
        http.get(sidecar.url + "/metrics", headers={"Accept": accept}) as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"].startswith(content_type)
        text = await response.text()
    assert text.endswith("# EOF\n") == content_type.startswith("application/openmetrics-text")


async def test_database_down_keeps_metrics_answering(
    settings: Settings, http: aiohttp.ClientSession
) -> None:
    """With PostgreSQL unreachable: /metrics 200 with up 0, health and readiness 503, quickly."""
    url = f"postgresql://claude:{PASSWORD}@127.0.0.1:{refused_port()}/claude_studio"
    settings = settings.replace(postgres_connection_string=url, collector_timeout=1.0)
    async with Sidecar(settings, registry=CollectorRegistry()) as sidecar:
        started = monotonic()
        async with http.get(sidecar.url + "/metrics") as response:
            assert response.status == 200
            text = await response.text()
        assert monotonic() - started < 3 * settings.collector_timeout
        assert value(parse_metrics(text), "langgraph_checkpointer_up") == 0
        async with http.get(sidecar.url + "/api/health/checkpointer") as response:
            assert response.status == 503
            body = await response.text()
            document = await response.json()
        async with http.get(sidecar.url + "/readyz") as response:
            assert response.status == 503
        async with http.get(sidecar.url + "/healthz") as response:
            assert response.status == 200
    assert PASSWORD not in body
    assert PASSWORD not in text
    assert document["status"] == "unhealthy"
    assert document["postgres"]["connected"] is False
    assert document["postgres"]["error"]


@pytest.mark.parametrize("leader_election", [True, False], ids=["elected", "every-sidecar"])
async def test_database_down_reports_every_enabled_collector(
    settings: Settings, http: aiohttp.ClientSession, leader_election: bool
) -> None:
    """With connections refused, each enabled collector reports its success and duration;
    every database-wide one reports 0, as the README says failing collectors do."""
    url = f"postgresql://claude:{PASSWORD}@127.0.0.1:{refused_port()}/claude_studio"
    settings = settings.replace(
        postgres_connection_string=url, collector_timeout=1.0, leader_election=leader_election
    )
    async with Sidecar(settings, registry=CollectorRegistry()) as sidecar:
        async with http.get(sidecar.url + "/metrics") as response:
            samples = parse_metrics(await response.text())
        wide = {c.name for c in sidecar.collectors if c.database_wide}
    success = "langgraph_checkpointer_scrape_collector_success"
    duration = "langgraph_checkpointer_scrape_collector_duration_seconds"
    reported = {dict(labels)["collector"] for name, labels in samples if name == success}
    assert reported == set(settings.collectors)
    assert {dict(labels)["collector"] for name, labels in samples if name == duration} == reported
    # Without election, each collector runs and fails on its own; those reading what the
    # canary and the recovery check last found succeed.
    failed = wide if leader_election else {"activity", "migrations", "tables", "workflows"}
    assert failed <= wide
    assert all(value(samples, success, collector=name) == 0 for name in failed)
    assert value(samples, success, collector="pool") == 1


async def test_memory_mode_and_fallback_health(
    memory_settings: Settings, settings: Settings, http: aiohttp.ClientSession
) -> None:
    """The in-memory saver is healthy; a fallback to it is degraded, and metrics say so."""
    async with (
        Sidecar(memory_settings, registry=CollectorRegistry()) as sidecar,
        http.get(sidecar.url + "/api/health/checkpointer") as response,
    ):
        assert response.status == 200
        document = await response.json()
    assert document["status"] == "healthy"
    assert document["checkpointer"] == "MemorySaver"
    assert document["postgres"]["enabled"] is False
    assert document["postgres"]["connectionString"] is None

    url = f"postgresql://claude:{PASSWORD}@127.0.0.1:{refused_port()}/claude_studio"
    fallback = settings.replace(
        postgres_connection_string=url, fallback_to_memory=True, collector_timeout=1.0
    )
    registry = CollectorRegistry()
    async with (
        build_checkpointer(fallback, registry=registry) as saver,
        Sidecar(fallback, checkpointer=saver, registry=registry) as sidecar,
    ):
        async with http.get(sidecar.url + "/api/health/checkpointer") as response:
            assert response.status == 200
            document = await response.json()
        async with http.get(sidecar.url + "/metrics") as response:
            samples = parse_metrics(await response.text())
    assert document["status"] == "degraded"
    assert document["checkpointer"] == "MemorySaver"
    assert document["fallback"]["active"] is True
    assert document["postgres"]["connectionString"] == url.replace(PASSWORD, "***")
    assert value(samples, "langgraph_checkpointer_fallback_active") == 1
    assert value(samples, "langgraph_checkpointer_up") == 0


async def test_routes_methods_and_unknown_paths(
    memory_settings: Settings, http: aiohttp.ClientSession
) -> None:
    """The landing page links every endpoint; unknown paths 404, wrong methods 405."""
    async with Sidecar(memory_settings, registry=CollectorRegistry()) as sidecar:
        async with http.get(sidecar.url + "/") as response:
            assert response.status == 200
            page = await response.text()
        for path in ("/metrics", "/api/health/checkpointer", "/healthz", "/readyz"):
            assert f'href="{path}"' in page
            async with http.get(sidecar.url + path) as response:
                assert response.status == 200, path
        async with http.get(sidecar.url + "/nope") as response:
            assert response.status == 404
        async with http.post(sidecar.url + "/metrics") as response:
            assert response.status == 405
        async with http.delete(sidecar.url + "/api/health/checkpointer") as response:
            assert response.status == 405


class RaisingCollector:
    """Fails the way a broken query does."""

    name: ClassVar[str] = "raising"
    database_wide: ClassVar[bool] = False

    async def collect(self, ctx: ScrapeContext) -> list[Metric]:
        raise RuntimeError("relation does not exist")


class HangingCollector:
    """Never answers, like a query stuck behind a lock."""

    name: ClassVar[str] = "hanging"
    database_wide: ClassVar[bool] = False

    async def collect(self, ctx: ScrapeContext) -> list[Metric]:
        await asyncio.Event().wait()
        return []


async def test_failing_collectors_are_isolated(
    settings: Settings, http: aiohttp.ClientSession
) -> None:
    """A raising and a hanging collector report success 0; everything else still appears."""
    settings = settings.replace(collector_timeout=0.5)
    collectors: Any = (PoolCollector(), RaisingCollector(), HangingCollector())
    async with Sidecar(settings, registry=CollectorRegistry(), collectors=collectors) as sidecar:
        started = monotonic()
        async with http.get(sidecar.url + "/metrics") as response:
            assert response.status == 200
            samples = parse_metrics(await response.text())
        elapsed = monotonic() - started
    success = "langgraph_checkpointer_scrape_collector_success"
    assert value(samples, success, collector="pool") == 1
    assert value(samples, success, collector="raising") == 0
    assert value(samples, success, collector="hanging") == 0
    hung = value(
        samples, "langgraph_checkpointer_scrape_collector_duration_seconds", collector="hanging"
    )
    assert 0.5 <= hung < 1.5
    assert elapsed < 2.0
    assert value(samples, "langgraph_checkpointer_up") == 1
    assert (
        value(samples, "langgraph_checkpointer_pool_max_connections", pool="exporter")
        == settings.exporter_pool_size
    )


async def test_concurrent_scrapes_each_get_a_whole_exposition(
    settings: Settings, http: aiohttp.ClientSession
) -> None:
    """Scrapes that overlap neither block each other nor mix their results."""
    async with Sidecar(settings, registry=CollectorRegistry()) as sidecar:

        async def scrape() -> str:
            async with http.get(sidecar.url + "/metrics") as response:
                assert response.status == 200
                return await response.text()

        texts = await asyncio.gather(*(scrape() for _ in range(20)))
    series_of_first = sorted(series_lines(texts[0]))
    for text in texts:
        series = series_lines(text)
        # Every series exactly once: a scrape mixed into another would repeat some.
        assert len(series) == len(set(series))
        assert sorted(series) == series_of_first
        pool_success = 'langgraph_checkpointer_scrape_collector_success{collector="pool"}'
        assert series.count(pool_success) == 1
        assert value(parse_metrics(text), "langgraph_checkpointer_up") == 1


def series_lines(text: str) -> list[str]:
    """The series (name and labels, no value) of every sample line of an exposition."""
    return [line.rsplit(" ", 1)[0] for line in text.splitlines() if not line.startswith("#")]


async def test_a_taken_port_fails_start_and_releases_the_pool(settings: Settings) -> None:
    """Binding a port in use raises OSError, and the exporter's pool is closed again."""
    async with Sidecar(settings, registry=CollectorRegistry()) as first:
        taken = settings.replace(listen_address=ListenAddress("127.0.0.1", first.port))
        second = Sidecar(taken, registry=CollectorRegistry())
        with pytest.raises(OSError, match="address already in use"):
            await second.start()
        assert second.context().database is not None
        assert second.context().database.closed  # type: ignore[union-attr]
