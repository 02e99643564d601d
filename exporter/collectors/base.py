"""The collector protocol and what every collector is handed on a scrape."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Protocol, TypeVar, runtime_checkable

from prometheus_client.metrics_core import Metric
from psycopg_pool import AsyncConnectionPool

from exporter.checkpointer.instrumented import InstrumentedSaver
from exporter.jobs import Statuses
from exporter.settings import Settings


@dataclass(frozen=True, slots=True)
class ScrapeContext:
    """Read-only view of the exporter's resources for one scrape.

    ``database`` is the exporter's own small pool (None when no PostgreSQL is
    configured); ``pools`` are the connection pools to report, by name.
    ``jobs`` holds the statuses of the sidecar's background jobs (the canary, the
    last recovery check), read by key; a job that is off has none.
    """

    settings: Settings
    database: AsyncConnectionPool[Any] | None = None
    saver: InstrumentedSaver | None = None
    pools: Mapping[str, AsyncConnectionPool[Any]] = field(default_factory=dict)
    jobs: Statuses = field(default_factory=Statuses)


class Collector(Protocol):
    """One source of metrics; its ``name`` is its ``collector`` label and its setting.

    ``database_wide`` collectors read figures that are the same from every
    replica (catalog, activity, statements): with leader election on, only the
    sidecar holding the database's leader lock runs them.
    """

    name: ClassVar[str]
    database_wide: ClassVar[bool]

    async def collect(self, ctx: ScrapeContext) -> Sequence[Metric]:
        """Return the scrape's metric families; raise on failure (the scrape isolates it)."""
        ...


K = TypeVar("K")


class Memo(Generic[K]):
    """Families built from some state, built again only when that state changes.

    Most scrapes find a collector's state as the last one left it (a canary
    probe every half minute, a recovery check at start, a size sample drawn once
    a minute); handing back the very same families skips building them, and the
    exposition then knows their text unchanged without comparing them. The one
    such cache of families; the families must not be changed by whoever
    receives them. ``bench/scrape_cost.py`` measures what it saves.
    """

    def __init__(self, build: Callable[[K], Sequence[Metric]]) -> None:
        self._build = build
        self._last: tuple[K, Sequence[Metric]] | None = None

    def __call__(self, state: K) -> Sequence[Metric]:
        if self._last is None or self._last[0] != state:
            self._last = (state, tuple(self._build(state)))
        return self._last[1]


@runtime_checkable
class BackgroundWork(Protocol):
    """A collector that leaves work running between scrapes; the sidecar stops it on stop."""

    async def close(self) -> None:
        """Cancel the work under way and wait for it; safe to call twice."""
        ...
