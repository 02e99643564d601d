"""build_checkpointer builds what the feature flag and settings ask for, on a real database."""

from __future__ import annotations

import asyncio
from pathlib import Path

import psycopg
import pytest
from langgraph.checkpoint.postgres.base import BasePostgresSaver
from prometheus_client import CollectorRegistry

from exporter import CheckpointerUnavailableError, build_checkpointer
from exporter.checkpointer.backend import MEMORY, POSTGRES
from exporter.checkpointer.routing import RoutingSaver
from exporter.settings import Settings
from tests.graphs import config, review_graph
from tests.ports import refused_port


async def test_flag_off_builds_the_in_memory_saver(memory_settings: Settings) -> None:
    """USE_POSTGRES_SAVER=false gives the in-memory saver, and graphs run on it."""
    async with build_checkpointer(memory_settings, registry=CollectorRegistry()) as saver:
        assert saver.saver_name == "InMemorySaver"
        assert saver.backend is not None
        assert saver.backend.checkpointer == MEMORY
        assert saver.backend.pool is None
        result = await review_graph(saver).ainvoke({"n": 1}, config("t"))
        assert result["n"] == 20


async def test_flag_on_builds_a_pooled_postgres_saver_in_the_schema(
    settings: Settings, dsn: str
) -> None:
    """The saver is AsyncPostgresSaver, one per default shard, on a named, autocommit pool;
    tables live in the schema."""
    settings = settings.replace(postgres_schema="lg_checkpoints", application_name="my-app")
    async with build_checkpointer(settings, registry=CollectorRegistry()) as saver:
        assert saver.saver_name == "AsyncPostgresSaver"
        router = saver.inner
        assert isinstance(router, RoutingSaver)
        assert [type(shard).__name__ for shard in router.shards] == ["AsyncPostgresSaver"] * 4
        backend = saver.backend
        assert backend is not None
        assert backend.checkpointer == POSTGRES
        assert backend.pool is not None
        assert backend.pool.name == "checkpointer"
        assert backend.pool.max_size == settings.pool_max_size
        async with backend.pool.connection() as conn:
            assert conn.autocommit
            assert conn.prepare_threshold == 0
        await review_graph(saver).ainvoke({"n": 1}, config("t"))
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            cursor = await conn.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE application_name = 'my-app' AND datname = current_database()"
            )
            row = await cursor.fetchone()
            assert row is not None
            assert row[0] >= 1
            cursor = await conn.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = 'lg_checkpoints' ORDER BY 1"
            )
            tables = [r[0] async for r in cursor]
            assert tables == [
                "checkpoint_blobs",
                "checkpoint_migrations",
                "checkpoint_writes",
                "checkpoints",
                "workflow_metadata",
                "workflow_metadata_migrations",
                "workflow_status_counts",
            ]
            cursor = await conn.execute(
                "SELECT count(*), count(DISTINCT v) FROM lg_checkpoints.checkpoint_migrations"
            )
            assert await cursor.fetchone() == (
                len(BasePostgresSaver.MIGRATIONS),
                len(BasePostgresSaver.MIGRATIONS),
            )
            cursor = await conn.execute("SELECT count(*) FROM lg_checkpoints.checkpoints")
            stored = await cursor.fetchone()
            assert stored is not None
            assert stored[0] > 0
            cursor = await conn.execute("SELECT to_regclass('public.checkpoints')")
            assert await cursor.fetchone() == (None,)


async def test_replicas_starting_together_run_migrations_once(settings: Settings, dsn: str) -> None:
    """Four checkpointers set up at once leave exactly one row per migration."""
    registries = [CollectorRegistry() for _ in range(4)]

    async def start(registry: CollectorRegistry) -> str:
        async with build_checkpointer(settings, registry=registry) as saver:
            return saver.saver_name

    assert await asyncio.gather(*(start(r) for r in registries)) == ["AsyncPostgresSaver"] * 4
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cursor = await conn.execute(
            "SELECT count(*) FROM workflow_checkpoints.checkpoint_migrations"
        )
        assert await cursor.fetchone() == (len(BasePostgresSaver.MIGRATIONS),)


async def test_unreachable_database_fails_fast_without_the_password(settings: Settings) -> None:
    """An unreachable PostgreSQL raises one clear error naming it, password masked."""
    url = f"postgresql://claude:s3cr3t-pw@127.0.0.1:{refused_port()}/claude_studio"
    settings = settings.replace(postgres_connection_string=url)
    with pytest.raises(CheckpointerUnavailableError) as caught:
        async with build_checkpointer(settings, registry=CollectorRegistry()):
            pytest.fail("must not yield")
    message = str(caught.value)
    assert "s3cr3t-pw" not in message
    assert "postgresql://claude:***@127.0.0.1" in message
    assert "\n" not in message
    # The one line stands alone: no chained driver error to print beneath it.
    assert caught.value.__context__ is None


async def test_fallback_runs_in_memory_and_says_why(settings: Settings) -> None:
    """With fallback enabled, an unreachable PostgreSQL yields a working in-memory saver."""
    url = f"postgresql://claude:s3cr3t-pw@127.0.0.1:{refused_port()}/claude_studio"
    settings = settings.replace(postgres_connection_string=url, fallback_to_memory=True)
    async with build_checkpointer(settings, registry=CollectorRegistry()) as saver:
        assert saver.saver_name == "InMemorySaver"
        assert saver.backend is not None
        assert saver.backend.checkpointer == MEMORY
        assert saver.backend.fallback_reason is not None
        assert "s3cr3t-pw" not in saver.backend.fallback_reason
        assert saver.backend.postgres_requested
        result = await review_graph(saver).ainvoke({"n": 2}, config("t"))
        assert result["n"] == 30


class ApplicationError(Exception):
    """An error of the application's own, raised inside ``build_checkpointer``'s block."""


async def test_fallback_start_up_error_never_chains_onto_the_applications_errors(
    settings: Settings,
) -> None:
    """An error raised in the fallback's block reaches the caller with no start-up context.

    Were the saver yielded inside the ``except`` that caught the start-up failure, the
    application's exception would carry that ``OSError`` as ``__context__``, and every
    traceback of it would show the connection failure as its cause.
    """
    url = f"postgresql://claude:s3cr3t-pw@127.0.0.1:{refused_port()}/claude_studio"
    settings = settings.replace(postgres_connection_string=url, fallback_to_memory=True)
    caught: ApplicationError | None = None
    try:
        async with build_checkpointer(settings, registry=CollectorRegistry()) as saver:
            assert saver.backend is not None
            assert saver.backend.fallback_reason is not None
            raise ApplicationError("the application failed")
    except ApplicationError as exc:
        caught = exc
    assert caught is not None
    assert caught.__context__ is None
    assert caught.__cause__ is None


async def test_no_connection_string_starts_the_embedded_database(tmp_path: Path) -> None:
    """Without a connection string the checkpointer runs on an embedded PostgreSQL that
    keeps its data across restarts and is stopped on exit."""
    settings = Settings(data_dir=tmp_path / "pgdata")
    for attempt in range(2):
        async with build_checkpointer(settings, registry=CollectorRegistry()) as saver:
            assert saver.saver_name == "AsyncPostgresSaver"
            graph = review_graph(saver)
            if attempt == 0:
                await graph.ainvoke({"n": 1}, config("survivor"))
            else:
                state = await graph.aget_state(config("survivor"))
                assert state.values["n"] == 20
    assert not (tmp_path / "pgdata" / "postmaster.pid").exists()
