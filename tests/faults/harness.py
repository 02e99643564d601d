"""What the fault scenarios share: the application's own ledger, a poller and a workload."""

from __future__ import annotations

import asyncio
import copy
import functools
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import psycopg
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import Checkpoint
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from psycopg import AsyncConnection
from psycopg.rows import dict_row

from exporter.checkpointer.instrumented import TIMED, InstrumentedSaver, Kind
from exporter.workload import compile_workflow, initial_state
from tests.samples import Samples, parse_metrics

HEALTH = "/api/health/checkpointer"
METRICS = "/metrics"
HEALTHZ = "/healthz"
OPERATIONS = "langgraph_checkpointer_operations_total"
ERRORS = "langgraph_checkpointer_operation_errors_total"


@dataclass
class SavedCheckpoint:
    """What one successful ``aput`` stored, as the application handed it over."""

    config: RunnableConfig
    channel_values: dict[str, Any]
    channel_versions: dict[str, Any]


@dataclass
class Ledger:
    """The application's own count of checkpointer calls, kept apart from the exporter's.

    Installed on the saver instance, so LangGraph's calls go through it: every
    call is an attempt, then a success or an error, and each successful
    ``aput`` keeps what it saved for reading back later.
    """

    attempts: Counter[str] = field(default_factory=Counter)
    successes: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    saved: list[SavedCheckpoint] = field(default_factory=list)

    def install(self, saver: InstrumentedSaver) -> None:
        for name, (operation, kind) in TIMED.items():
            if name not in type(saver).__dict__:
                continue
            if kind is Kind.ASYNC:
                setattr(saver, name, self._count_call(operation, getattr(saver, name)))
            elif kind is Kind.ASYNC_ITERATOR:
                setattr(saver, name, self._count_iteration(operation, getattr(saver, name)))

    def _count_call(self, operation: str, method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.attempts[operation] += 1
            try:
                result = await method(*args, **kwargs)
            except BaseException:
                self.errors[operation] += 1
                raise
            self.successes[operation] += 1
            if operation == "put":
                checkpoint: Checkpoint = args[1] if len(args) > 1 else kwargs["checkpoint"]
                self.saved.append(
                    SavedCheckpoint(
                        result,
                        copy.deepcopy(dict(checkpoint["channel_values"])),
                        dict(checkpoint["channel_versions"]),
                    )
                )
            return result

        return counted

    def _count_iteration(self, operation: str, method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        async def counted(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            self.attempts[operation] += 1
            try:
                async for item in method(*args, **kwargs):
                    yield item
            except BaseException:
                self.errors[operation] += 1
                raise
            self.successes[operation] += 1

        return counted

    def mismatches(self, samples: Samples) -> list[str]:
        """Where the exporter's operation counters differ from this ledger (empty: none)."""
        exported: Counter[str] = Counter()
        failed: Counter[str] = Counter()
        for (name, labels), number in samples.items():
            operation = dict(labels).get("operation", "")
            if name == OPERATIONS:
                exported[operation] += int(number)
            elif name == ERRORS:
                failed[operation] += int(number)
        found = []
        for operation in sorted(set(exported) | set(self.attempts)):
            if exported[operation] != self.attempts[operation]:
                found.append(f"{operation}: {exported[operation]} counted, "
                             f"{self.attempts[operation]} attempted")  # fmt: skip
            if failed[operation] != self.errors[operation]:
                found.append(f"{operation}: {failed[operation]} errors counted, "
                             f"{self.errors[operation]} raised")  # fmt: skip
            if self.successes[operation] + self.errors[operation] != self.attempts[operation]:
                found.append(f"{operation}: an attempt neither succeeded nor failed")
        return found


async def unreadable_checkpoints(
    dsn: str, schema: str, saved: Iterable[SavedCheckpoint]
) -> tuple[int, list[str]]:
    """Read every saved checkpoint back through a plain saver; the count and what differed."""
    problems: list[str] = []
    checked = 0
    async with await AsyncConnection.connect(
        dsn, autocommit=True, row_factory=dict_row, options=f"-c search_path={schema}"
    ) as conn:
        reader = AsyncPostgresSaver(conn=conn)
        for entry in saved:
            checked += 1
            loaded = await reader.aget_tuple(entry.config)
            where = entry.config["configurable"]["checkpoint_id"]
            if loaded is None:
                problems.append(f"{where}: missing")
                continue
            if loaded.checkpoint["channel_versions"] != entry.channel_versions:
                problems.append(f"{where}: channel_versions differ")
            if loaded.checkpoint["channel_values"] != entry.channel_values:
                problems.append(f"{where}: channel_values differ")
    return checked, problems


@dataclass
class Workload:
    """N concurrent real workflows, one after another per worker, until told to stop."""

    saver: InstrumentedSaver
    workers: int = 100
    think_time: float = 0.02
    completed: int = 0
    failed: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        graph = compile_workflow(self.saver, self.think_time, state_kb=4)
        self._tasks = [asyncio.create_task(self._worker(graph, i)) for i in range(self.workers)]

    async def stop(self) -> None:
        """Let every workflow under way finish, then return."""
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _worker(self, graph: Any, index: int) -> None:
        tracker = self.saver.tracker
        while not self._stop.is_set():
            thread_id = f"fault-{index}-{uuid.uuid4().hex[:12]}"
            config: Any = {"configurable": {"thread_id": thread_id}}
            try:
                if tracker is not None:
                    async with tracker.run(thread_id):
                        await graph.ainvoke(initial_state(thread_id), config)
                else:
                    await graph.ainvoke(initial_state(thread_id), config)
            except Exception as exc:
                self.failed += 1
                self.failures[type(exc).__name__] += 1
                # A failed workflow is retried by a new one after a pause, as a client would.
                await asyncio.sleep(0.05)
            else:
                self.completed += 1


@dataclass(frozen=True, slots=True)
class Poll:
    """One request of the poller: when it started, on which path, the answer and its time."""

    at: float
    path: str
    status: int | None
    seconds: float
    health: dict[str, Any] | None = None
    up: float | None = None
    failed: tuple[str, ...] = ()

    @property
    def status_text(self) -> str | None:
        """The health document's status, for health polls that were answered."""
        return None if self.health is None else str(self.health.get("status"))


class Poller:
    """Asks every path every ``interval`` from a thread of its own, as outside probes would.

    Requests start on a fixed cadence whether or not earlier ones have been
    answered, or, with ``overlapping=False``, each path waits for its last answer
    as Prometheus does. One without an answer within ``deadline`` counts as
    unanswered (``status`` None).
    """

    def __init__(
        self,
        base_url: str,
        paths: Iterable[str],
        interval: float = 0.1,
        deadline: float = 5.0,
        *,
        overlapping: bool = True,
    ) -> None:
        self.base_url = base_url
        self.overlapping = overlapping
        self.paths = tuple(paths)
        self.interval = interval
        self.deadline = deadline
        self.polls: list[Poll] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="poller")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def between(self, start: float, end: float, path: str | None = None) -> list[Poll]:
        return [p for p in self.polls if start <= p.at <= end and path in (None, p.path)]

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.deadline)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            pending: set[asyncio.Task[None]] = set()
            # A fixed cadence, as a load balancer's probes: a slow answer delays no other.
            while not self._stop.is_set():
                started = time.monotonic()
                for path in self.paths:
                    task = asyncio.create_task(self._record(http, path))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                if not self.overlapping:
                    await asyncio.gather(*pending)
                await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - started)))
            await asyncio.gather(*pending)
        # The session's sockets close in callbacks; this loop ends right after, so let them run
        # (aiohttp's advice for a graceful shutdown).
        await asyncio.sleep(0.1)

    async def _record(self, http: aiohttp.ClientSession, path: str) -> None:
        self.polls.append(await self._ask(http, path))

    async def _ask(self, http: aiohttp.ClientSession, path: str) -> Poll:
        started = time.monotonic()
        try:
            async with http.get(self.base_url + path) as response:
                body = await response.text()
                status = response.status
        except (aiohttp.ClientError, TimeoutError):
            return Poll(started, path, None, time.monotonic() - started)
        seconds = time.monotonic() - started
        if path == HEALTH:
            return Poll(started, path, status, seconds, health=_document(body))
        if path == METRICS and status == 200:
            samples = parse_metrics(body)
            up = samples.get(("langgraph_checkpointer_up", ()))
            return Poll(started, path, status, seconds, up=up, failed=failed_collectors(samples))
        return Poll(started, path, status, seconds)


