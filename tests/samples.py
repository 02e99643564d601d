"""Reading metrics in tests: parsed samples keyed by name and labels, a scrape context, a clock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from exporter.collectors.base import ScrapeContext
from exporter.database import exporter_pool
from exporter.settings import Settings

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def samples_of(families: Iterable[Metric]) -> Samples:
    """Every sample of ``families``, keyed by name and sorted labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in families
        for s in family.samples
    }


def parse_metrics(text: str) -> Samples:
    """Every sample of a text exposition, keyed by name and sorted labels."""
    return samples_of(text_string_to_metric_families(text))


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample ``name{labels}``; a KeyError names it when absent."""
    return samples[(name, tuple(sorted(labels.items())))]


@asynccontextmanager
async def scrape_context(dsn: str, settings: Settings) -> AsyncIterator[ScrapeContext]:
    """A scrape context on the exporter's own pool, opened for the duration."""
    pool = exporter_pool(dsn, settings)
    await pool.open(wait=True)
    try:
        yield ScrapeContext(settings, pool)
    finally:
        await pool.close()
