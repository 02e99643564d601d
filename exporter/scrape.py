"""Runs one scrape: every collector concurrently, each isolated and under its own deadline.

A collector that raises or overruns contributes only
``langgraph_checkpointer_scrape_collector_success{collector} 0`` and its
duration; everything else still appears, so ``/metrics`` stays useful
while the database is failing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from time import perf_counter
from typing import Final

import psycopg
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.metrics_core import Metric
from psycopg import errors
from psycopg_pool import PoolTimeout

from exporter.collectors.base import Collector, Memo, ScrapeContext
from exporter.deadline import settle
from exporter.log import get_logger
from exporter.redact import redact

log = get_logger("scrape")

SUCCESS = "langgraph_checkpointer_scrape_collector_success"
DURATION = "langgraph_checkpointer_scrape_collector_duration_seconds"


FAILURES = "langgraph_checkpointer_scrape_collector_failures"

# Why a collector failed. The server's limits are set strictly inside the deadline
# (exporter.database.server_timeouts_ms), so each cause has a reason of its own.
DEADLINE = "deadline"  # no answer by the collector's deadline
LOCK_TIMEOUT = "lock_timeout"  # the server gave up waiting for a lock someone else holds
STATEMENT_TIMEOUT = "statement_timeout"  # the server cancelled a statement that ran too long
CONNECTION = "connection"  # no connection could be had, or it broke
ERROR = "error"  # anything else the collector raised
REASONS: Final = (DEADLINE, LOCK_TIMEOUT, STATEMENT_TIMEOUT, CONNECTION, ERROR)


def failure_reason(exc: BaseException) -> str:
    """Which of :data:`REASONS` ``exc`` stands for; subclasses before their bases."""
    if isinstance(exc, errors.LockNotAvailable):
        return LOCK_TIMEOUT
    if isinstance(exc, errors.QueryCanceled):
        return STATEMENT_TIMEOUT
    if isinstance(exc, TimeoutError):
        return DEADLINE
    if isinstance(exc, psycopg.OperationalError | PoolTimeout | OSError):
        return CONNECTION
    return ERROR


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one collector produced in one scrape; ``reason`` says why it failed, if it did."""

    collector: str
    families: Sequence[Metric]
    ok: bool
    seconds: float
    reason: str | None = None


class FailureCounts:
    """Failed collector runs since start, by collector and reason, every pair from zero.

    The gauges of a scrape say that a collector failed; this counter says which limit
    fired or what broke, and keeps count between scrapes.
    """

    def __init__(self, collectors: Iterable[str]) -> None:
        self._counts = {(name, reason): 0 for name in collectors for reason in REASONS}
        self._family = Memo(_failures_family)

    def record(self, outcomes: Iterable[Outcome]) -> None:
        for outcome in outcomes:
            if outcome.reason is not None:
                key = (outcome.collector, outcome.reason)
                self._counts[key] = self._counts.get(key, 0) + 1

    def family(self) -> Metric:
        """The counter family; the same object while nothing failed."""
        (family,) = self._family(tuple(self._counts.items()))
        return family


def _failures_family(counts: tuple[tuple[tuple[str, str], int], ...]) -> list[Metric]:
    family = CounterMetricFamily(
        FAILURES,
        "Failed collector runs by reason: deadline, lock_timeout, statement_timeout, "
        "connection or error.",
        labels=["collector", "reason"],
    )
    for (name, reason), count in counts:
        family.add_metric([name, reason], float(count))
    return [family]


def outcome_families(outcomes: Iterable[Outcome]) -> list[Metric]:
    """The collectors' own families followed by their success and duration gauges."""
    success = GaugeMetricFamily(
        SUCCESS, "Whether the collector succeeded in this scrape.", labels=["collector"]
    )
    duration = GaugeMetricFamily(
        DURATION, "How long the collector took in this scrape.", labels=["collector"]
    )
    families: list[Metric] = []
    for outcome in outcomes:
        families.extend(outcome.families)
        success.add_metric([outcome.collector], 1.0 if outcome.ok else 0.0)
        duration.add_metric([outcome.collector], outcome.seconds)
    return [*families, success, duration]


async def gather_outcomes(
    collectors: Sequence[Collector], ctx: ScrapeContext, deadline: float
) -> list[Outcome]:
    """Every collector's outcome, all run at once, each within ``deadline`` seconds.

    An ``Exception`` (or a collector cancelling itself) is that collector's
    failure; anything else, and the cancellation of the scrape, propagates.
    The deadline is hard (:func:`exporter.deadline.settle`): a query still
    being cancelled does not hold the scrape.
    """
    started = perf_counter()
    tasks = [asyncio.ensure_future(collector.collect(ctx)) for collector in collectors]
    ended: dict[asyncio.Future[Sequence[Metric]], float] = {}
    for task in tasks:
        task.add_done_callback(lambda done: ended.setdefault(done, perf_counter()))
    await settle(deadline, tasks)
    outcomes = []
    for collector, task in zip(collectors, tasks, strict=True):
        if task in ended:
            outcomes.append(_outcome(collector, task, ended[task] - started))
        else:
            log.warning("collector_timeout", collector=collector.name, deadline_seconds=deadline)
            outcomes.append(Outcome(collector.name, (), False, perf_counter() - started, DEADLINE))
    return outcomes


def _outcome(
    collector: Collector, task: asyncio.Future[Sequence[Metric]], seconds: float
) -> Outcome:
    """What a collector that finished in time produced, or its failure, logged."""
    exc: BaseException | None = (
        asyncio.CancelledError("the collector cancelled itself")
        if task.cancelled()
        else task.exception()
    )
    if exc is None:
        return Outcome(collector.name, task.result(), True, seconds)
    if not isinstance(exc, Exception | asyncio.CancelledError):
        raise exc
    reason = failure_reason(exc)
    log.warning(
        "collector_failed",
        collector=collector.name,
        reason=reason,
        error=type(exc).__name__,
        message=redact(str(exc)),
    )
    return Outcome(collector.name, (), False, seconds, reason)


def status_families(
    *,
    up: bool,
    leader: bool,
    checkpointer: str,
    saver: str | None,
    schema: str,
    fallback: bool,
    versions: dict[str, str],
) -> list[Metric]:
    """The families every scrape carries: ``up``, identity, fallback and build info."""
    up_family = GaugeMetricFamily(
        "langgraph_checkpointer_up",
        "Whether the checkpoint database answered (1 when no database is configured).",
        value=1.0 if up else 0.0,
    )
    info = InfoMetricFamily(
        "langgraph_checkpointer",
        "The checkpointer in use.",
        value={"checkpointer": checkpointer, "saver": saver or "", "schema": schema},
    )
    fallback_family = GaugeMetricFamily(
        "langgraph_checkpointer_fallback_active",
        "1 when PostgreSQL was requested but the in-memory saver runs instead.",
        value=1.0 if fallback else 0.0,
    )
    build = InfoMetricFamily(
        "langgraph_checkpointer_build", "Versions of the exporter's parts.", value=versions
    )
    leader_family = GaugeMetricFamily(
        "langgraph_checkpointer_leader",
        "1 when this sidecar runs the database-wide collectors (it holds the database's "
        "leader lock, or leader election is off).",
        value=1.0 if leader else 0.0,
    )
    return [up_family, info, fallback_family, build, leader_family]
