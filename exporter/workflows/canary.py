"""The canary: the sidecar's own end-to-end check of the checkpoint store.

Every ``canary_interval`` the leading sidecar saves a checkpoint with blobs and
pending writes to the reserved thread :data:`CANARY_THREAD_ID`, loads it back
and compares it field by field. It writes through a plain
``AsyncPostgresSaver`` on a connection of its own, never through the
instrumented saver, so workflow tracking and figures never see it.

The content is derived from a seed kept in the checkpoint's metadata, so any
sidecar can verify a canary another one (or itself before a restart) wrote.
Each probe first verifies the canary already stored, which catches data that
changed at rest, then writes the next one and prunes the thread to it: the
thread holds one checkpoint between probes and two at most during one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from time import perf_counter, time
from typing import Any, Final, cast

import psycopg
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    CheckpointMetadata,
    CheckpointTuple,
)
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from psycopg import AsyncConnection
from psycopg.rows import DictRow

from exporter.checkpointer.metrics import DURATION_BUCKETS, Distribution
from exporter.jobs import JobKey
from exporter.log import get_logger
from exporter.redact import describe_error
from exporter.sql.locks import CANARY_LOCK_KEY, LOCK_CANARY, UNLOCK_CANARY
from exporter.target import Target
from exporter.workflows.canary_content import (
    TASK_PATH,
    CanaryMismatchError,
    differences,
    expected_content,
    new_canary,
)
from exporter.workflows.saver_schema import SaverSchema, read_saver_schema
from exporter.workflows.schema import CANARY_THREAD_ID

log = get_logger("canary")

SUCCESS, TIMEOUT, ERROR, MISMATCH = "success", "timeout", "error", "mismatch"
RESULTS: Final = (SUCCESS, TIMEOUT, ERROR, MISMATCH)
# What reading back the canary stored before this process started found.
READBACK_SUCCESS, READBACK_MISSING, READBACK_FAILED = "success", "missing", "failed"
READBACK_RESULTS: Final = (READBACK_SUCCESS, READBACK_MISSING, READBACK_FAILED)

# Errors that mean "the database could not be asked", as opposed to "it answered wrongly".
UNREACHABLE: Final = (psycopg.OperationalError, OSError, TimeoutError)


@dataclass(frozen=True, slots=True)
class CanaryStatus:
    """A snapshot of the canary's figures, for the collector and the health document.

    ``active`` is whether this sidecar ran the probe at its last turn (it led);
    ``readback`` stays None until the canary stored before start could be read.
    ``unsupported`` says why the schema cannot take the canary's saver (None: it
    can, or has no tables yet): then nothing is probed and nothing counts as failed.
    """

    probes: Mapping[str, int]
    save: Distribution
    load: Distribution
    last_result: str | None
    last_probe_at: float | None
    last_save_seconds: float | None
    last_load_seconds: float | None
    last_error: str | None
    consecutive_failures: int
    readback: str | None
    active: bool
    unsupported: str | None = None


CANARY: Final[JobKey[CanaryStatus]] = JobKey("canary")


def _config(checkpoint_id: str | None = None) -> RunnableConfig:
    configurable: dict[str, Any] = {"thread_id": CANARY_THREAD_ID, "checkpoint_ns": ""}
    if checkpoint_id is not None:
        configurable["checkpoint_id"] = checkpoint_id
    return {"configurable": configurable}


class Canary:
    """Probes the store on the configured database and schema, and keeps the figures.

    One connection of its own, opened on first use and dropped after any
    failure, so a probe never leaves a half-finished command behind.
    """

    def __init__(self, target: Target, *, interval: float, timeout: float) -> None:
        self._target = target
        self._interval = interval
        self._timeout = timeout
        self._conn: AsyncConnection[DictRow] | None = None
        self._saver: AsyncPostgresSaver | None = None
        # One probe at a time: the loop and an on-demand probe share the connection.
        self._lock = asyncio.Lock()
        self._probes = dict.fromkeys(RESULTS, 0)
        self._save = Distribution(DURATION_BUCKETS)
        self._load = Distribution(DURATION_BUCKETS)
        self._last_result: str | None = None
        self._last_probe_at: float | None = None
        self._last_save: float | None = None
        self._last_load: float | None = None
        self._last_error: str | None = None
        self._failures = 0
        self._readback: str | None = None
        self._readback_error_logged = False
        self._active = False
        self._waiting_logged = False
        self._unsupported: str | None = None
        self._wrote = False

    def status(self) -> CanaryStatus:
        return CanaryStatus(
            probes=dict(self._probes),
            save=self._save.copy(),
            load=self._load.copy(),
            last_result=self._last_result,
            last_probe_at=self._last_probe_at,
            last_save_seconds=self._last_save,
            last_load_seconds=self._last_load,
            last_error=self._last_error,
            consecutive_failures=self._failures,
            readback=self._readback,
            active=self._active,
            unsupported=self._unsupported,
        )

    @property
    def key(self) -> JobKey[CanaryStatus]:
        return CANARY

    async def work(self, leading: Callable[[], bool]) -> None:
        """Read back the previous canary, then probe every interval while ``leading()``.

        Runs until cancelled; a failed probe is counted and logged, never raised.
        """
        interval = self._interval
        while True:
            started = perf_counter()
            if self._readback is None:
                await self.readback()
            self._active = leading() and await self._tables_ready()
            if self._active:
                await self.probe()
            await asyncio.sleep(max(0.0, interval - (perf_counter() - started)))

    async def readback(self) -> str | None:
        """Verify the canary stored before this process started, once it can be read.

        Returns (and keeps) ``success``, ``missing`` (none was ever written) or
        ``failed``; None while the database cannot be reached or the schema does not
        support the canary's saver (retried next turn).
        """
        try:
            async with self._lock, asyncio.timeout(self._timeout):
                saver = await self._connect()
                # Checked first, so that a schema never set up, or set up by another
                # saver at a lower level, logs no error in the server.
                schema = await self._read_schema()
                if schema.tables and not schema.supported:
                    return None
                stored = await saver.aget_tuple(_config()) if schema.tables else None
                if stored is not None:
                    _verify_stored(stored)
            result = READBACK_MISSING if stored is None else READBACK_SUCCESS
        except UNREACHABLE as exc:
            await self._drop()
            if not self._readback_error_logged:
                self._readback_error_logged = True
                log.warning("canary_readback_deferred", error=describe_error(exc))
            return None
        except Exception as exc:
            await self._drop()
            self._readback = READBACK_FAILED
            log.warning(
                "canary_readback_failed",
                error=type(exc).__name__,
                message=describe_error(exc),
                fields=getattr(exc, "fields", None),
            )
            return self._readback
        self._readback = result
        log.info("canary_readback", result=result)
        return result

    async def probe(self) -> str:
        """One probe under ``canary_timeout``: verify the stored canary, save, load, compare.

        Returns the result (``success``, ``timeout``, ``error`` or ``mismatch``);
        never raises but for cancellation.
        """
        error: BaseException | None = None
        try:
            async with self._lock, asyncio.timeout(self._timeout):
                await self._probe()
            result = SUCCESS
        except TimeoutError as exc:
            result, error = TIMEOUT, exc
        except CanaryMismatchError as exc:
            result, error = MISMATCH, exc
        except Exception as exc:
            result, error = ERROR, exc
        if result != SUCCESS:
            # A timed-out or failed command may leave the session mid-protocol.
            await self._drop()
        self._record(result, error)
        return result

    async def _probe(self) -> None:
        saver = await self._connect()
        conn = self._connection()
        schema = self._target.schema
        # Sidecars that probe at once (a leader handing over, or election off) would see
        # each other's canary half-pruned; the lock goes with the session on any failure.
        await conn.execute(LOCK_CANARY, (CANARY_LOCK_KEY, schema))
        problems = await self._exchange(saver, conn)
        await conn.execute(UNLOCK_CANARY, (CANARY_LOCK_KEY, schema))
        if problems:
            raise CanaryMismatchError(problems)

    async def _exchange(
        self, saver: AsyncPostgresSaver, conn: AsyncConnection[DictRow]
    ) -> list[str]:
        """Verify the stored canary, write the next, load and compare it, prune the rest."""
        problems: list[str] = []
        try:
            stored = await saver.aget_tuple(_config())
        except psycopg.Error:
            raise
        except Exception as exc:
            # Only the stored bytes can fail to decode here: the query itself answered.
            stored = None
            problems.append(f"stored.unreadable ({type(exc).__name__})")
        else:
            if stored is not None:
                problems += _stored_problems(stored)
            elif self._wrote:
                problems.append("stored.missing")

        content = new_canary()
        started = perf_counter()
        # One transaction: a reader sees the checkpoint with its writes or not at all.
        async with conn.transaction():
            config = await saver.aput(
                _config(),
                content.checkpoint,
                cast(CheckpointMetadata, content.metadata),
                content.checkpoint["channel_versions"],
            )
            await saver.aput_writes(config, content.writes, content.task_id, TASK_PATH)
        save_seconds = perf_counter() - started
        self._wrote = True

        started = perf_counter()
        loaded = await saver.aget_tuple(_config(content.checkpoint_id))
        load_seconds = perf_counter() - started
        if loaded is None:
            problems.append("saved.missing")
        else:
            problems += [f"saved.{name}" for name in differences(content, loaded)]

        await saver.aprune([CANARY_THREAD_ID], strategy="keep_latest")
        self._last_save, self._last_load = save_seconds, load_seconds
        self._save.add(save_seconds)
        self._load.add(load_seconds)
        return problems

    def _record(self, result: str, error: BaseException | None) -> None:
        previous = self._last_result
        self._probes[result] += 1
        self._last_result = result
        self._last_probe_at = time()
        if result == SUCCESS:
            self._failures, self._last_error = 0, None
            if previous not in (None, SUCCESS):
                log.info("canary_recovered", previous=previous)
            return
        self._failures += 1
        self._last_error = _describe(result, error)
        fields = {
            "result": result,
            "error": type(error).__name__ if error is not None else None,
            "message": self._last_error,
            "consecutive_failures": self._failures,
        }
        # One warning when a kind of failure starts, not one per probe of an outage.
        if result != previous:
            log.warning("canary_probe_failed", **fields)
        else:
            log.debug("canary_probe_failed", **fields)

    async def _connect(self) -> AsyncPostgresSaver:
        if self._saver is not None and self._conn is not None and not self._conn.closed:
            return self._saver
        self._conn = await self._target.connect(on_search_path=True)
        self._saver = AsyncPostgresSaver(conn=self._conn, serde=self._target.serde)
        return self._saver

    def _connection(self) -> AsyncConnection[DictRow]:
        if self._conn is None:
            raise RuntimeError("the canary is not connected")
        return self._conn

    async def _read_schema(self) -> SaverSchema:
        """The tables and columns of the schema, noting whether the canary's saver can run."""
        schema = await read_saver_schema(self._connection(), self._target.schema)
        reason = schema.reason() if schema.tables else None
        if reason != self._unsupported:
            if reason is not None:
                log.info(
                    "canary_unsupported",
                    schema=self._target.schema,
                    migration=schema.migration,
                    reason=reason,
                )
            else:
                log.info("canary_supported", schema=self._target.schema)
        self._unsupported = reason
        return schema

    async def _tables_ready(self) -> bool:
        """False while the database answers but the schema cannot take a probe.

        Either it has no checkpoint tables yet (the application creates them with
        ``setup()``), or another saver wrote them at a level below what the canary's
        saver needs (it never migrates them itself). Until that changes there is
        nothing to probe, and a probe would only fail and make health unhealthy; the
        schema is read again every turn. An unreachable database is for the probe to
        find and count.
        """
        try:
            async with self._lock, asyncio.timeout(self._timeout):
                await self._connect()
                schema = await self._read_schema()
        except UNREACHABLE:
            await self._drop()
            return True
        exists = schema.tables
        if not exists and not self._waiting_logged:
            log.info("canary_waiting_for_tables", schema=self._target.schema)
        self._waiting_logged = not exists
        return schema.supported

    async def _drop(self) -> None:
        conn, self._conn, self._saver = self._conn, None, None
        if conn is not None and not conn.closed:
            await conn.close()

    async def close(self) -> None:
        """Close the canary's connection; the figures stay."""
        await self._drop()


def _stored_problems(stored: CheckpointTuple) -> list[str]:
    expected = expected_content(stored.metadata)
    if expected is None:
        return ["stored.metadata"]
    return [f"stored.{name}" for name in differences(expected, stored)]


def _verify_stored(stored: CheckpointTuple) -> None:
    problems = _stored_problems(stored)
    if problems:
        raise CanaryMismatchError(problems)


def _describe(result: str, error: BaseException | None) -> str:
    if result == TIMEOUT:
        return "probe exceeded the canary timeout"
    return describe_error(error) if error is not None else result
