"""The canary saves, loads and compares a real checkpoint, and says so when it cannot."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from time import monotonic, time

import aiohttp
import psycopg
import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from exporter import Sidecar
from exporter.collectors.base import ScrapeContext
from exporter.collectors.canary import CanaryCollector
from exporter.factory import prepare_schema
from exporter.jobs import Statuses
from exporter.settings import Settings
from exporter.workflows.canary import (
    ERROR,
    MISMATCH,
    READBACK_FAILED,
    READBACK_MISSING,
    READBACK_SUCCESS,
    SUCCESS,
    TIMEOUT,
    Canary,
)
from exporter.workflows.canary_content import canary_content
from exporter.workflows.schema import CANARY_THREAD_ID
from tests.ports import refused_port
from tests.samples import Samples, parse_metrics, samples_of, value
from tests.targets import canary_on
from tests.waiting import eventually

PASSWORD = "canary_secret_pw"
PREFIX = "langgraph_checkpointer_canary_"


@pytest.fixture
async def prepared(settings: Settings, dsn: str) -> Settings:
    """Settings whose schema has LangGraph's and the exporter's tables."""
    await prepare_schema(dsn, settings)
    return settings


@pytest.fixture
async def canary(prepared: Settings, dsn: str) -> AsyncIterator[Canary]:
    probe = canary_on(dsn, prepared)
    yield probe
    await probe.close()


def canary_rows(dsn: str, schema: str) -> dict[str, int]:
    """Rows the canary thread has in each checkpoint table."""
    counts = {}
    with psycopg.connect(dsn) as conn:
        for table in ("checkpoints", "checkpoint_blobs", "checkpoint_writes"):
            row = conn.execute(
                f"SELECT count(*) FROM {schema}.{table} WHERE thread_id = %s",
                (CANARY_THREAD_ID,),
            ).fetchone()
            assert row is not None
            counts[table] = int(row[0])
    return counts


def corrupt_blobs(dsn: str, schema: str) -> int:
    """Overwrite the canary's stored blobs with bytes no serializer reads; return how many."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        cursor = conn.execute(
            f"UPDATE {schema}.checkpoint_blobs SET blob = %s WHERE thread_id = %s",
            (b"\xc1garbage", CANARY_THREAD_ID),
        )
        return cursor.rowcount


async def collected(settings: Settings, canary: Canary) -> Samples:
    ctx = ScrapeContext(settings, jobs=Statuses.of([canary]))
    return samples_of(await CanaryCollector().collect(ctx))


def test_content_is_derived_from_the_seed() -> None:
    """The same seed, id and time give the same canary; another seed gives other values."""
    first = canary_content("00ff", "id-1", "2024-01-01T00:00:00+00:00")
    again = canary_content("00ff", "id-1", "2024-01-01T00:00:00+00:00")
    other = canary_content("0100", "id-1", "2024-01-01T00:00:00+00:00")
    assert first == again
    assert first.checkpoint["channel_values"] != other.checkpoint["channel_values"]
    assert first.pending_writes != other.pending_writes


async def test_a_probe_succeeds_and_the_figures_say_so(
    canary: Canary, prepared: Settings, dsn: str
) -> None:
    """A probe against a real database succeeds, with blobs and writes stored and figures set."""
    before = time()
    assert await canary.probe() == SUCCESS
    rows = canary_rows(dsn, prepared.postgres_schema)
    assert rows == {"checkpoints": 1, "checkpoint_blobs": 2, "checkpoint_writes": 2}

    status = canary.status()
    assert status.last_result == SUCCESS
    assert status.last_probe_at is not None
    assert status.last_probe_at >= before
    assert (status.last_save_seconds or 0) > 0
    assert (status.last_load_seconds or 0) > 0
    samples = await collected(prepared, canary)
    assert value(samples, PREFIX + "probes_total", result=SUCCESS) == 1
    for result in (TIMEOUT, ERROR, MISMATCH):
        assert value(samples, PREFIX + "probes_total", result=result) == 0
    assert value(samples, PREFIX + "last_success") == 1
    assert value(samples, PREFIX + "consecutive_failures") == 0
    assert value(samples, PREFIX + "last_probe_timestamp_seconds") == status.last_probe_at
    assert value(samples, PREFIX + "save_duration_seconds_count") == 1
    assert value(samples, PREFIX + "load_duration_seconds_count") == 1
    assert value(samples, PREFIX + "save_duration_seconds_sum") == status.last_save_seconds


