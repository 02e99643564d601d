"""Secrets never leave the process, and identifiers reach SQL only as quoted identifiers."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import gzip
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus, urlsplit

import bcrypt
import psycopg
import pytest
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from prometheus_client import CollectorRegistry
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

from exporter import Sidecar, build_checkpointer
from exporter.checkpointer.backend import POSTGRES, Backend
from exporter.checkpointer.instrumented import wrap_saver
from exporter.checkpointer.metrics import saver_metrics
from exporter.database import exporter_connect_kwargs
from exporter.factory import CheckpointerUnavailableError, prepare_schema
from exporter.settings import Settings
from exporter.workflows import schema as workflow_schema
from exporter.workflows.integrity import full_pass
from tests.graphs import config, review_graph
from tests.logstream import LogStream, started_url
from tests.ports import refused_port
from tests.samples import samples_of, value
from tests.targets import tracker_on


class Token:
    """A secret with a random core: the core in any output means a leak, whatever the encoding.

    The punctuation makes its URL-encoded forms differ from it, so those are checked too.
    """

    def __init__(self, name: str) -> None:
        self.core = secrets.token_hex(12)
        self.value = f"{name}-{self.core}-p@ss:w/rd?&=%+"

    def forms(self) -> set[str]:
        basic = base64.b64encode(f"prometheus:{self.value}".encode()).decode()
        return {self.core, self.value, quote(self.value, safe=""), quote_plus(self.value), basic}


def leaks(output: bytes, *tokens: Token) -> list[str]:
    text = output.decode("utf-8", "replace")
    return [form for token in tokens for form in token.forms() if form in text]


def base_env() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CHECKPOINT_EXPORTER_", "POSTGRES_", "USE_POSTGRES"))
    }


def role_url(dsn: str, role: str, password: str, port: int | None = None) -> str:
    """A URL logging in to ``dsn``'s database as ``role``; sockets go in ``host=``."""
    params = conninfo_to_dict(dsn)
    host = str(params.get("host") or "localhost")
    database = str(params["dbname"])
    secret = quote(password, safe="")
    if port is not None:
        return f"postgresql://{role}:{secret}@127.0.0.1:{port}/{database}"
    port_text = str(params.get("port") or "5432")
    if host.startswith("/"):
        return f"postgresql://{role}:{secret}@/{database}?host={quote(host)}&port={port_text}"
    return f"postgresql://{role}:{secret}@{host}:{port_text}/{database}"


def http(url: str, password: str | None, headers: dict[str, str] | None = None) -> bytes:
    """Status line, headers and body (decompressed) of one GET, as bytes to search."""
    headers = dict(headers or {})
    if password is not None:
        credentials = base64.b64encode(f"prometheus:{password}".encode()).decode()
        headers["Authorization"] = f"Basic {credentials}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=15) as r:
            status, head, body = r.status, str(r.headers), bytes(r.read())
    except urllib.error.HTTPError as error:
        status, head, body = error.code, str(error.headers), bytes(error.read())
    if "gzip" in head.lower():
        body = gzip.decompress(body)
    return f"{status}\n{head}\n".encode() + body


def run_cli(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "exporter", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def wait_for(url: str, password: str, status: int, seconds: float) -> bytes:
    deadline = time.monotonic() + seconds
    while True:
        try:
            answer = http(url, password)
            if answer.startswith(f"{status}\n".encode()):
                return answer
        except OSError:
            pass
        assert time.monotonic() < deadline, f"{url} did not answer {status} within {seconds}s"
        time.sleep(0.2)


@pytest.fixture
def role(dsn: str) -> Iterator[tuple[str, Token]]:
    """A login role with a random password, owning this test's database."""
    name = f"secret_{secrets.token_hex(4)}"
    password = Token("pg")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(name), sql.Literal(password.value)
            )
        )
        conn.execute(
            sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                sql.Identifier(str(conninfo_to_dict(dsn)["dbname"])), sql.Identifier(name)
            )
        )
        conn.execute(sql.SQL("GRANT pg_monitor TO {}").format(sql.Identifier(name)))
    yield name, password
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (name,)
        )