def _document(body: str) -> dict[str, Any] | None:
    try:
        document = json.loads(body)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


SCRAPE_TIMEOUT = 10.0


async def scrape(url: str) -> Samples:
    """One scrape of ``url``'s ``/metrics``, parsed."""
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT)) as http,
        http.get(url + METRICS) as response,
    ):
        assert response.status == 200, response.status
        return parse_metrics(await response.text())


def failed_collectors(samples: Samples) -> tuple[str, ...]:
    """The collectors a scrape reported with ``scrape_collector_success 0``."""
    return tuple(
        sorted(
            dict(labels)["collector"]
            for (name, labels), number in samples.items()
            if name == "langgraph_checkpointer_scrape_collector_success" and number == 0
        )
    )


class ConnectionCounter:
    """Counts, every ``interval`` on a direct connection, the sessions of one application name.

    Runs in a thread of its own, so that it keeps counting whatever the
    process under test does with its event loop.
    """

    def __init__(self, dsn: str, application_name: str, interval: float = 0.1) -> None:
        self.dsn = dsn
        self.application_name = application_name
        self.interval = interval
        self.counts: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="connection-counter")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def max_between(self, start: float, end: float) -> int:
        return max((n for at, n in self.counts if start <= at <= end), default=0)

    def _run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self._stop.wait(self.interval):
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND application_name = %s",
                    (self.application_name,),
                ).fetchone()
                self.counts.append((time.monotonic(), int(row[0]) if row else 0))