async def test_a_new_canary_reads_back_the_previous_ones(prepared: Settings, dsn: str) -> None:
    """First run ever: missing. After a probe, a second canary (a restarted sidecar) verifies it."""
    first = canary_on(dsn, prepared)
    try:
        assert await first.readback() == READBACK_MISSING
        assert await first.probe() == SUCCESS
    finally:
        await first.close()
    restarted = canary_on(dsn, prepared)
    try:
        assert await restarted.readback() == READBACK_SUCCESS
        samples = await collected(prepared, restarted)
    finally:
        await restarted.close()
    assert value(samples, PREFIX + "restart_readback", result=READBACK_SUCCESS) == 1
    assert value(samples, PREFIX + "restart_readback", result=READBACK_MISSING) == 0
    assert value(samples, PREFIX + "restart_readback", result=READBACK_FAILED) == 0
    assert value(samples, PREFIX + "last_probe_timestamp_seconds") == 0


async def test_a_corrupted_blob_is_a_mismatch_and_the_next_probe_recovers(
    canary: Canary, prepared: Settings, dsn: str
) -> None:
    """Garbage in the stored blob: a restart's readback fails, a probe counts a mismatch, then
    the next probe (which replaced the corrupted canary) succeeds."""
    schema = prepared.postgres_schema
    assert await canary.probe() == SUCCESS
    assert corrupt_blobs(dsn, schema) == 2

    restarted = canary_on(dsn, prepared)
    try:
        with capture_logs() as logs:
            assert await restarted.readback() == READBACK_FAILED
    finally:
        await restarted.close()
    assert [e["event"] for e in logs] == ["canary_readback_failed"]

    with capture_logs() as logs:
        assert await canary.probe() == MISMATCH
    assert canary.status().consecutive_failures == 1
    assert canary.status().last_error is not None
    assert "stored.unreadable" in (canary.status().last_error or "")
    assert [e["result"] for e in logs if e["event"] == "canary_probe_failed"] == [MISMATCH]

    assert await canary.probe() == SUCCESS
    samples = await collected(prepared, canary)
    assert value(samples, PREFIX + "probes_total", result=MISMATCH) == 1
    assert value(samples, PREFIX + "probes_total", result=SUCCESS) == 2
    assert value(samples, PREFIX + "consecutive_failures") == 0
    assert value(samples, PREFIX + "last_success") == 1


async def test_changed_stored_values_are_a_mismatch(
    canary: Canary, prepared: Settings, dsn: str
) -> None:
    """A stored value that still decodes but differs from what was written is a mismatch."""
    assert await canary.probe() == SUCCESS
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            f"UPDATE {prepared.postgres_schema}.checkpoints"
            " SET checkpoint = jsonb_set(checkpoint, '{channel_values,seed}', '\"changed\"')"
            " WHERE thread_id = %s",
            (CANARY_THREAD_ID,),
        )
    assert await canary.probe() == MISMATCH
    assert "stored.channel_values" in (canary.status().last_error or "")


async def test_database_down_counts_errors_without_raising_or_leaking(
    settings: Settings,
) -> None:
    """An unreachable database: each probe counts an error, one warning in all, no password."""
    url = f"postgresql://exporter:{PASSWORD}@127.0.0.1:{refused_port()}/app"
    down = settings.replace(postgres_connection_string=url)
    canary = canary_on(url, down)
    try:
        with capture_logs() as logs:
            assert await canary.readback() is None
            results = [await canary.probe() for _ in range(3)]
    finally:
        await canary.close()
    assert results == [ERROR] * 3
    status = canary.status()
    assert status.probes[ERROR] == 3
    assert status.consecutive_failures == 3
    assert status.readback is None
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert [e["event"] for e in warnings] == ["canary_readback_deferred", "canary_probe_failed"]
    assert PASSWORD not in repr(logs)
    assert PASSWORD not in (status.last_error or "")


async def test_a_probe_past_its_deadline_is_a_timeout(prepared: Settings, dsn: str) -> None:
    """A probe stuck behind a table lock counts a timeout; once released, probes succeed."""
    canary = canary_on(dsn, prepared.replace(canary_timeout=0.2))
    try:
        assert await canary.probe() == SUCCESS
        with psycopg.connect(dsn) as locker:
            locker.execute(
                f"LOCK TABLE {prepared.postgres_schema}.checkpoints IN ACCESS EXCLUSIVE MODE"
            )
            started = monotonic()
            assert await canary.probe() == TIMEOUT
            assert monotonic() - started < 1.0
            locker.rollback()
        assert await canary.probe() == SUCCESS
    finally:
        await canary.close()
    assert canary.status().probes[TIMEOUT] == 1


