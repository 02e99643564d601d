"""What a real sidecar exposes: one in-process scrape after a real workload."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter import Sidecar, build_checkpointer
from exporter.collectors.integrity import IntegrityCollector
from exporter.exposition import exposition
from exporter.settings import Settings
from exporter.workload import compile_workflow, initial_state


async def integrity_step(sidecar: Sidecar) -> None:
    """Wait for the integrity step a scrape started in the background, if one runs."""
    for collector in sidecar.collectors:
        if isinstance(collector, IntegrityCollector):
            await collector.wait()


# A thread the 50 % rollout below leaves in memory (its bucket is 74.11).
IN_MEMORY = "docs-left-out"


async def exposition_after_workload(settings: Settings) -> str:
    """The text ``/metrics`` of an in-process sidecar after a workflow, an error and a mark.

    Give it a database with pg_stat_statements, so every collector shows all it can
    produce (the canary's figures are there, as zeros, before its first probe). The
    rollout is at 50 %, the tracked workflow in PostgreSQL (its thread is included) and
    another in memory, so the rollout's figures and both cohorts show too.
    """
    settings = settings.replace(
        tracking_flush_interval=0.05, rollout_percent=50.0, rollout_include=("docs",)
    )
    registry = CollectorRegistry()
    async with (
        build_checkpointer(settings, registry=registry) as saver,
        Sidecar(settings, checkpointer=saver, registry=registry) as sidecar,
    ):
        assert saver.tracker is not None
        graph = compile_workflow(saver, think_time=0, state_kb=1)
        async with saver.tracker.run("docs"):
            await graph.ainvoke(initial_state("docs"), {"configurable": {"thread_id": "docs"}})
        await graph.ainvoke(initial_state("docs"), {"configurable": {"thread_id": IN_MEMORY}})
        with pytest.raises(KeyError):  # an error, so the error counter has a sample
            await saver.aput_writes({"configurable": {"thread_id": "x"}}, [("a", 1)], "task")
        assert await saver.tracker.flush()
        await sidecar.check_recovery()
        await sidecar.scrape()  # starts the first integrity step: a whole pass of this store
        await integrity_step(sidecar)
        return generate_latest(exposition(registry, await sidecar.scrape())).decode()


def exposable_names(text: str) -> dict[str, str]:
    """Every series name the exposition can carry, by family type, even for empty families.

    A counter ``x`` exposes ``x_total``, a histogram ``x_bucket``, ``x_sum`` and ``x_count``
    (and ``x`` is its family name), an info ``x_info``.
    """
    names: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        suffixes = {
            "counter": ("_total",),
            "histogram": ("", "_bucket", "_sum", "_count"),
            "info": ("_info",),
        }.get(family.type, ("",))
        for suffix in suffixes:
            names[family.name + suffix] = family.type
    return names
