"""A PostgreSQL owned by the exporter: started from the `pgserver` package, no root or Docker.

``pgserver`` comes with the ``embedded`` extra (``./dev`` installs it); a sidecar given
``POSTGRES_CONNECTION_STRING`` never imports it.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from exporter.log import get_logger

log = get_logger("embedded")


class EmbeddedDatabaseError(RuntimeError):
    """The embedded PostgreSQL could not be started."""


def _start(data_dir: Path) -> Any:
    with warnings.catch_warnings():
        # Without XDG_RUNTIME_DIR, platformdirs warns and falls back to /tmp, which suits us.
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        from pgserver.postgres_server import get_server

    # pgserver narrates every pg_ctl step at INFO; its failures still surface as exceptions.
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    data_dir.mkdir(parents=True, exist_ok=True)
    return get_server(data_dir, cleanup_mode="stop")


@asynccontextmanager
async def embedded_database(data_dir: Path) -> AsyncIterator[str]:
    """Start (or join) the PostgreSQL in ``data_dir``; yield its URL; stop it on exit.

    The data directory persists, so checkpoints survive restarts. Several
    processes may share one directory: the server stops when the last leaves.
    """
    try:
        server = await asyncio.to_thread(_start, data_dir)
    except ImportError as exc:
        raise EmbeddedDatabaseError(
            "no POSTGRES_CONNECTION_STRING, and the embedded PostgreSQL is not installed: "
            "pip install 'checkpoint-exporter[embedded]', or give a connection string"
        ) from exc
    except Exception as exc:
        raise EmbeddedDatabaseError(
            f"could not start the embedded PostgreSQL in {data_dir}: {exc}"
        ) from exc
    url: str = server.get_uri()
    log.info("embedded_database_started", data_dir=str(data_dir), url=url)
    try:
        yield url
    finally:
        await asyncio.to_thread(server.cleanup)
        log.info("embedded_database_stopped", data_dir=str(data_dir))
