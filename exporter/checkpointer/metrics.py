"""What the instrumented saver records, and the collector that exports it.

The checkpoint path is hot: prometheus_client's metric objects take a lock per
sample, so one call touching a histogram, two counters, a gauge and exemplars
would pay for six locks and as many objects. Here each (operation, saver) pair
keeps plain numbers under a single lock, and :class:`SaverMetrics` turns them
into ordinary Prometheus families at scrape time. ``bench/overhead.py``
measures the difference.
"""

from __future__ import annotations

import threading
import time
import weakref
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol, TypeVar

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Exemplar

from exporter.checkpointer.cohorts import Cohorts, cohort_families

NAMESPACE = "langgraph_checkpointer"

# 0.05 and 0.1 are the save and load p95 targets: an SLO reads them straight
# from the `le` buckets, so they must be exact bucket bounds.
DURATION_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
LOCK_WAIT_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
# 256 B .. 64 MiB in powers of four.
PAYLOAD_BUCKETS = tuple(float(256 * 4**i) for i in range(10))

# Operation held by lock acquisitions made outside an instrumented call
# (setup(), or the async saver's sync methods bridged onto its event loop).
OTHER_OPERATION = "other"

# An exemplar is kept per duration bucket and replaced once it is this old, so
# every bucket shows a recent thread without paying for one on every call.
EXEMPLAR_REFRESH_SECONDS = 5.0
# Exemplar labels are limited to 128 characters; a cut thread id would mislead.
MAX_EXEMPLAR_THREAD_ID = 100


