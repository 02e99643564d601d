"""The connection cap of an in-process sidecar, over real sockets, when no connection is idle.

The other limits, and the cap against idle sockets, are held in tests/test_http_fuzz.py on
sidecar processes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import MutableMapping
from typing import Any, ClassVar

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from structlog.testing import capture_logs

from exporter import Sidecar
from exporter.collectors.base import ScrapeContext
from exporter.settings import Settings
from tests.waiting import CAP, eventually


class GatedCollector:
    """Holds every scrape until its gate opens, so that connections stay busy."""

    name: ClassVar[str] = "gated"
    database_wide: ClassVar[bool] = False

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.waiting = 0

    async def collect(self, ctx: ScrapeContext) -> list[Metric]:
        self.waiting += 1
        await self.gate.wait()
        return []


async def get(port: int, path: str) -> bytes:
    """One request on a connection of its own; everything the server sent until it closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    try:
        return await asyncio.wait_for(reader.read(), CAP)
    finally:
        writer.close()


async def test_at_the_cap_with_every_connection_busy_a_new_one_is_closed(
    memory_settings: Settings,
) -> None:
    """Two scrapes in hand at a cap of two: a third connection is closed unanswered; once they
    are answered, the next one is served, and the episode is logged once, refusal counted."""
    gated = GatedCollector()
    settings = memory_settings.replace(web_max_connections=2, collector_timeout=600)
    with capture_logs() as events:
        async with Sidecar(settings, registry=CollectorRegistry(), collectors=(gated,)) as car:
            scrapes = [asyncio.ensure_future(get(car.port, "/metrics")) for _ in range(2)]
            await eventually(lambda: gated.waiting == 2, what="two scrapes in hand")
            reader, writer = await asyncio.open_connection("127.0.0.1", car.port)
            with contextlib.suppress(ConnectionResetError):
                assert await asyncio.wait_for(reader.read(), CAP) == b""
            writer.close()
            gated.gate.set()
            for answer in await asyncio.gather(*scrapes):
                assert answer.startswith(b"HTTP/1.1 200 ")
            assert (await get(car.port, "/healthz")).startswith(b"HTTP/1.1 200 ")

            def logged(event: str) -> list[MutableMapping[str, Any]]:
                return [e for e in events if e["event"] == event]

            await eventually(lambda: logged("http_connection_limit_cleared"), what="its end")
    [reached] = logged("http_connection_limit_reached")
    assert (reached["log_level"], reached["max_connections"]) == ("warning", 2)
    [cleared] = logged("http_connection_limit_cleared")
    assert (cleared["refused"], cleared["closed_idle"]) == (1, 0)
