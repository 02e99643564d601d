"""Chooses, through PostgreSQL itself, the one sidecar that runs database-wide collectors.

N sidecars beside N application replicas would otherwise each report the same
catalog, activity and statement figures. The leader holds a session-level
advisory lock on a dedicated connection; when its process dies, PostgreSQL
ends the session and frees the lock, and another sidecar takes it at its next
scrape: failover within one scrape interval.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from time import perf_counter
from typing import Any

import psycopg
from psycopg import AsyncConnection

from exporter.causes import TIMEOUT, cause_of
from exporter.database import Ping, close_when_free
from exporter.deadline import within
from exporter.log import get_logger
from exporter.redact import describe_error
from exporter.sql.locks import LEADER_LOCK_KEY, RELEASE_LEADER_LOCK, TRY_LEADER_LOCK
from exporter.sql.server import SERVER_VERSION
from exporter.target import Target

log = get_logger("leader")


class LeaderElection:
    """Answers "do I lead?" once per scrape, (re)trying for the lock as needed.

    The same round trip proves the database answers, so a scrape needs no
    separate ping for ``up``.
    """

    def __init__(self, target: Target, deadline: float) -> None:
        self._target = target
        self._deadline = deadline
        self._conn: AsyncConnection[Any] | None = None
        # Overlapping scrapes share one session; one command at a time on it.
        self._lock = asyncio.Lock()
        self.leading = False

    async def check(self) -> Ping:
        """Decide whether this sidecar leads now, within the collector timeout.

        Returns whether the database answered; ``leading`` holds the decision.
        Never raises for a database outage: an unreachable database means not leading.
        """
        started = perf_counter()
        try:
            version = await within(self._deadline, self._serialized_check())
        except TimeoutError as exc:
            # The session may still be cancelling its command: give it up rather than wait.
            self._abandon(describe_error(exc))
            return Ping(False, perf_counter() - started, error=describe_error(exc), cause=TIMEOUT)
        except (psycopg.Error, OSError) as exc:
            message = describe_error(exc)
            await self._lose(message)
            return Ping(False, perf_counter() - started, error=message, cause=cause_of(exc))
        return Ping(True, perf_counter() - started, server_version=version)

    async def _serialized_check(self) -> str:
        async with self._lock:
            return await self._check()

    def _abandon(self, reason: str) -> None:
        """Stop leading and start afresh; the old session closes once its command ends.

        The timed-out check still holds the old lock while psycopg cancels its
        query, so the next check gets a lock and a session of its own.
        """
        if self.leading:
            log.warning("leadership_lost", reason=reason)
        self.leading = False
        conn, lock = self._conn, self._lock
        self._conn, self._lock = None, asyncio.Lock()
        if conn is not None:
            close_when_free(conn, lock)

    async def _check(self) -> str:
        conn = self._conn
        if self.leading and conn is not None:
            # The lock lives as long as this session: prove the session is alive.
            try:
                cursor = await conn.execute(SERVER_VERSION)
                return _version(await cursor.fetchone())
            except psycopg.OperationalError as exc:
                # The session ended (and the lock with it); the database may well be up.
                await self._lose(describe_error(exc))
        if self._conn is None or self._conn.closed:
            self._conn = await self._target.connect()
        cursor = await self._conn.execute(TRY_LEADER_LOCK, (LEADER_LOCK_KEY, self._target.schema))
        row = await cursor.fetchone()
        acquired = bool(row and row["acquired"])
        if acquired:
            log.info("leadership_acquired", schema=self._target.schema)
        self.leading = acquired
        return _version(row)

    async def _lose(self, reason: str) -> None:
        if self.leading:
            log.warning("leadership_lost", reason=reason)
        self.leading = False
        await self.close()

    async def close(self) -> None:
        """Release the lock if held, then close the session.

        Closing alone frees the lock only once the server's backend has exited, a
        moment later; unlocking first lets another sidecar lead from its next scrape.
        """
        conn, self._conn = self._conn, None
        leading, self.leading = self.leading, False
        if conn is None or conn.closed:
            return
        if leading:
            try:
                async with self._lock:
                    await within(self._deadline, self._release(conn))
            except (TimeoutError, psycopg.Error, OSError) as exc:
                # Ending the session below frees the lock all the same.
                log.info("leadership_release_deferred", reason=describe_error(exc))
        await conn.close()

    async def _release(self, conn: AsyncConnection[Any]) -> None:
        await conn.execute(RELEASE_LEADER_LOCK, (LEADER_LOCK_KEY, self._target.schema))


def _version(row: Mapping[str, Any] | None) -> str:
    return str(row["version"]) if row else ""
