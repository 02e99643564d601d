"""Where the tests' PostgreSQL comes from: an explicit DSN, a container, or an embedded server."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

TEST_DSN_VARIABLE = "CHECKPOINT_EXPORTER_TEST_DSN"


def docker_available() -> bool:
    """A Docker engine answers (the client alone is not enough)."""
    if shutil.which("docker") is None:
        return False
    try:
        done = subprocess.run(["docker", "info"], capture_output=True, timeout=15, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@contextmanager
def postgres_server(workdir: Path) -> Iterator[str]:
    """Yield an administrative DSN: ``$CHECKPOINT_EXPORTER_TEST_DSN``, else a testcontainers
    PostgreSQL when Docker runs, else the embedded server in ``workdir``."""
    explicit = os.environ.get(TEST_DSN_VARIABLE)
    if explicit:
        yield explicit
        return
    if docker_available():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver=None) as container:
            yield container.get_connection_url()
        return
    from exporter.embedded import _start

    server = _start(workdir / "pgdata")
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()


def with_database(dsn: str, dbname: str) -> str:
    return make_conninfo(dsn, dbname=dbname)


@contextmanager
def fresh_database(admin_dsn: str) -> Iterator[str]:
    """A throwaway database on the server, dropped afterwards (connections and all)."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield with_database(admin_dsn, name)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def socket_host(dsn: str) -> str | None:
    """The ``host`` parameter of ``dsn`` (a directory for Unix sockets)."""
    host = conninfo_to_dict(dsn).get("host")
    return str(host) if host else None
