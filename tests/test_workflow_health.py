"""Workflow health end to end: real graphs, one in-process sidecar, a restart and real damage."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import psycopg
import pytest
from langgraph.graph import START, StateGraph
from prometheus_client import CollectorRegistry

from exporter import Sidecar, build_checkpointer
from exporter.settings import Settings
from exporter.workflows.integrity import full_pass
from exporter.workflows.schema import STATUSES
from tests.graphs import State, config, review_graph
from tests.samples import Samples, parse_metrics, value
from tests.waiting import eventually

EXPECTED = {"completed": 2, "interrupted": 3, "failed": 1, "running": 2, "cancelled": 0}


async def scrape(http: aiohttp.ClientSession, sidecar: Sidecar) -> Samples:
    async with http.get(sidecar.url + "/metrics") as response:
        assert response.status == 200
        return parse_metrics(await response.text())


async def health(http: aiohttp.ClientSession, sidecar: Sidecar) -> dict[str, Any]:
    async with http.get(sidecar.url + "/api/health/checkpointer") as response:
        document: dict[str, Any] = await response.json()
        return document


def threads(samples: Samples) -> dict[str, float]:
    name = "langgraph_checkpointer_workflows_threads"
    return {status: value(samples, name, status=status) for status in STATUSES}


async def age_running(dsn: str, schema: str, hours: float) -> None:
    """Move the running workflows' last activity back, as if no checkpoint came since."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            f"UPDATE {schema}.workflow_metadata SET last_activity = last_activity"
            " - make_interval(hours => %s) WHERE status = 'running'",
            (hours,),
        )


