"""The metrics the instrumented saver records, and their per-operation children."""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

NAMESPACE = "langgraph_checkpointer"

# 0.05 and 0.1 are the save and load p95 targets: an SLO reads them straight
# from the `le` buckets, so they must be exact bucket bounds.
DURATION_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
LOCK_WAIT_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
# 256 B .. 64 MiB in powers of four.
PAYLOAD_BUCKETS = tuple(float(256 * 4**i) for i in range(10))

# Operation held by lock acquisitions made outside an instrumented call
# (setup(), or the async saver's sync methods bridged onto its event loop).
OTHER_OPERATION = "other"


@dataclass(slots=True)
class OperationProbe:
    """Metric children pre-bound to one (operation, saver) pair, so a call only observes."""

    operation: str
    saver: str
    duration: Histogram
    total: Counter
    errors: Counter
    in_flight: Gauge
    lock_wait: Histogram
    payload: Histogram

    def error_counter(self, error: str) -> Counter:
        return self.errors.labels(self.operation, self.saver, error)


class SaverMetrics:
    """One set of checkpointer metrics per registry, shared by every instrumented saver in it."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ("operation", "saver")
        self.duration = Histogram(
            "operation_duration_seconds",
            "Time a checkpointer operation took, lock wait included.",
            labels,
            namespace=NAMESPACE,
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.total = Counter(
            "operations",
            "Checkpointer operations completed, successful or not.",
            labels,
            namespace=NAMESPACE,
            registry=registry,
        )
        self.errors = Counter(
            "operation_errors",
            "Checkpointer operations that raised, by exception class.",
            (*labels, "error"),
            namespace=NAMESPACE,
            registry=registry,
        )
        self.in_flight = Gauge(
            "operations_in_flight",
            "Checkpointer operations currently running.",
            labels,
            namespace=NAMESPACE,
            registry=registry,
        )
        self.lock_wait = Histogram(
            "lock_wait_seconds",
            "Time spent waiting for the saver's internal lock before touching the database.",
            labels,
            namespace=NAMESPACE,
            buckets=LOCK_WAIT_BUCKETS,
            registry=registry,
        )
        self.lock_waiters = Gauge(
            "lock_waiters",
            "Operations currently queued for the saver's internal lock.",
            ("saver",),
            namespace=NAMESPACE,
            registry=registry,
        )
        self.payload = Histogram(
            "serialized_bytes",
            "Bytes passed through the saver's serializer by one operation "
            "(written by put and put_writes, read by get_tuple).",
            labels,
            namespace=NAMESPACE,
            buckets=PAYLOAD_BUCKETS,
            registry=registry,
        )

    def probe(self, operation: str, saver: str) -> OperationProbe:
        """Bind every child for ``operation`` now, so it is exported as zero before first use."""
        return OperationProbe(
            operation=operation,
            saver=saver,
            duration=self.duration.labels(operation, saver),
            total=self.total.labels(operation, saver),
            errors=self.errors,
            in_flight=self.in_flight.labels(operation, saver),
            lock_wait=self.lock_wait.labels(operation, saver),
            payload=self.payload.labels(operation, saver),
        )


_by_registry: weakref.WeakKeyDictionary[CollectorRegistry, SaverMetrics] = (
    weakref.WeakKeyDictionary()
)
_by_registry_lock = threading.Lock()


def saver_metrics(registry: CollectorRegistry | None = None) -> SaverMetrics:
    """The metrics of ``registry`` (default: prometheus_client's global one), created once."""
    registry = REGISTRY if registry is None else registry
    with _by_registry_lock:
        metrics = _by_registry.get(registry)
        if metrics is None:
            metrics = _by_registry[registry] = SaverMetrics(registry)
        return metrics
