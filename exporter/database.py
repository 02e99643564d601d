"""Connection parameters and the pools the checkpointer and the exporter use."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from time import perf_counter
from typing import Any, Final

import psycopg
from psycopg import AsyncConnection
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from exporter import sql
from exporter.causes import cause_of
from exporter.deadline import within
from exporter.embedded import embedded_database
from exporter.redact import describe_error
from exporter.settings import Settings
from exporter.sql.server import SERVER_VERSION

EXPORTER_APPLICATION_NAME = "checkpoint-exporter"


@asynccontextmanager
async def connection_string(settings: Settings) -> AsyncIterator[str]:
    """The configured database URL, or that of an embedded PostgreSQL started for the duration."""
    if settings.postgres_connection_string is not None:
        yield settings.postgres_connection_string
        return
    async with embedded_database(settings.data_dir) as url:
        yield url


def with_options(existing: str, *settings: str) -> str:
    """``existing`` libpq ``options`` with ``-c`` settings appended."""
    return " ".join([existing, *(f"-c {item}" for item in settings)]).strip()


def _options(conninfo: str, *settings: str) -> str:
    """Append ``-c`` settings to any ``options`` the connection string already carries."""
    return with_options(str(conninfo_to_dict(conninfo).get("options") or ""), *settings)


def checkpointer_connect_kwargs(conninfo: str, settings: Settings) -> dict[str, Any]:
    """Connection arguments for the application's checkpointer pool.

    The tables live in ``POSTGRES_SCHEMA``: LangGraph's SQL names them
    unqualified, so the schema goes first on the ``search_path``.
    """
    return {
        "autocommit": True,
        "row_factory": dict_row,
        "prepare_threshold": settings.prepare_threshold,
        "application_name": settings.application_name,
        "connect_timeout": max(1, math.ceil(settings.connect_timeout)),
        "options": _options(conninfo, sql.search_path(settings.postgres_schema)),
    }


# The server ends a lock wait, then a statement, strictly before the collector's deadline,
# each at a point of its own: a failure then says which limit it met (a lock held by
# someone else, a slow statement, or no answer at all) instead of whichever won a race.
LOCK_TIMEOUT_SHARE: Final = 0.5
STATEMENT_TIMEOUT_SHARE: Final = 0.8


def server_timeouts_ms(deadline: float) -> tuple[int, int]:
    """``lock_timeout`` and ``statement_timeout`` in ms for work under ``deadline`` seconds."""
    lock_ms = max(1, int(deadline * 1000 * LOCK_TIMEOUT_SHARE))
    statement_ms = max(lock_ms + 1, int(deadline * 1000 * STATEMENT_TIMEOUT_SHARE))
    return lock_ms, statement_ms


def exporter_connect_kwargs(conninfo: str, settings: Settings) -> dict[str, Any]:
    """Connection arguments for the exporter's own queries: bounded, read-mostly, named."""
    lock_ms, statement_ms = server_timeouts_ms(settings.collector_timeout)
    return {
        "autocommit": True,
        "row_factory": dict_row,
        "prepare_threshold": settings.prepare_threshold,
        "application_name": EXPORTER_APPLICATION_NAME,
        "connect_timeout": max(1, math.ceil(settings.connect_timeout)),
        "options": _options(
            conninfo,
            f"statement_timeout={statement_ms}",
            f"lock_timeout={lock_ms}",
            f"idle_in_transaction_session_timeout={max(1, int(settings.collector_timeout * 2000))}",
        ),
    }


def _pool(
    conninfo: str,
    kwargs: dict[str, Any],
    *,
    name: str,
    min_size: int,
    max_size: int,
    timeout: float,
) -> AsyncConnectionPool[AsyncConnection[DictRow]]:
    """A pool, not opened, of dict-row connections: the one way either pool is made."""
    return AsyncConnectionPool(
        conninfo,
        kwargs=kwargs,
        min_size=min_size,
        max_size=max_size,
        timeout=timeout,
        name=name,
        open=False,
        connection_class=AsyncConnection[DictRow],
    )


def exporter_pool(
    conninfo: str, settings: Settings
) -> AsyncConnectionPool[AsyncConnection[DictRow]]:
    """A small pool (not opened) that can never starve the application's connections."""
    return _pool(
        conninfo,
        exporter_connect_kwargs(conninfo, settings),
        name="exporter",
        min_size=1,
        max_size=settings.exporter_pool_size,
        timeout=settings.collector_timeout,
    )


async def open_checkpointer_pool(
    conninfo: str, settings: Settings
) -> AsyncConnectionPool[AsyncConnection[DictRow]]:
    """Open the application's pool, failing within the connect timeout if PostgreSQL is away."""
    pool = _pool(
        conninfo,
        checkpointer_connect_kwargs(conninfo, settings),
        name="checkpointer",
        min_size=settings.pool_min_size,
        max_size=settings.pool_max_size,
        timeout=settings.pool_timeout,
    )
    try:
        await pool.open(wait=True, timeout=settings.connect_timeout)
    except BaseException:
        await pool.close()
        raise
    return pool


@dataclass(frozen=True, slots=True)
class Ping:
    """Whether PostgreSQL answered a trivial query, how fast, and which version it runs."""

    ok: bool
    seconds: float
    server_version: str | None = None
    error: str | None = None
    # One of exporter.causes.CAUSES when it did not answer.
    cause: str | None = None


async def ping(pool: AsyncConnectionPool[Any], deadline: float) -> Ping:
    """Ask ``pool``'s database for its version within ``deadline`` seconds; never raises."""
    started = perf_counter()
    try:
        row = await within(deadline, _server_version(pool, deadline))
    except (TimeoutError, psycopg.Error, PoolTimeout, OSError) as exc:
        message = describe_error(exc)
        return Ping(False, perf_counter() - started, error=message, cause=cause_of(exc))
    version = str(row["version"]) if row else None
    return Ping(True, perf_counter() - started, server_version=version)


async def _server_version(pool: AsyncConnectionPool[Any], deadline: float) -> Any:
    async with pool.connection(timeout=deadline) as conn:
        cursor = await conn.execute(SERVER_VERSION)
        return await cursor.fetchone()


# Connections given up while a command still ran, waiting to be closed; kept so the
# tasks are not garbage-collected.
_CLOSING: set[asyncio.Future[None]] = set()


def close_when_free(conn: AsyncConnection[Any], lock: asyncio.Lock) -> None:
    """Close ``conn`` once whoever holds ``lock`` (a command given up at its deadline) is done."""
    task = asyncio.ensure_future(_close_after(conn, lock))
    _CLOSING.add(task)
    task.add_done_callback(_CLOSING.discard)


async def _close_after(conn: AsyncConnection[Any], lock: asyncio.Lock) -> None:
    async with lock:
        await conn.close()