def test_no_secret_reaches_any_output(
    dsn: str, role: tuple[str, Token], tmp_path: Path, settings: Settings
) -> None:
    """The database password, POSTGRES_PASSWORD and a basic-auth password appear nowhere.

    Everything is gathered: /metrics in both formats and gzipped, health healthy and with
    the database refusing the role, /readyz, the landing page, 401 and 404 answers, the
    serve process's debug-level JSON logs, one-line CLI errors quoting the URL and the
    password, ``verify`` against an unreachable database, and ``loadtest`` in both formats.
    """
    name, database_password = role
    postgres_password, web_password = Token("env"), Token("web")
    url = role_url(dsn, name, database_password.value)
    prepare_as_role(url, settings)
    hashed = bcrypt.hashpw(web_password.value.encode(), bcrypt.gensalt(4)).decode()
    web_config = tmp_path / "web.yml"
    web_config.write_text(f"basic_auth_users:\n  prometheus: {hashed}\n")
    env = base_env() | {
        "POSTGRES_CONNECTION_STRING": url,
        "POSTGRES_PASSWORD": postgres_password.value,
    }
    serve = run_cli(
        env,
        "serve",
        "--web.listen-address=127.0.0.1:0",
        f"--web.config.file={web_config}",
        "--log.level=debug",
        "--log.format=json",
        "--canary.interval=1s",
        "--collector.timeout=2s",
    )
    down = refused_port()
    secret = quote(database_password.value, safe="")
    bad_port = f"postgresql://{name}:{secret}@127.0.0.1:notaport/x"
    conninfo = f"host=127.0.0.1 port={down} user={name} dbname=x password='{secret}'"
    unreachable = role_url(dsn, name, database_password.value, down)
    cli = [
        run_cli(env, "serve", "--pool.max-size", postgres_password.value),
        run_cli(env, "serve", "--web.listen-address", url),
        run_cli(env, "verify", "--postgres.schema", url),
        run_cli(env | {"POSTGRES_CONNECTION_STRING": bad_port}, "verify"),
        run_cli(env | {"POSTGRES_CONNECTION_STRING": unreachable}, "verify"),
        run_cli(env | {"POSTGRES_CONNECTION_STRING": conninfo}, "verify", "--output", "json"),
    ]
    processes = [serve, *cli]
    gathered: list[bytes] = []
    assert serve.stdout is not None
    serve_log = LogStream(serve.stdout)
    try:
        base = started_url(serve_log)
        port = urlsplit(base).port
        wait_for(base + "/api/health/checkpointer", web_password.value, 200, 60)
        flags = (f"--web.config.file={web_config}", f"--web.listen-address=127.0.0.1:{port}")
        cli.append(run_cli(env, "healthcheck", *flags))
        processes.append(cli[-1])
        cli[-1].wait(timeout=60)  # against the running sidecar, before anything stops it
        openmetrics = {"Accept": "application/openmetrics-text; version=1.0.0"}
        healthy = http(base + "/api/health/checkpointer", web_password.value)
        gathered += [
            healthy,
            http(base + "/metrics", web_password.value),
            http(base + "/metrics", web_password.value, openmetrics),
            http(base + "/metrics", web_password.value, {"Accept-Encoding": "gzip"}),
            http(base + "/readyz", web_password.value),
            http(base + "/healthz", None),
            http(base + "/", web_password.value),
            http(base + "/nope", web_password.value),
            http(base + "/metrics", "wrong" + web_password.value),
            http(base + "/metrics", None),
        ]
        assert f"{name}:***@".encode() in healthy
        # The HTTP parser's error quotes a malformed header line: here, the credentials. The
        # 400 answer echoes them to their own sender, who has them; the logs must not.
        credentials = base64.b64encode(f"prometheus:{web_password.value}".encode())
        with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Basic ")
            sock.sendall(credentials + b"\x01\r\nConnection: close\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.0 400 ")
        locked_out = serve_log.mark()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(sql.Identifier(name)))
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (name,)
            )
        unhealthy = wait_for(base + "/api/health/checkpointer", web_password.value, 503, 30)
        assert b'"status": "unhealthy"' in unhealthy
        gathered += [
            unhealthy,
            http(base + "/readyz", web_password.value),
            http(base + "/metrics", web_password.value),
            http(base + "/metrics", web_password.value, openmetrics),
        ]
        # A reconnection refused to the role, in the logs (the canary, off while the sidecar
        # cannot lead, adds none): where a password quoted in an error would show.
        serve_log.wait_until(
            lambda entry: "is not permitted to log in" in json.dumps(entry),
            "refused login in the logs",
            60,
            after=locked_out,
        )
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=30)
        serve_output = serve_log.output()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER ROLE {} LOGIN").format(sql.Identifier(name)))
        for output_format in ("text", "json"):
            loadtest = ("--duration=1s", "--workflows=2", "--think-time=0")
            cli.append(run_cli(env, "loadtest", *loadtest, f"--output={output_format}"))
            processes.append(cli[-1])
        statuses = []
        for process in cli:
            gathered.append(process.communicate(timeout=60)[0])
            statuses.append(process.returncode)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait() if process is serve else process.communicate()
        serve_log.output()
    assert serve.returncode == 0, serve_output.decode()
    assert statuses == [2, 2, 2, 2, 2, 2, 0, 0, 0], b"\n".join(gathered[-9:]).decode()
    everything = b"\n".join([*gathered, serve_output])
    assert b"***" in everything  # the URL and the passwords were quoted, masked
    assert b'"level": "warning"' in serve_output  # the outage was logged
    assert leaks(everything, database_password, postgres_password, web_password) == []