async def corrupt_one_blob(dsn: str, schema: str, thread_id: str) -> None:
    """Overwrite one msgpack blob the thread's latest checkpoint reads (0xc1: never valid)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        cursor = conn.execute(
            f"""
            WITH latest AS (
                SELECT checkpoint FROM {schema}.checkpoints
                WHERE thread_id = %(thread)s AND checkpoint_ns = ''
                ORDER BY checkpoint_id DESC LIMIT 1
            ), target AS (
                SELECT b.ctid FROM {schema}.checkpoint_blobs AS b, latest,
                    jsonb_each_text(latest.checkpoint -> 'channel_versions') AS v
                WHERE b.thread_id = %(thread)s AND b.checkpoint_ns = ''
                    AND b.channel = v.key AND b.version = v.value AND b.type = 'msgpack'
                LIMIT 1
            )
            UPDATE {schema}.checkpoint_blobs SET blob = '\\xc1c1c1c1'::bytea
            WHERE ctid IN (SELECT ctid FROM target)
            """,
            {"thread": thread_id},
        )
        assert cursor.rowcount == 1


async def test_statuses_restart_recovery_and_damage(settings: Settings, dsn: str) -> None:
    """Statuses and stuck counts match the runs; a restart reads the canary back and recovers
    the running workflows; one corrupted blob fails exactly that thread in both checks."""
    settings = settings.replace(
        tracking_flush_interval=0.05, stuck_after=3600.0, canary_interval=0.2, integrity_batch=2
    )
    registry = CollectorRegistry()
    async with (
        aiohttp.ClientSession() as http,
        build_checkpointer(settings, registry=registry) as saver,
    ):
        tracker = saver.tracker
        assert tracker is not None
        graph = review_graph(saver)
        for thread in ("done-1", "done-2"):
            async with tracker.run(thread):
                await graph.ainvoke({"n": 1}, config(thread))
        async with tracker.run("asked"):
            await graph.ainvoke({"n": 1, "ask": True}, config("asked"))
        with pytest.raises(ValueError, match="negative"):
            async with tracker.run("broken"):
                await graph.ainvoke({"n": -1}, config("broken"))
        for thread in ("paused-1", "paused-2"):  # at a static breakpoint, never marked
            await graph.ainvoke({"n": 1}, config(thread), interrupt_after=["step"])
        hung = [await hang(saver, f"midway-{i}") for i in (1, 2)]  # left mid-step
        assert await tracker.flush()
        try:
            await check_statuses_restart_recovery_and_damage(http, saver, settings, dsn, registry)
        finally:
            for task in hung:
                task.cancel()
            await asyncio.gather(*hung, return_exceptions=True)


async def hang(saver: Any, thread_id: str) -> asyncio.Task[Any]:
    """A run whose second node never returns, as if its process died mid-step; running
    until cancelled, once its first checkpoints are saved."""
    reached = asyncio.Event()

    async def wait(state: Any) -> dict[str, Any]:
        reached.set()
        await asyncio.Event().wait()
        return {}

    graph: StateGraph[Any] = StateGraph(State)
    graph.add_node("step", lambda state: {"n": 1, "log": ["step"]})
    graph.add_node("wait", wait)
    graph.add_edge(START, "step")
    graph.add_edge("step", "wait")
    compiled = graph.compile(checkpointer=saver)
    task = asyncio.create_task(compiled.ainvoke({}, config(thread_id)))
    await reached.wait()

    async def saved() -> bool:  # the step's checkpoint is saved beside the running node
        return (await compiled.aget_state(config(thread_id))).next == ("wait",)

    await eventually(saved, what=f"the checkpoint before {thread_id}'s hanging node")
    return task


async def check_statuses_restart_recovery_and_damage(
    http: aiohttp.ClientSession, saver: Any, settings: Settings, dsn: str, registry: Any
) -> None:
    """Statuses and stuck counts; a restart reads the canary back and recovers the running
    workflows; one corrupted blob fails exactly that thread in both checks."""
    async with Sidecar(settings, checkpointer=saver, registry=registry) as first:
        samples = await scrape(http, first)
        assert threads(samples) == EXPECTED
        assert value(samples, "langgraph_checkpointer_workflows_stuck_threads") == 0
        await age_running(dsn, settings.postgres_schema, hours=2)  # past stuck_after
        samples = await scrape(http, first)
        assert value(samples, "langgraph_checkpointer_workflows_stuck_threads") == 2

        async def probed() -> bool:  # the first probe runs once this sidecar led a scrape
            samples = await scrape(http, first)
            return value(samples, "langgraph_checkpointer_canary_last_success") == 1

        await eventually(probed, what="a successful canary probe")

    async with Sidecar(settings, checkpointer=saver, registry=CollectorRegistry()) as second:
        report = await second.check_recovery()
        assert report is not None
        # The two left running and the three interrupted: every workflow a resume would load.
        assert (report.checked, report.recovered, report.failed) == (5, 5, 0)
        readback = "langgraph_checkpointer_canary_restart_readback"

        async def read_back() -> bool:  # the canary job reads back at its first turn
            samples = await scrape(http, second)
            return value(samples, readback, result="success") == 1

        await eventually(read_back, what="the canary stored before the restart read back")
        samples = await scrape(http, second)
        assert value(samples, readback, result="success") == 1
        assert value(samples, "langgraph_checkpointer_recovery_workflows_recovered") == 5

    await corrupt_one_blob(dsn, settings.postgres_schema, "midway-2")
    async with Sidecar(settings, checkpointer=saver, registry=CollectorRegistry()) as third:
        report = await third.check_recovery()
        assert report is not None
        assert (report.checked, report.recovered, report.failed) == (5, 4, 1)
        assert [failure.thread_id for failure in report.failures] == ["midway-2"]
        document = await health(http, third)
        assert document["status"] == "degraded"
        assert "midway-2" not in str(document)

    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        integrity = await full_pass(conn, settings.postgres_schema, saver.serde, batch=2)
    assert integrity.counts["undecodable_blobs"] == 1
    assert sum(integrity.counts.values()) == 1
    assert {finding.thread_id for finding in integrity.findings} == {"midway-2"}
