"""One side of bench/scrape_cost.py: scrapes and renders in process, a block at a time, on demand.

Started by that script with ``PYTHONPATH`` naming the source tree to measure,
so it imports only what every tree compared so far has: the sidecar, its
settings and the renderer. It answers each line ``N`` on stdin with one JSON
line: the wall and CPU time of each of N scrapes and of rendering each, in
seconds. ``--without`` switches off a layer of reuse by name before anything
runs (see :data:`LAYERS`), so one tree can be measured with and without it.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from time import perf_counter, process_time
from typing import Any, Final

from prometheus_client import generate_latest

import exporter
from exporter.exposition import Renderer, exposition
from exporter.log import configure_logging
from exporter.settings import Settings
from exporter.sidecar import Sidecar


class MissingLayerError(RuntimeError):
    """The tree measured has no such layer to switch off."""


def _module(name: str) -> Any:
    __import__(name)
    return sys.modules[name]


def _unwrap(module: str, names: Iterable[str]) -> None:
    """Replace each functools-cached function by the function it wraps."""
    target = _module(module)
    for name in names:
        cached = getattr(target, name, None)
        if not hasattr(cached, "__wrapped__"):
            raise MissingLayerError(f"{module}.{name} is not cached in this tree")
        setattr(target, name, cached.__wrapped__)  # type: ignore[union-attr]


def _unwrap_queries() -> None:
    """Every cached ``*_query`` builder of the collectors, built anew on each call."""
    found = False
    for module in ("migrations", "workflows", "tables"):
        target = _module(f"exporter.collectors.{module}")
        for name, value in list(vars(target).items()):
            if name.endswith("_query") and hasattr(value, "cache_info"):
                setattr(target, name, value.__wrapped__)
                found = True
    if not found:
        raise MissingLayerError("no cached query builders in this tree")


def _without_memo() -> None:
    base = _module("exporter.collectors.base")
    memo = getattr(base, "Memo", None)
    if memo is None:
        raise MissingLayerError("exporter.collectors.base has no Memo in this tree")

    def call(self: Any, state: Any) -> Any:
        return tuple(self._build(state))

    memo.__call__ = call


def _without_distribution_eq() -> None:
    metrics = _module("exporter.checkpointer.metrics")
    if "__eq__" not in vars(metrics.Distribution):
        raise MissingLayerError("Distribution has no __eq__ in this tree")
    del metrics.Distribution.__eq__


def _without_failure_family() -> None:
    scrape = _module("exporter.scrape")
    if scrape.FailureCounts(())._family is not None:
        raise MissingLayerError("FailureCounts keeps its family in a Memo in this tree: see memo")
    family = scrape.FailureCounts.family

    @functools.wraps(family)
    def rebuilt(self: Any) -> Any:
        self._family = None
        return family(self)

    scrape.FailureCounts.family = rebuilt


def _without_reuse() -> None:
    def render(
        self: Renderer, families: Iterable[Any], accept: str = "", names: Sequence[str] = ()
    ) -> tuple[bytes, str]:
        view = exposition(self.registry, families)
        collector = view.restricted_registry(names) if names else view
        return generate_latest(collector), "text/plain; version=0.0.4; charset=utf-8"

    Renderer.render = render  # type: ignore[method-assign]


# Each layer of reuse a tree may have, and how to switch it off.
LAYERS: Final[dict[str, Callable[[], None]]] = {
    # The collectors' Memo: families built again only when their state changes.
    "memo": _without_memo,
    # Distribution.__eq__, which lets the canary's Memo see an unchanged snapshot.
    "distribution-eq": _without_distribution_eq,
    # The tables collector's lru_caches of its storage and size families.
    "family-caches": lambda: _unwrap(
        "exporter.collectors.tables", ("storage_families", "size_families")
    ),
    # The functools caches of the statements' bytes (migrations, workflows, tables).
    "query-caches": _unwrap_queries,
    # FailureCounts keeping its family while nothing failed, by hand (a Memo in later trees).
    "failure-family": _without_failure_family,
    # The renderer's reuse of the text of unchanged families: generate_latest every time.
    "reuse": _without_reuse,
}


async def serve_blocks(settings: Settings, warmup: int) -> None:
    loop = asyncio.get_running_loop()
    async with Sidecar(settings) as sidecar:
        renderer = Renderer(sidecar.registry)
        for _ in range(warmup):
            renderer.render(await sidecar.scrape())
        print(json.dumps({"ready": True}), flush=True)
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            scrape_wall, scrape_cpu, render_wall, render_cpu = [], [], [], []
            for _ in range(int(line)):
                wall, cpu = perf_counter(), process_time()
                families = await sidecar.scrape()
                scrape_wall.append(perf_counter() - wall)
                scrape_cpu.append(process_time() - cpu)
                wall, cpu = perf_counter(), process_time()
                renderer.render(families)
                render_wall.append(perf_counter() - wall)
                render_cpu.append(process_time() - cpu)
            block = {
                "scrape_wall": scrape_wall,
                "scrape_cpu": scrape_cpu,
                "render_wall": render_wall,
                "render_cpu": render_cpu,
            }
            print(json.dumps(block), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", required=True, help="the database to watch")
    parser.add_argument("--warmup", type=int, default=20, help="untimed scrapes first (20)")
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="VARIABLE=VALUE",
        help="one more setting, as its environment variable (repeatable)",
    )
    parser.add_argument(
        "--without", action="append", default=[], choices=sorted(LAYERS), help="a layer to drop"
    )
    args = parser.parse_args(argv)
    configure_logging("warning", stream=sys.stderr)
    for layer in args.without:
        LAYERS[layer]()
    # Every setting at its default but these: no port of its own, and no leader election,
    # so that every side runs every collector on the one database they share.
    environ = {
        "POSTGRES_CONNECTION_STRING": args.url,
        "CHECKPOINT_EXPORTER_WEB_LISTEN_ADDRESS": "127.0.0.1:0",
        "CHECKPOINT_EXPORTER_LEADER_ELECTION": "false",
    }
    environ.update(item.split("=", 1) for item in args.setting)
    settings = Settings.load(environ=environ)
    print(json.dumps({"exporter": exporter.__file__}), file=sys.stderr, flush=True)
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve_blocks(settings, args.warmup))
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(serve_blocks(settings, args.warmup))
    return 0


if __name__ == "__main__":
    sys.exit(main())