def prepare_as_role(url: str, settings: Settings) -> None:
    """LangGraph's and the tracking tables, created by the role itself."""
    asyncio.run(prepare_schema(url, settings.replace(postgres_connection_string=url)))


ODD_SCHEMA = 'Odd"Schema; DROP TABLE x'
# A statement injected through the schema name would drop one of these.
DECOYS = ("public", ODD_SCHEMA)

CATALOG = """
SELECT n.nspname, c.relname, c.relkind
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%%'
UNION ALL SELECT nspname, '', 'n' FROM pg_namespace
"""


def catalog(dsn: str) -> set[tuple[str, str, str]]:
    with psycopg.connect(dsn) as conn:
        return {(str(a), str(b), str(c)) for a, b, c in conn.execute(CATALOG).fetchall()}


async def test_an_odd_schema_name_is_only_ever_an_identifier(dsn: str, settings: Settings) -> None:
    """Against a schema named ``Odd"Schema; DROP TABLE x`` (settings refuse such names), the
    collectors, tracking and integrity checks work on it, and the canary, the recovery check
    and the factory, whose connection options cannot carry it, fail cleanly: nothing is
    created, altered or dropped anywhere."""
    odd = dataclasses.replace(settings, canary_interval=30.0)
    # Forced past the check that refuses it, as an application's own code could never do.
    object.__setattr__(odd, "postgres_schema", ODD_SCHEMA)
    kwargs: dict[str, Any] = {"autocommit": True, "row_factory": dict_row}
    async with await psycopg.AsyncConnection.connect(dsn, **kwargs) as conn:
        await conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(ODD_SCHEMA)))
        for schema in DECOYS:
            await conn.execute(
                sql.SQL("CREATE TABLE {} (i int)").format(sql.Identifier(schema, "x"))
            )
        await conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(ODD_SCHEMA)))
        inner = AsyncPostgresSaver(conn=conn)
        await inner.setup()
        await workflow_schema.migrate(conn, ODD_SCHEMA)
        registry = CollectorRegistry()
        tracker = tracker_on(dsn, odd, registry)
        await tracker.start()
        saver = wrap_saver(
            inner, saver_metrics(registry), None, Backend(POSTGRES, ODD_SCHEMA, dsn), tracker
        )
        for thread in ("a", "b", "c"):
            async with tracker.run(thread):
                await review_graph(saver).ainvoke({"n": 1}, config(thread))
        assert await tracker.flush()
        before = catalog(dsn)

        async with Sidecar(odd, checkpointer=saver, registry=registry) as sidecar:
            samples = samples_of(await sidecar.scrape())
            canary = await sidecar.canary.probe() if sidecar.canary is not None else None
            recovery = await sidecar.check_recovery()
        await tracker.close()
        exporter_kwargs = exporter_connect_kwargs(dsn, odd)
        async with await psycopg.AsyncConnection.connect(dsn, **exporter_kwargs) as own:
            integrity = await full_pass(own, ODD_SCHEMA)
        with pytest.raises(CheckpointerUnavailableError):
            async with build_checkpointer(odd, registry=CollectorRegistry()):
                pass
        cursor = await conn.execute(
            sql.SQL("SELECT thread_id, status FROM {} ORDER BY 1").format(
                sql.Identifier(ODD_SCHEMA, "workflow_metadata")
            )
        )
        tracked = [(r["thread_id"], r["status"]) for r in await cursor.fetchall()]

    assert tracked == [("a", "completed"), ("b", "completed"), ("c", "completed")]
    for collector in ("activity", "integrity", "migrations", "pool", "tables", "workflows"):
        success = value(
            samples, "langgraph_checkpointer_scrape_collector_success", collector=collector
        )
        assert success == 1, collector
    assert (
        value(samples, "langgraph_checkpointer_migrations_table_exists", table="checkpoints") == 1
    )
    assert value(samples, "langgraph_checkpointer_tables_exists", table="checkpoint_blobs") == 1
    assert value(samples, "langgraph_checkpointer_workflows_threads", status="completed") == 3
    assert integrity.threads == 3
    assert integrity.problems == 0
    assert canary == "error"
    assert recovery is not None
    assert recovery.error is not None
    assert "invalid command-line argument" in recovery.error
    assert catalog(dsn) == before
