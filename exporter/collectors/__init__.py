"""Every collector the exporter can run, in one explicit tuple."""

from __future__ import annotations

from exporter.collectors.base import Collector, ScrapeContext
from exporter.collectors.pool import PoolCollector

ALL: tuple[Collector, ...] = (PoolCollector(),)

__all__ = ["ALL", "Collector", "ScrapeContext"]
