"""A collector failing for a real reason costs only its own series; the scrape still answers."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any, ClassVar

import aiohttp
import psycopg
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from exporter import Sidecar
from exporter.collectors.base import ScrapeContext
from exporter.factory import prepare_schema
from exporter.scrape import (
    CONNECTION,
    DEADLINE,
    ERROR,
    FAILURES,
    LOCK_TIMEOUT,
    REASONS,
    STATEMENT_TIMEOUT,
)
from exporter.settings import Settings
from tests.ports import refused_port
from tests.samples import Samples, parse_metrics, value
from tests.serving import serving
from tests.test_sidecar import HangingCollector, RaisingCollector

COLLECTORS = ("activity", "migrations", "pool", "statements", "tables")


@pytest.fixture
async def monitor_dsn(settings: Settings, dsn: str) -> str:
    """A least-privilege monitoring role (pg_monitor, read on the schema) and its DSN."""
    await prepare_schema(dsn, settings)
    role = f"monitor_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"GRANT pg_monitor TO {role}")
        conn.execute(f"GRANT USAGE ON SCHEMA workflow_checkpoints TO {role}")
        conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA workflow_checkpoints TO {role}")
    return make_conninfo(dsn, user=role)


@pytest.fixture
def locked_migrations(dsn: str, monitor_dsn: str) -> Iterator[None]:
    """Hold checkpoint_migrations in ACCESS EXCLUSIVE mode, as a long migration would."""
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "LOCK TABLE workflow_checkpoints.checkpoint_migrations IN ACCESS EXCLUSIVE MODE"
        )
        yield
        conn.rollback()


async def scrape_all(settings: Settings) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with (
        Sidecar(settings, registry=CollectorRegistry()) as sidecar,
        aiohttp.ClientSession() as http,
        http.get(sidecar.url + "/metrics") as response,
    ):
        assert response.status == 200
        return parse_metrics(await response.text())


def assert_only_failed(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], failed: set[str]
) -> None:
    """Exactly ``failed`` report success 0 and export nothing else; the rest all succeed."""
    success = "langgraph_checkpointer_scrape_collector_success"
    for name in COLLECTORS:
        assert value(samples, success, collector=name) == (0 if name in failed else 1), name
        own = [key for key in samples if key[0].startswith(f"langgraph_checkpointer_{name}_")]
        assert bool(own) == (name not in failed), name
    assert value(samples, "langgraph_checkpointer_up") == 1


async def test_a_revoked_privilege_fails_only_its_collector(
    settings: Settings, dsn: str, monitor_dsn: str
) -> None:
    """Without SELECT on checkpoint_migrations, only the migrations collector reports failure."""
    user = conninfo_to_dict(monitor_dsn)["user"]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"REVOKE SELECT ON workflow_checkpoints.checkpoint_migrations FROM {user}")
    samples = await scrape_all(settings.replace(postgres_connection_string=monitor_dsn))
    assert_only_failed(samples, {"migrations"})
    assert value(samples, "langgraph_checkpointer_tables_exists", table="checkpoints") == 1


@pytest.mark.usefixtures("locked_migrations")
async def test_a_query_past_its_timeout_fails_only_its_collector(
    settings: Settings, monitor_dsn: str
) -> None:
    """Queries stuck behind a lock hit the exporter's timeouts; the others still report.

    Both collectors that open checkpoint_migrations wait for the lock: migrations reads
    it, and tables asks for its size, which takes a share lock on the relation.
    """
    settings = settings.replace(postgres_connection_string=monitor_dsn, collector_timeout=4.0)
    samples = await scrape_all(settings)
    assert_only_failed(samples, {"migrations", "tables"})
    for name in COLLECTORS:
        # lock_timeout (half the deadline) fires first, and the counter says so.
        expected = dict.fromkeys(REASONS, 0.0)
        if name in {"migrations", "tables"}:
            expected[LOCK_TIMEOUT] = 1.0
        assert failures(samples, name) == expected, name


def failures(samples: Samples, collector: str) -> dict[str, float]:
    return {
        reason: value(samples, FAILURES + "_total", collector=collector, reason=reason)
        for reason in REASONS
    }


class SleepingCollector:
    """Runs one statement that outlasts every limit: only a limit can end it."""

    name: ClassVar[str] = "sleeping"
    database_wide: ClassVar[bool] = False

    async def collect(self, ctx: ScrapeContext) -> list[Metric]:
        assert ctx.database is not None
        async with ctx.database.connection() as conn:
            await conn.execute("SELECT pg_sleep(3600)")
        return []


class UnreachableCollector:
    """Connects to a port where no server listens."""

    name: ClassVar[str] = "unreachable"
    database_wide: ClassVar[bool] = False

    async def collect(self, ctx: ScrapeContext) -> list[Metric]:
        await psycopg.AsyncConnection.connect(f"postgresql://x@127.0.0.1:{refused_port()}/x")
        return []


async def test_the_failures_counter_says_which_limit_fired(settings: Settings) -> None:
    """Each way of failing has its own reason, counted per scrape from zero.

    The server's statement_timeout (80 % of the deadline) ends the sleeping statement
    before the collector's deadline does; a wait on no database at all meets the deadline.
    """
    settings = settings.replace(collector_timeout=2.0)
    collectors: Any = (
        SleepingCollector(),
        HangingCollector(),
        UnreachableCollector(),
        RaisingCollector(),
    )
    expected = {
        "sleeping": STATEMENT_TIMEOUT,
        "hanging": DEADLINE,
        "unreachable": CONNECTION,
        "raising": ERROR,
    }
    async with serving(settings, *collectors) as served:
        for scrapes in (1, 2):
            samples = await served.scrape()
            for name, reason in expected.items():
                counts = dict.fromkeys(REASONS, 0.0)
                counts[reason] = float(scrapes)
                assert failures(samples, name) == counts, name