def thread_id_of(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str | None:
    """The thread a saver call concerns: from its config, or a ``thread_id`` argument."""
    first = args[0] if args else kwargs.get("config", kwargs.get("thread_id"))
    if isinstance(first, Mapping):
        configurable = first.get("configurable")
        value = configurable.get("thread_id") if isinstance(configurable, Mapping) else None
        return value if isinstance(value, str) else None
    return first if isinstance(first, str) else None


class Distribution:
    """Histogram state: counts per bucket (not cumulative), their sum and total count."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def add(self, value: float) -> int:
        """Count ``value``; return its bucket index (``le`` is inclusive, as in Prometheus)."""
        index = bisect_left(self.bounds, value)
        self.counts[index] += 1
        self.sum += value
        return index

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, int]]:
        running, out = 0, []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            out.append((_le(bound), running))
        return out

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Distribution):
            return NotImplemented
        return (self.bounds, self.counts, self.sum) == (other.bounds, other.counts, other.sum)

    __hash__ = None  # type: ignore[assignment]  # mutable

    def copy(self) -> Distribution:
        clone = Distribution(self.bounds)
        clone.counts, clone.sum = list(self.counts), self.sum
        return clone


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


class OperationStats:
    """Everything recorded for one (operation, saver) pair, guarded by one lock."""

    __slots__ = (
        "_lock", "duration", "errors", "exemplars", "in_flight", "lock_wait", "operation",
        "payload", "saver",
    )  # fmt: skip

    def __init__(self, operation: str, saver: str) -> None:
        self.operation, self.saver = operation, saver
        self._lock = threading.Lock()
        self.in_flight = 0
        self.duration = Distribution(DURATION_BUCKETS)
        self.lock_wait = Distribution(LOCK_WAIT_BUCKETS)
        self.payload = Distribution(PAYLOAD_BUCKETS)
        self.errors: dict[str, int] = {}
        # Per duration bucket: (thread id, observed seconds, wall time, perf_counter stamp).
        self.exemplars: list[tuple[str, float, float, float] | None] = [None] * (
            len(DURATION_BUCKETS) + 1
        )

    def begin(self) -> None:
        with self._lock:
            self.in_flight += 1

    def moved(self) -> None:
        """A call begun here is recorded under another saver's stats: no longer in flight here."""
        with self._lock:
            self.in_flight -= 1

    def record(
        self,
        seconds: float,
        lock_wait: float | None,
        payload: int,
        error: str | None,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        now: float,
    ) -> None:
        """Record one finished call, ending at ``now`` (perf_counter).

        Positional only by convention: keyword calls cost measurably on this path.
        ``lock_wait`` is None when the call never took the saver's lock.
        """
        with self._lock:
            self.in_flight -= 1
            bucket = self.duration.add(seconds)
            if lock_wait is not None:
                self.lock_wait.add(lock_wait)
            if error is not None:
                self.errors[error] = self.errors.get(error, 0) + 1
            elif payload:
                self.payload.add(payload)
            held = self.exemplars[bucket]
        if held is None or now - held[3] >= EXEMPLAR_REFRESH_SECONDS:
            thread_id = thread_id_of(args, kwargs)
            if thread_id is not None and len(thread_id) <= MAX_EXEMPLAR_THREAD_ID:
                self.exemplars[bucket] = (thread_id, seconds, time.time(), now)

    def record_lock_wait(self, waited: float) -> None:
        with self._lock:
            self.lock_wait.add(waited)

    def snapshot(self) -> tuple[int, Distribution, Distribution, Distribution, dict[str, int]]:
        with self._lock:
            return (self.in_flight, self.duration.copy(), self.lock_wait.copy(),
                    self.payload.copy(), dict(self.errors))  # fmt: skip


class WaiterSource(Protocol):
    """A timed lock, as far as the collector is concerned."""

    saver: str
    waiting: int


_FAMILIES = {
    "duration": ("operation_duration_seconds",
                 "Time a checkpointer operation took, lock wait included."),
    "total": ("operations", "Checkpointer operations completed, successful or not."),
    "errors": ("operation_errors", "Checkpointer operations that raised, by exception class."),
    "in_flight": ("operations_in_flight", "Checkpointer operations currently running."),
    "lock_wait": ("lock_wait_seconds",
                  "Time an operation spent queueing for the saver's internal lock."),
    "lock_waiters": ("lock_waiters", "Operations currently queued for the saver's internal lock."),
    "payload": ("serialized_bytes",
                "Bytes passed through the saver's serializer by one operation "
                "(written by put and put_writes, read by get_tuple)."),
}  # fmt: skip


def _name(key: str) -> str:
    return f"{NAMESPACE}_{_FAMILIES[key][0]}"


class SaverMetrics:
    """The checkpointer metrics of one registry, shared by every instrumented saver in it."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._stats: dict[tuple[str, str], OperationStats] = {}
        self._stats_lock = threading.Lock()
        self._locks: weakref.WeakSet[Any] = weakref.WeakSet()
        self._cohorts: list[weakref.ref[Cohorts]] = []
        registry.register(self)

    def stats(self, operation: str, saver: str) -> OperationStats:
        """The accumulator of ``operation`` on ``saver``; it is exported (as zero) from now on."""
        key = (operation, saver)
        with self._stats_lock:
            stats = self._stats.get(key)
            if stats is None:
                stats = self._stats[key] = OperationStats(operation, saver)
            return stats

    def track_lock(self, lock: WaiterSource) -> None:
        """Export ``lock``'s queue length for as long as the lock lives."""
        self._locks.add(lock)

    def track_cohorts(self, cohorts: Cohorts) -> None:
        """Export the rollout figures of ``cohorts`` while it lives (its saver holds it)."""
        with self._stats_lock:
            self._cohorts = [ref for ref in self._cohorts if ref() is not None]
            self._cohorts.append(weakref.ref(cohorts))

    def describe(self) -> Iterator[Metric]:
        # Every name this collector may yield, so a registry's name[] filter finds them all.
        return iter(self._families(()) + cohort_families([Cohorts(100.0, dict)]))

    def collect(self) -> Iterator[Metric]:
        with self._stats_lock:
            stats = list(self._stats.values())
            cohorts = [c for c in (ref() for ref in self._cohorts) if c is not None]
        return iter(self._families(stats) + cohort_families(cohorts))

    def _families(self, all_stats: Iterable[OperationStats]) -> list[Metric]:
        labels = ["operation", "saver"]
        duration = HistogramMetricFamily(_name("duration"), _FAMILIES["duration"][1], labels=labels)
        total = CounterMetricFamily(_name("total"), _FAMILIES["total"][1], labels=labels)
        errors = CounterMetricFamily(
            _name("errors"), _FAMILIES["errors"][1], labels=[*labels, "error"]
        )
        in_flight = GaugeMetricFamily(_name("in_flight"), _FAMILIES["in_flight"][1], labels=labels)
        lock_wait = HistogramMetricFamily(
            _name("lock_wait"), _FAMILIES["lock_wait"][1], labels=labels
        )
        waiters = GaugeMetricFamily(
            _name("lock_waiters"), _FAMILIES["lock_waiters"][1], labels=["saver"]
        )
        payload = HistogramMetricFamily(_name("payload"), _FAMILIES["payload"][1], labels=labels)
        for stats in all_stats:
            key = [stats.operation, stats.saver]
            running, durations, waits, sizes, error_counts = stats.snapshot()
            buckets: list[Any] = [
                (le, count, _exemplar(stats.exemplars[i]))
                for i, (le, count) in enumerate(durations.cumulative())
            ]
            duration.add_metric(key, buckets, durations.sum)
            total.add_metric(key, durations.count)
            in_flight.add_metric(key, running)
            lock_wait.add_metric(key, waits.cumulative(), waits.sum)
            payload.add_metric(key, sizes.cumulative(), sizes.sum)
            for error, count in sorted(error_counts.items()):
                errors.add_metric([*key, error], count)
        queued: dict[str, int] = {}
        for lock in list(self._locks):
            queued[lock.saver] = queued.get(lock.saver, 0) + lock.waiting
        for saver, count in sorted(queued.items()):
            waiters.add_metric([saver], count)
        return [duration, total, errors, in_flight, lock_wait, waiters, payload]


def _exemplar(held: tuple[str, float, float, float] | None) -> Exemplar | None:
    if held is None:
        return None
    return Exemplar({"thread_id": held[0]}, held[1], held[2])


_by_registry: weakref.WeakKeyDictionary[CollectorRegistry, SaverMetrics] = (
    weakref.WeakKeyDictionary()
)
_by_registry_lock = threading.Lock()
_M = TypeVar("_M")


def _once(
    cache: weakref.WeakKeyDictionary[CollectorRegistry, _M],
    make: Callable[[CollectorRegistry], _M],
    registry: CollectorRegistry | None,
) -> _M:
    """The metrics ``make`` registers in ``registry`` (default: the global one), made once."""
    registry = REGISTRY if registry is None else registry
    with _by_registry_lock:
        metrics = cache.get(registry)
        if metrics is None:
            metrics = cache[registry] = make(registry)
        return metrics


def saver_metrics(registry: CollectorRegistry | None = None) -> SaverMetrics:
    """The saver metrics of ``registry`` (default: prometheus_client's global one)."""
    return _once(_by_registry, SaverMetrics, registry)
