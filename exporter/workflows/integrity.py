"""Integrity checks over LangGraph's checkpoint tables, in bounded steps that resume.

How ``AsyncPostgresSaver`` stores a checkpoint decides what "intact" means.
``checkpoint -> 'channel_versions'`` names every channel's current version;
``None``, ``str``, ``int``, ``float`` and ``bool`` values sit inline in
``checkpoint -> 'channel_values'``, any other value is a ``checkpoint_blobs``
row keyed (thread_id, checkpoint_ns, channel, version), written once, before
the first checkpoint that references it. A channel a step consumed keeps a new
version with neither (no blob row is written for an empty channel), and a
``DeltaChannel`` lives in ``checkpoint_writes`` between two snapshots (an inline
``true`` backed by a blob). So a version must have a value only when a
checkpoint records its channel as written (``updated_channels``) and the
channel is not a delta channel there. The checks:

- ``missing_blobs``: such a version with neither an inline value nor its blob
  row; one per missing blob, however many checkpoints reference it.
- ``orphan_writes``: ``checkpoint_writes`` rows whose checkpoint does not exist.
- ``unreferenced_blobs``: blob rows no checkpoint of their thread and namespace
  references (``adelete_thread`` and ``aprune`` never leave these).
- ``undecodable_blobs``: blob and write rows the serializer cannot load.

Not caught: a version whose writing checkpoint is gone (pruned, or never saved
under ``durability="exit"``) is not expected to have a value, and a delta
snapshot no later checkpoint references yet reads as a plain inline ``true``.

A pass walks every thread id found in any of the three tables, in order, by a
skip scan of their primary keys (one index probe per thread): each step reads
the next ``batch`` threads and all their rows, so its cost follows the batch,
not the store. The cursor lives in memory; a restart starts a new pass.

Races: LangGraph writes a checkpoint's blobs before the checkpoint, and may
save a step's writes before the checkpoint they belong to, so a save in flight
looks like unreferenced blobs or orphan writes. Every such finding is
confirmed by a second read of its thread after the blobs are decoded. Writes
also wait for their checkpoint while the saver's lock queue is long, for
seconds under load: a write counts as orphan only once its checkpoint's
UUIDv6 id (which carries the time it was made) is older than
:data:`ORPHAN_GRACE_SECONDS`. A save stalled longer than that is still
counted, as is one that failed half-way (whose rows LangGraph never removes).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any, Final, TypeVar

from langgraph.checkpoint.serde.base import SerializerProtocol
from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from exporter.checkpoint_time import uuid6_epoch
from exporter.checkpointer.serde import STRUCTURAL_SERDE
from exporter.redact import describe_error
from exporter.sql.checkpoints import (
    DATA_TABLES,
    MISSING_TABLES,
    structure_query,
    threads_query,
    values_query,
)

MISSING_BLOBS: Final = "missing_blobs"
ORPHAN_WRITES: Final = "orphan_writes"
UNREFERENCED_BLOBS: Final = "unreferenced_blobs"
UNDECODABLE_BLOBS: Final = "undecodable_blobs"
CHECKS: Final = (MISSING_BLOBS, ORPHAN_WRITES, UNREFERENCED_BLOBS, UNDECODABLE_BLOBS)

DEFAULT_BATCH: Final = 200
# Writes of a checkpoint younger than this may still be waiting for it to be saved.
ORPHAN_GRACE_SECONDS: Final = 60.0
# Rows decoded per hand-off to a worker thread, and bytes: bounds memory per step.
DECODE_CHUNK_ROWS: Final = 500
DECODE_CHUNK_BYTES: Final = 8 * 1024 * 1024
# A step faster than this share of its budget lets a shrunk batch grow back.
GROW_BELOW: Final = 0.25
DETAIL_CHANNELS: Final = 5
DETAIL_ERROR_CHARS: Final = 160

_Row = TypeVar("_Row", bound=Mapping[str, Any])


class MissingTablesError(LookupError):
    """The schema lacks LangGraph's tables: there is nothing to check yet."""


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem: where, which check, what (for logs and ``verify``, never labels).

    ``count`` is how many rows or blobs it stands for (a thread's orphan writes
    of one checkpoint are one finding).
    """

    check: str
    thread_id: str
    checkpoint_ns: str
    detail: str
    count: int = 1


@dataclass(frozen=True, slots=True)
class PassReport:
    """A completed pass: problems per check, threads examined, elapsed seconds.

    ``completed_at`` is Unix time. ``findings`` is filled by :func:`full_pass` only.
    """

    counts: Mapping[str, int]
    threads: int
    seconds: float
    completed_at: float
    findings: tuple[Finding, ...] = ()

    @property
    def problems(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True, slots=True)
class Step:
    """What one step examined and confirmed; ``completed`` when it ended a pass."""

    threads: int
    findings: tuple[Finding, ...]
    seconds: float
    completed: PassReport | None = None


def zero_counts() -> dict[str, int]:
    return dict.fromkeys(CHECKS, 0)


def count_findings(findings: Iterable[Finding]) -> dict[str, int]:
    """Problems per check, every check present."""
    counts = zero_counts()
    for finding in findings:
        counts[finding.check] += finding.count
    return counts


def _row_key(row: Mapping[str, Any]) -> tuple[Any, ...]:
    return (
        row["kind"],
        row["thread_id"],
        row["checkpoint_ns"],
        row["channel"],
        row["version"],
        row["checkpoint_id"] if row["kind"] == ORPHAN_WRITES else None,
    )


def settled(rows: Iterable[_Row], now: float, grace: float) -> list[_Row]:
    """``rows`` without orphan writes whose checkpoint is too young to be missing yet.

    Ids that are not UUIDv6 carry no time: their writes count at once.
    """
    kept = []
    for row in rows:
        if row["kind"] == ORPHAN_WRITES:
            made = uuid6_epoch(str(row["checkpoint_id"]))
            if made is not None and now - made < grace:
                continue
        kept.append(row)
    return kept


def confirmed(first: Iterable[Mapping[str, Any]], second: Iterable[_Row]) -> list[_Row]:
    """Rows of ``second`` that ``first`` found too: problems that outlived a moment."""
    seen = {_row_key(row) for row in first}
    return [row for row in second if _row_key(row) in seen]


def structure_findings(rows: Iterable[Mapping[str, Any]]) -> list[Finding]:
    """Turn :data:`~exporter.sql.checkpoints.STRUCTURE` rows into findings.

    One per missing blob and per checkpoint with orphan writes; a namespace's
    unreferenced blobs are one finding counting them.
    """
    findings: list[Finding] = []
    unreferenced: dict[tuple[str, str], list[str]] = {}
    for row in rows:
        kind, thread_id, ns = row["kind"], row["thread_id"], row["checkpoint_ns"]
        if kind == MISSING_BLOBS:
            detail = (
                f"channel {row['channel']!r} version {row['version']} has no blob row; "
                f"{row['rows']} checkpoint(s) reference it, the latest {row['checkpoint_id']}"
            )
            findings.append(Finding(MISSING_BLOBS, thread_id, ns, detail))
        elif kind == ORPHAN_WRITES:
            writes = int(row["rows"])
            detail = f"{writes} write(s) for checkpoint {row['checkpoint_id']}, which is gone"
            findings.append(Finding(ORPHAN_WRITES, thread_id, ns, detail, writes))
        elif kind == UNREFERENCED_BLOBS:
            unreferenced.setdefault((thread_id, ns), []).append(str(row["channel"]))
    for (thread_id, ns), channels in unreferenced.items():
        names = sorted(set(channels))
        shown = ", ".join(repr(name) for name in names[:DETAIL_CHANNELS])
        more = f" and {len(names) - DETAIL_CHANNELS} more" if len(names) > DETAIL_CHANNELS else ""
        detail = f"{len(channels)} blob(s) no checkpoint references, of channels {shown}{more}"
        findings.append(Finding(UNREFERENCED_BLOBS, thread_id, ns, detail, len(channels)))
    return findings


def _value_name(row: Mapping[str, Any]) -> str:
    if row["source"] == "blob":
        return f"blob of channel {row['channel']!r} version {row['version']}"
    return (
        f"write {row['idx']} of task {row['task_id']} on checkpoint {row['checkpoint_id']}, "
        f"channel {row['channel']!r}"
    )


def undecodable(serde: SerializerProtocol, rows: Iterable[Mapping[str, Any]]) -> list[Finding]:
    """Findings for the :data:`~exporter.sql.checkpoints.VALUES` rows ``serde`` cannot load,
    as the saver would."""
    findings: list[Finding] = []
    for row in rows:
        kind, data = row["type"], row["blob"]
        if kind is None or data is None:
            error = "no serialization type" if kind is None else "no bytes"
        else:
            try:
                serde.loads_typed((kind, bytes(data)))
                continue
            except Exception as exc:
                error = describe_error(exc)[:DETAIL_ERROR_CHARS]
        detail = f"{_value_name(row)} ({kind}) cannot be loaded: {error}"
        findings.append(Finding(UNDECODABLE_BLOBS, row["thread_id"], row["checkpoint_ns"], detail))
    return findings


@asynccontextmanager
async def _connection(
    database: AsyncConnection[Any] | AsyncConnectionPool[Any],
) -> AsyncIterator[AsyncConnection[Any]]:
    if isinstance(database, AsyncConnectionPool):
        async with database.connection() as conn:
            yield conn
    else:
        yield database


async def _fetch(
    conn: AsyncConnection[Any], query: str | sql.Composed, params: Mapping[str, Any]
) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(query, params)
        return await cursor.fetchall()


class Scanner:
    """One pass at a time over every thread, a step per call; holds the cursor and tallies.

    ``budget`` (seconds) is the deadline a step runs under, if any: when a step
    never finished (cancelled by the deadline, or failed), the next one takes
    half as many threads; a step well within the budget doubles it back, up to
    ``batch``. Not safe for concurrent steps: callers run one at a time.
    """

    def __init__(
        self,
        schema: str,
        serde: SerializerProtocol | None = None,
        batch: int = DEFAULT_BATCH,
        *,
        budget: float | None = None,
        orphan_grace: float = ORPHAN_GRACE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if batch < 1:
            raise ValueError(f"batch must be at least 1, got {batch}")
        self.schema = schema
        self.serde = serde if serde is not None else STRUCTURAL_SERDE
        self.max_batch = batch
        self.batch = batch
        self.budget = budget
        self.orphan_grace = orphan_grace
        self._clock = clock
        self._wall_clock = wall_clock
        self._after: str | None = None
        self._counts = zero_counts()
        self._threads = 0
        self._started: float | None = None
        self._unfinished = False
        self.passes = 0
        self.last_pass: PassReport | None = None

    @property
    def counts(self) -> Mapping[str, int]:
        """Problems the running pass has confirmed so far, per check."""
        return dict(self._counts)

    @property
    def threads(self) -> int:
        """Threads the running pass has examined so far."""
        return self._threads

    async def step(self, conn: AsyncConnection[Any]) -> Step:
        """Examine the next batch of threads on ``conn`` (autocommit, so each read is fresh).

        Raises :class:`MissingTablesError` (and changes nothing) when a table is missing.
        """
        if self._unfinished:
            self.batch = max(1, self.batch // 2)
        self._unfinished = True
        started = self._clock()
        missing = await _fetch(
            conn, MISSING_TABLES, {"schema": self.schema, "tables": list(DATA_TABLES)}
        )
        if missing and missing[0]["missing"]:
            self._unfinished = False
            raise MissingTablesError(
                f"schema {self.schema!r} lacks LangGraph's tables ({', '.join(DATA_TABLES)})"
            )
        params: dict[str, Any] = {"limit": self.batch + 1, "after": self._after}
        query = threads_query(self.schema, first=self._after is None)
        threads = [row["thread_id"] for row in await _fetch(conn, query, params)]
        last = len(threads) <= self.batch
        threads = threads[: self.batch]
        findings = await self._examine(conn, threads) if threads else []
        finished = self._clock()
        seconds = finished - started
        self._record(threads, findings, started, last)
        completed = self._complete(finished) if last else None
        self._unfinished = False
        if self.budget is not None and seconds < GROW_BELOW * self.budget:
            self.batch = min(self.max_batch, self.batch * 2)
        return Step(len(threads), tuple(findings), seconds, completed)

    async def _examine(self, conn: AsyncConnection[Any], threads: list[str]) -> list[Finding]:
        structure = structure_query(self.schema)
        rows = await _fetch(conn, structure, {"threads": threads})
        suspects = settled(rows, self._wall_clock(), self.orphan_grace)
        broken = await self._decode(conn, threads)
        if suspects:
            again = sorted({row["thread_id"] for row in suspects})
            suspects = confirmed(suspects, await _fetch(conn, structure, {"threads": again}))
        return [*structure_findings(suspects), *broken]

    async def _decode(self, conn: AsyncConnection[Any], threads: list[str]) -> list[Finding]:
        findings: list[Finding] = []
        chunk: list[dict[str, Any]] = []
        size = 0
        async with conn.cursor(row_factory=dict_row) as cursor:
            async for row in cursor.stream(values_query(self.schema), {"threads": threads}):
                chunk.append(row)
                size += len(row["blob"] or b"")
                if len(chunk) >= DECODE_CHUNK_ROWS or size >= DECODE_CHUNK_BYTES:
                    # Off the event loop, as the saver itself decodes.
                    findings += await asyncio.to_thread(undecodable, self.serde, chunk)
                    chunk, size = [], 0
        if chunk:
            findings += await asyncio.to_thread(undecodable, self.serde, chunk)
        return findings

    def _record(
        self, threads: Sequence[str], findings: Iterable[Finding], started: float, last: bool
    ) -> None:
        if self._started is None:
            self._started = started
        self._threads += len(threads)
        for check, count in count_findings(findings).items():
            self._counts[check] += count
        self._after = None if last else threads[-1]

    def _complete(self, finished: float) -> PassReport:
        report = PassReport(
            counts=dict(self._counts),
            threads=self._threads,
            seconds=finished - (self._started if self._started is not None else finished),
            completed_at=self._wall_clock(),
        )
        self.passes += 1
        self.last_pass = report
        self._counts = zero_counts()
        self._threads = 0
        self._started = None
        return report


async def full_pass(
    database: AsyncConnection[Any] | AsyncConnectionPool[Any],
    schema: str,
    serde: SerializerProtocol | None = None,
    batch: int = DEFAULT_BATCH,
    *,
    orphan_grace: float = ORPHAN_GRACE_SECONDS,
) -> PassReport:
    """Run one whole pass over ``schema``'s threads and return it with every finding.

    ``database`` is an autocommit connection or a pool (a connection per step);
    ``serde`` is the application's serializer, by default LangGraph's
    ``JsonPlusSerializer`` reading application classes as plain data. Raises
    :class:`MissingTablesError` when LangGraph's tables are missing.
    """
    scanner = Scanner(schema, serde, batch, orphan_grace=orphan_grace)
    findings: list[Finding] = []
    while True:
        async with _connection(database) as conn:
            step = await scanner.step(conn)
        findings += step.findings
        if step.completed is not None:
            return replace(step.completed, findings=tuple(findings))
