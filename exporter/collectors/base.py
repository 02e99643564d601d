"""The collector protocol and what every collector is handed on a scrape."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from prometheus_client.metrics_core import Metric
from psycopg_pool import AsyncConnectionPool

from exporter.checkpointer.instrumented import InstrumentedSaver
from exporter.settings import Settings

if TYPE_CHECKING:
    from exporter.workflows.canary import CanaryStatus
    from exporter.workflows.recovery import RecoveryReport


@dataclass(frozen=True, slots=True)
class ScrapeContext:
    """Read-only view of the exporter's resources for one scrape.

    ``database`` is the exporter's own small pool (None when no PostgreSQL is
    configured); ``pools`` are the connection pools to report, by name.
    ``canary`` and ``recovery`` are snapshots of the sidecar's canary and of
    its last recovery check (None: canary off, or no check finished yet).
    """

    settings: Settings
    database: AsyncConnectionPool[Any] | None = None
    saver: InstrumentedSaver | None = None
    pools: Mapping[str, AsyncConnectionPool[Any]] = field(default_factory=dict)
    canary: CanaryStatus | None = None
    recovery: RecoveryReport | None = None


class Collector(Protocol):
    """One source of metrics; its ``name`` is its ``collector`` label and its setting.

    ``database_wide`` collectors read figures that are the same from every
    replica (catalog, activity, statements): with leader election on, only the
    sidecar holding the database's leader lock runs them.
    """

    name: ClassVar[str]
    database_wide: ClassVar[bool]

    async def collect(self, ctx: ScrapeContext) -> list[Metric]:
        """Return freshly built metric families; raise on failure (the scrape isolates it)."""
        ...


@runtime_checkable
class BackgroundWork(Protocol):
    """A collector that leaves work running between scrapes; the sidecar stops it on stop."""

    async def close(self) -> None:
        """Cancel the work under way and wait for it; safe to call twice."""
        ...
