"""Where this process keeps its threads: the rollout's share and the threads of each backend.

The figures of the process that holds the saver (exported beside the operation metrics, by the
same collector; a standalone sidecar has none):

    langgraph_checkpointer_rollout_ratio 0.5
    langgraph_checkpointer_rollout_threads{backend="postgres"} 51
    langgraph_checkpointer_rollout_threads{backend="memory"} 49
    langgraph_checkpointer_rollout_threads{backend="fallback"} 0

``postgres`` and ``memory`` are the routing saver's two cohorts, counted from the placements it
remembers; ``fallback`` counts the threads of the in-memory saver that runs because PostgreSQL
was unreachable at start. A PostgreSQL saver alone places nothing, so it shows the ratio only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Final

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

POSTGRES: Final = "postgres"
MEMORY: Final = "memory"
FALLBACK: Final = "fallback"
BACKENDS: Final = (POSTGRES, MEMORY, FALLBACK)

RATIO: Final = "langgraph_checkpointer_rollout_ratio"
THREADS: Final = "langgraph_checkpointer_rollout_threads"
RATIO_HELP: Final = (
    "Share of new threads the checkpointer saves in PostgreSQL, 0 to 1 "
    "(CHECKPOINT_EXPORTER_ROLLOUT_PERCENT / 100; 0 when it runs in memory only)."
)
THREADS_HELP: Final = (
    "Threads this process has placed, by backend: postgres and memory as the routing saver "
    "remembers them (the latest 65536), fallback those in memory because PostgreSQL was "
    "unreachable at start."
)

Threads = Callable[[], Mapping[str, int]]


class Cohorts:
    """The rollout as one checkpointer runs it: ``percent`` of new threads go to PostgreSQL;
    ``threads()`` counts the threads of each backend, or is None where nothing places them."""

    __slots__ = ("__weakref__", "percent", "threads")

    def __init__(self, percent: float, threads: Threads | None = None) -> None:
        self.percent = percent
        self.threads = threads


def cohort_families(live: Iterable[Cohorts]) -> list[Metric]:
    """The rollout families of the checkpointers alive, oldest first (none: no family).

    The ratio is the newest checkpointer's; threads add up over all of them, every backend
    shown, zero when empty.
    """
    cohorts = list(live)
    if not cohorts:
        return []
    families: list[Metric] = [GaugeMetricFamily(RATIO, RATIO_HELP, cohorts[-1].percent / 100)]
    counted = [c.threads() for c in cohorts if c.threads is not None]
    if counted:
        threads = GaugeMetricFamily(THREADS, THREADS_HELP, labels=["backend"])
        for backend in BACKENDS:
            threads.add_metric([backend], sum(c.get(backend, 0) for c in counted))
        families.append(threads)
    return families
