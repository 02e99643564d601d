"""Every collector the exporter can run, in one explicit tuple (nothing registers on import)."""

from __future__ import annotations

from exporter.collectors.activity import ActivityCollector
from exporter.collectors.base import Collector, ScrapeContext
from exporter.collectors.migrations import MigrationsCollector
from exporter.collectors.pool import PoolCollector
from exporter.collectors.statements import StatementsCollector
from exporter.collectors.tables import TablesCollector

ALL: tuple[Collector, ...] = (
    ActivityCollector(),
    MigrationsCollector(),
    PoolCollector(),
    StatementsCollector(),
    TablesCollector(),
)

__all__ = ["ALL", "Collector", "ScrapeContext"]
