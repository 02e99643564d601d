"""What the sidecar's own ``/metrics`` responses say about each scrape, read over HTTP.

Every response carries each collector's duration, the exporter pool's counters
and the process's CPU: their medians and their deltas between the first and
the last response show where the sidecar's time goes, with no probe inside it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from benchlib import median

from exporter.loadtest import percentile

COLLECTOR_DURATION = re.compile(
    r'^langgraph_checkpointer_scrape_collector_duration_seconds\{collector="([^"]+)"\} (\S+)$',
    re.MULTILINE,
)
EXPORTER_POOL = re.compile(
    r"^langgraph_checkpointer_pool_(requests_total|requests_queued_total|"
    r'requests_wait_seconds_total)\{pool="exporter"\} (\S+)$',
    re.MULTILINE,
)
PROCESS_CPU = re.compile(r"^process_cpu_seconds_total (\S+)$", re.MULTILINE)


@dataclass(slots=True)
class Breakdown:
    """What our own responses say about each scrape: collector durations, pool, CPU."""

    collectors: dict[str, list[float]] = field(default_factory=dict)
    first_pool: dict[str, float] = field(default_factory=dict)
    last_pool: dict[str, float] = field(default_factory=dict)
    first_cpu: float | None = None
    last_cpu: float | None = None
    scrapes: int = 0

    def add(self, text: str) -> None:
        for name, value in COLLECTOR_DURATION.findall(text):
            self.collectors.setdefault(name, []).append(float(value))
        pool = {name: float(value) for name, value in EXPORTER_POOL.findall(text)}
        cpu = PROCESS_CPU.search(text)
        if self.scrapes == 0:
            self.first_pool = pool
            self.first_cpu = float(cpu[1]) if cpu else None
        self.last_pool = pool
        self.last_cpu = float(cpu[1]) if cpu else None
        self.scrapes += 1

    def per_scrape(self, name: str) -> float:
        intervals = self.scrapes - 1
        if intervals <= 0 or name not in self.first_pool or name not in self.last_pool:
            return 0.0
        return (self.last_pool[name] - self.first_pool[name]) / intervals

    @property
    def cpu_ms(self) -> float:
        """The sidecar process's CPU per scrape (process_cpu_seconds_total, 10 ms ticks)."""
        if self.first_cpu is None or self.last_cpu is None or self.scrapes < 2:
            return 0.0
        return (self.last_cpu - self.first_cpu) * 1000 / (self.scrapes - 1)

    def as_dict(self) -> dict[str, Any]:
        return {
            "collector_ms": {
                name: {
                    "median": median(values) * 1000,
                    "p90": percentile(values, 90) * 1000,
                    "p99": percentile(values, 99) * 1000,
                }
                for name, values in sorted(self.collectors.items())
            },
            "exporter_pool_per_scrape": {
                "requests": self.per_scrape("requests_total"),
                "queued": self.per_scrape("requests_queued_total"),
                "wait_ms": self.per_scrape("requests_wait_seconds_total") * 1000,
            },
            "sidecar_cpu_ms_per_scrape": self.cpu_ms,
        }

    def render(self) -> list[str]:
        b = self.as_dict()
        pool = b["exporter_pool_per_scrape"]
        return [
            "   Where our time goes, from our own responses (langgraph_checkpointer_scrape_"
            "collector_duration_seconds):",
            "",
            f"   {'collector':<14}{'median ms':>10}{'p90 ms':>9}{'p99 ms':>9}",
            *(
                f"   {name:<14}{ms['median']:>10.2f}{ms['p90']:>9.2f}{ms['p99']:>9.2f}"
                for name, ms in b["collector_ms"].items()
            ),
            "",
            f"   exporter pool per scrape: {pool['requests']:.2f} connection requests, "
            f"{pool['queued']:.2f} queued, {pool['wait_ms']:.2f} ms waiting in total",
            f"   sidecar process CPU per scrape: {b['sidecar_cpu_ms_per_scrape']:.2f} ms "
            "(process_cpu_seconds_total)",
        ]