async def test_the_canary_thread_stays_small(canary: Canary, prepared: Settings, dsn: str) -> None:
    """After many probes the thread holds one checkpoint, its two blobs and two writes."""
    for _ in range(12):
        assert await canary.probe() == SUCCESS
    rows = canary_rows(dsn, prepared.postgres_schema)
    assert rows == {"checkpoints": 1, "checkpoint_blobs": 2, "checkpoint_writes": 2}


async def test_sidecars_probing_at_once_do_not_disturb_each_other(
    prepared: Settings, dsn: str
) -> None:
    """Three canaries on one thread, probing together again and again, all succeed."""
    canaries = [canary_on(dsn, prepared) for _ in range(3)]
    try:
        for _ in range(5):
            results = await asyncio.gather(*(c.probe() for c in canaries))
            assert results == [SUCCESS] * 3
    finally:
        for canary in canaries:
            await canary.close()
    rows = canary_rows(dsn, prepared.postgres_schema)
    assert rows == {"checkpoints": 1, "checkpoint_blobs": 2, "checkpoint_writes": 2}


async def test_a_sidecar_that_does_not_lead_only_reads_back(prepared: Settings, dsn: str) -> None:
    """While not leading, the canary reads back once and never writes."""
    canary = canary_on(dsn, prepared.replace(canary_interval=0.02))
    task = asyncio.create_task(canary.work(lambda: False))
    try:
        await eventually(lambda: canary.status().readback is not None)
        await asyncio.sleep(0.1)  # several intervals, any of which could have probed
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await canary.close()
    status = canary.status()
    assert status.readback == READBACK_MISSING
    assert sum(status.probes.values()) == 0
    assert status.active is False
    assert canary_rows(dsn, prepared.postgres_schema)["checkpoints"] == 0


async def test_a_sidecar_probes_and_exports_the_canary(prepared: Settings) -> None:
    """A leading sidecar runs the canary on its own; /metrics and health report it."""
    settings = prepared.replace(leader_election=False, canary_interval=0.05)
    async with (
        Sidecar(settings, registry=CollectorRegistry(), collectors=[CanaryCollector()]) as sidecar,
        aiohttp.ClientSession() as http,
    ):
        assert sidecar.canary is not None
        canary = sidecar.canary
        await eventually(lambda: canary.status().probes[SUCCESS] >= 2)
        async with http.get(sidecar.url + "/metrics") as response:
            samples = parse_metrics(await response.text())
        async with http.get(sidecar.url + "/api/health/checkpointer") as response:
            assert response.status == 200
            document = await response.json()
    assert value(samples, PREFIX + "probes_total", result=SUCCESS) >= 2
    assert value(samples, PREFIX + "restart_readback", result=READBACK_MISSING) == 1
    assert value(samples, "langgraph_checkpointer_scrape_collector_success", collector="canary")
    assert document["status"] == "healthy"
    assert document["canary"]["status"] == SUCCESS
    assert document["canary"]["active"] is True
    assert document["canary"]["lastSaveSeconds"] > 0
    assert document["canary"]["restartReadback"] == READBACK_MISSING
    assert sidecar.canary.status().probes[ERROR] == 0


async def test_a_database_without_tables_is_not_probed(settings: Settings) -> None:
    """Before the application's setup() there is nothing to probe: no failure, health healthy;
    once the tables exist the canary probes and succeeds."""
    settings = settings.replace(canary_interval=0.05, leader_election=False)
    async with Sidecar(settings, registry=CollectorRegistry()) as sidecar:
        canary = sidecar.canary
        assert canary is not None
        await asyncio.sleep(0.3)
        status = canary.status()
        assert (status.active, status.last_result, status.consecutive_failures) == (False, None, 0)
        document, code = await sidecar.health()
        assert (document["status"], code) == ("healthy", 200)
        assert settings.postgres_connection_string is not None
        await prepare_schema(settings.postgres_connection_string, settings)
        await eventually(lambda: canary.status().last_result == "success")
