"""The check behind health and readiness: is the database up, and if not, why, in time.

Probes must answer before their own timeout (Kubernetes gives them 1 s) and
must say what is wrong. Asking through a pool does neither during an outage:
the pool keeps its caller waiting for its whole timeout and then reports only
that it waited. So the check has a connection of its own, opened directly and
kept between checks: a refused connection fails at once with the driver's
reason, and a database that accepts but never answers is given up at
``health_timeout``. It never touches the application's pool or the exporter's.
Probes that arrive together share one check, so a burst of them costs the
database one statement.
"""

from __future__ import annotations

import asyncio
from time import perf_counter
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg_pool import PoolTimeout

from exporter.causes import cause_of
from exporter.database import Ping, close_when_free
from exporter.deadline import within
from exporter.outage import OutageLog
from exporter.redact import describe_error
from exporter.sql.server import SERVER_VERSION
from exporter.target import Target

SOURCE = "health check"


class DatabaseCheck:
    """Answers "does the database answer?" within ``deadline`` seconds; never raises."""

    def __init__(self, target: Target, deadline: float, outages: OutageLog) -> None:
        self._target = target
        self._deadline = deadline
        self._outages = outages
        self._conn: AsyncConnection[Any] | None = None
        # Guards the connection; a check given up at its deadline keeps the old one.
        self._lock = asyncio.Lock()
        self._running: asyncio.Future[Ping] | None = None

    async def check(self) -> Ping:
        """The answer of the check under way, or of a new one; shared by concurrent callers."""
        if self._running is None or self._running.done():
            self._running = asyncio.ensure_future(self._check())
        # Shielded: one caller giving up (its request cancelled) leaves the others their answer.
        return await asyncio.shield(self._running)

    async def _check(self) -> Ping:
        started = perf_counter()
        deadline = self._deadline
        try:
            version = await within(deadline, self._ask(self._lock))
        except (TimeoutError, psycopg.Error, PoolTimeout, OSError) as exc:
            self._abandon()
            cause, message = cause_of(exc), describe_error(exc)
            if isinstance(exc, TimeoutError):
                message = f"TimeoutError: no answer within {deadline:g}s"
            self._outages.failed(SOURCE, cause, message)
            return Ping(False, perf_counter() - started, error=message, cause=cause)
        self._outages.answered(SOURCE)
        return Ping(True, perf_counter() - started, server_version=version)

    async def _ask(self, lock: asyncio.Lock) -> str:
        async with lock:
            conn = self._conn
            if conn is not None and not conn.closed:
                try:
                    return await _version(conn)
                except psycopg.OperationalError:
                    # The kept session is gone (a restart, a cut): a new attempt says why now.
                    await conn.close()
            conn = await self._target.connect()
            if lock is not self._lock:  # given up at the deadline while connecting
                await conn.close()
                raise TimeoutError("connected after the deadline")
            self._conn = conn
            return await _version(conn)

    def _abandon(self) -> None:
        """Start afresh next time; the old connection closes once its command has ended."""
        conn, lock = self._conn, self._lock
        self._conn, self._lock = None, asyncio.Lock()
        if conn is not None:
            close_when_free(conn, lock)

    async def close(self) -> None:
        """Close the check's connection (a check under way finishes first)."""
        if self._running is not None:
            await asyncio.gather(self._running, return_exceptions=True)
        async with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None and not conn.closed:
                await conn.close()


async def _version(conn: AsyncConnection[Any]) -> str:
    cursor = await conn.execute(SERVER_VERSION)
    row = await cursor.fetchone()
    return str(row["version"]) if row else ""
