"""Shared fixtures: a real PostgreSQL, a fresh database per test, a fresh registry per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from prometheus_client import CollectorRegistry

from exporter.settings import ListenAddress, Settings
from tests.debian_postgres import debian_postgres, require_bindir
from tests.postgres import fresh_database, postgres_server


@pytest.fixture(scope="session")
def admin_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """DSN of the session's PostgreSQL server (see tests/postgres.py for where it comes from)."""
    with postgres_server(tmp_path_factory.mktemp("pg")) as dsn:
        yield dsn


@pytest.fixture
def dsn(admin_dsn: str) -> Iterator[str]:
    """A database of its own for this test."""
    with fresh_database(admin_dsn) as database:
        yield database


@pytest.fixture(scope="session")
def debian_admin_dsn() -> Iterator[str]:
    """A distribution PostgreSQL with pg_stat_statements preloaded, for the whole session.

    Skips where no such server is installed, except under ``CI=true``, where it fails.
    """
    with debian_postgres(require_bindir()) as dsn:
        yield dsn


@pytest.fixture
def statements_dsn(debian_admin_dsn: str) -> Iterator[str]:
    """A fresh database on that server with the pg_stat_statements extension created in it."""
    with fresh_database(debian_admin_dsn) as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION pg_stat_statements")
        yield dsn


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def settings(dsn: str, tmp_path: Path) -> Settings:
    """Settings for a PostgreSQL-backed checkpointer in this test's database, on a free port."""
    return Settings(
        postgres_connection_string=dsn,
        listen_address=ListenAddress("127.0.0.1", 0),
        data_dir=tmp_path / "pgdata",
        collector_timeout=2.0,
        connect_timeout=2.0,
        pool_timeout=5.0,
    )


@pytest.fixture
def memory_settings(tmp_path: Path) -> Settings:
    return Settings(
        use_postgres_saver=False,
        listen_address=ListenAddress("127.0.0.1", 0),
        data_dir=tmp_path / "pgdata",
    )
