"""A real sidecar serving only the collectors a test names, scraped over HTTP like Prometheus."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
from prometheus_client import CollectorRegistry

from exporter import Sidecar
from exporter.collectors.base import Collector
from exporter.settings import Settings
from tests.samples import Samples, parse_metrics


@dataclass(frozen=True, slots=True)
class Served:
    """The sidecar, and a client of its own."""

    sidecar: Sidecar
    http: aiohttp.ClientSession

    async def scrape(self) -> Samples:
        """One request to the telemetry path; it must answer 200. Its samples, parsed."""
        url = self.sidecar.url + self.sidecar.settings.telemetry_path
        async with self.http.get(url) as response:
            assert response.status == 200, await response.text()
            return parse_metrics(await response.text())


@asynccontextmanager
async def serving(settings: Settings, *collectors: Collector) -> AsyncIterator[Served]:
    """A started sidecar that runs ``collectors`` alone, on a registry of its own."""
    async with (
        Sidecar(settings, registry=CollectorRegistry(), collectors=collectors) as sidecar,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
    ):
        yield Served(sidecar, http)


async def scrape_once(settings: Settings, *collectors: Collector) -> Samples:
    """Start a sidecar running ``collectors`` alone, scrape it once over HTTP, stop it."""
    async with serving(settings, *collectors) as served:
        return await served.scrape()
