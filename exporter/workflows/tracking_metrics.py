"""Workflow tracking's own metrics: what the trackers' flushers received, wrote and gave up.

They live beside the tracker rather than with the saver's metrics because only the
tracker feeds them; the primitives they share (:class:`Distribution`, the namespace,
one set of metrics per registry) stay in :mod:`exporter.checkpointer.metrics`.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric

from exporter.checkpointer.metrics import NAMESPACE, Distribution, _once

# Every known label value, exported as zero.
TRACKING_EVENTS = (
    "checkpoint", "failed_write", "error", "interrupt", "resume", "mark", "run_end", "delete",
    "prune", "unreadable",
)  # fmt: skip
TRACKING_ERRORS = ("connection", "timeout", "missing_table", "rejected", "other")
TRACKING_DROPS = ("overflow", "rejected")
FLUSH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

_TRACKING_FAMILIES = {
    "events": ("tracking_events",
               "Saver calls and API marks workflow tracking received, by event "
               "(`unreadable`: a call whose thread could not be read)."),
    "flushes": ("tracking_flushes", "Batches workflow tracking tried to write, successful or not."),
    "errors": ("tracking_errors", "Failed workflow tracking writes, by reason; the batch is "
               "kept and retried."),
    "dropped": ("tracking_dropped_updates",
                "Threads whose pending tracking update was given up: `overflow` (too many "
                "pending during an outage, oldest first) or `rejected` (refused by the database)."),
    "written": ("tracking_rows_written", "Rows of workflow_metadata inserted or updated."),
    "duration": ("tracking_flush_duration_seconds", "Time one tracking write took."),
    "pending": ("tracking_pending_threads", "Threads with tracking updates not yet written."),
}  # fmt: skip


class PendingSource(Protocol):
    """A tracker, as far as the pending gauge is concerned."""

    @property
    def pending_threads(self) -> int: ...


class TrackingMetrics:
    """Workflow tracking's figures for one registry, summed over the trackers writing to it.

    Only the trackers' background flushers update them, never the checkpoint path.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._lock = threading.Lock()
        self.events = dict.fromkeys(TRACKING_EVENTS, 0)
        self.errors = dict.fromkeys(TRACKING_ERRORS, 0)
        self.dropped = dict.fromkeys(TRACKING_DROPS, 0)
        self.flushes = 0
        self.written = 0
        self.duration = Distribution(FLUSH_BUCKETS)
        self._sources: weakref.WeakSet[Any] = weakref.WeakSet()
        registry.register(self)

    def track(self, source: PendingSource) -> None:
        """Count ``source``'s pending threads for as long as it lives."""
        self._sources.add(source)

    def received(self, counts: Mapping[str, int]) -> None:
        with self._lock:
            for event, count in counts.items():
                self.events[event] += count

    def flushed(self, seconds: float, error: str | None) -> None:
        """One write attempt took ``seconds``; ``error`` is its failure reason, if it failed."""
        with self._lock:
            self.flushes += 1
            self.duration.add(seconds)
            if error is not None:
                self.errors[error] += 1

    def wrote(self, rows: int) -> None:
        with self._lock:
            self.written += rows

    def drop(self, reason: str, count: int) -> None:
        with self._lock:
            self.dropped[reason] += count

    def describe(self) -> Iterator[Metric]:
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        return iter(self._families())

    def _families(self) -> list[Metric]:
        def name(key: str) -> str:
            return f"{NAMESPACE}_{_TRACKING_FAMILIES[key][0]}"

        def text(key: str) -> str:
            return _TRACKING_FAMILIES[key][1]

        with self._lock:
            events, errors, dropped = dict(self.events), dict(self.errors), dict(self.dropped)
            flushes, written, duration = self.flushes, self.written, self.duration.copy()
        pending = sum(source.pending_threads for source in list(self._sources))
        events_family = CounterMetricFamily(name("events"), text("events"), labels=["event"])
        for event, count in events.items():
            events_family.add_metric([event], count)
        errors_family = CounterMetricFamily(name("errors"), text("errors"), labels=["reason"])
        for reason, count in errors.items():
            errors_family.add_metric([reason], count)
        dropped_family = CounterMetricFamily(name("dropped"), text("dropped"), labels=["reason"])
        for reason, count in dropped.items():
            dropped_family.add_metric([reason], count)
        duration_family = HistogramMetricFamily(name("duration"), text("duration"))
        duration_family.add_metric([], duration.cumulative(), duration.sum)
        return [
            events_family,
            CounterMetricFamily(name("flushes"), text("flushes"), value=flushes),
            errors_family,
            dropped_family,
            CounterMetricFamily(name("written"), text("written"), value=written),
            duration_family,
            GaugeMetricFamily(name("pending"), text("pending"), value=pending),
        ]


_by_registry: weakref.WeakKeyDictionary[CollectorRegistry, TrackingMetrics] = (
    weakref.WeakKeyDictionary()
)


def tracking_metrics(registry: CollectorRegistry | None = None) -> TrackingMetrics:
    """Workflow tracking's metrics in ``registry`` (default: the global one)."""
    return _once(_by_registry, TrackingMetrics, registry)
