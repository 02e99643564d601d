"""Every collector the exporter can run, in one explicit tuple (nothing registers on import).

``ALL`` holds classes: each sidecar makes its own instances, since some
collectors keep state between scrapes (a cached sample, a known table).
"""

from __future__ import annotations

from collections.abc import Iterable

from exporter.collectors.activity import ActivityCollector
from exporter.collectors.base import Collector, ScrapeContext
from exporter.collectors.canary import CanaryCollector
from exporter.collectors.integrity import IntegrityCollector
from exporter.collectors.migrations import MigrationsCollector
from exporter.collectors.pool import PoolCollector
from exporter.collectors.recovery import RecoveryCollector
from exporter.collectors.statements import StatementsCollector
from exporter.collectors.tables import TablesCollector
from exporter.collectors.workflows import WorkflowsCollector

ALL: tuple[type[Collector], ...] = (
    ActivityCollector,
    CanaryCollector,
    IntegrityCollector,
    MigrationsCollector,
    PoolCollector,
    RecoveryCollector,
    StatementsCollector,
    TablesCollector,
    WorkflowsCollector,
)


def create(names: Iterable[str]) -> tuple[Collector, ...]:
    """Fresh instances of the collectors ``names`` lists, in ``ALL``'s order."""
    wanted = set(names)
    return tuple(cls() for cls in ALL if cls.name in wanted)


__all__ = ["ALL", "Collector", "ScrapeContext", "create"]
