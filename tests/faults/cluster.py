"""A PostgreSQL cluster on a TCP port that a test can stop hard and start again.

Debian's binaries (``/usr/lib/postgresql/NN/bin``) run it, as in
``tests/debian_postgres.py``: the embedded server listens on a Unix socket
only and cannot be crashed and restarted on the same data directory. The
cluster listens on ``127.0.0.1`` so that a TCP proxy can sit between a
client and it, and preloads ``pg_stat_statements`` for the ``statements``
collector.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from psycopg.conninfo import make_conninfo

from tests.debian_postgres import SUPERUSER, service_user
from tests.ports import unused_port


def _run(user: str | None, command: Sequence[str]) -> None:
    prefix = ["runuser", "-u", user, "--"] if user else []
    done = subprocess.run([*prefix, *command], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{Path(command[0]).name} failed ({done.returncode}): {done.stderr}")


class StoppableCluster:
    """One initialized data directory, started and stopped on demand, always on one port."""

    def __init__(self, bindir: Path, workdir: Path, port: int) -> None:
        self.bindir = bindir
        self.workdir = workdir
        self.port = port
        self.data = workdir / "data"
        self.log = workdir / "server.log"
        self.user = service_user()
        self.running = False

    @property
    def admin_dsn(self) -> str:
        """A superuser DSN over TCP (trust authentication)."""
        return make_conninfo(
            host="127.0.0.1", port=self.port, user=SUPERUSER, dbname="postgres", connect_timeout=2
        )

    def initialize(self) -> None:
        _run(
            self.user,
            [str(self.bindir / "initdb"), "-D", str(self.data), "-U", SUPERUSER, "--auth=trust",
             "-N"],
        )  # fmt: skip

    def start(self) -> float:
        """Start the server (crash recovery included) and wait until it accepts; the seconds."""
        started = time.monotonic()
        options = " ".join(
            [
                "-c shared_preload_libraries=pg_stat_statements",
                "-c listen_addresses=127.0.0.1",
                f"-c unix_socket_directories='{self.workdir}'",
                f"-p {self.port}",
                "-c fsync=off",
                "-c max_connections=200",
            ]
        )
        _run(
            self.user,
            [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w",
             "-t", "60", "-o", options, "start"],
        )  # fmt: skip
        self.running = True
        return time.monotonic() - started

    def stop(self, mode: str = "immediate") -> None:
        """Stop the server: ``immediate`` kills every backend at once, as a crash would."""
        _run(
            self.user,
            [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"],
        )
        self.running = False


@contextmanager
def stoppable_cluster(bindir: Path) -> Iterator[StoppableCluster]:
    """A fresh, started cluster on a free port; stopped and removed afterwards.

    The directory comes from ``mkdtemp`` under the system temp dir, not pytest's
    (private to root), so that the unprivileged server user can reach it.
    """
    workdir = Path(tempfile.mkdtemp(prefix="pg-faults-"))
    cluster = StoppableCluster(bindir, workdir, unused_port())
    if cluster.user is not None:
        entry = pwd.getpwnam(cluster.user)
        os.chown(workdir, entry.pw_uid, entry.pw_gid)
    try:
        cluster.initialize()
        for attempt in range(3):  # the port found free may be taken before the server binds it
            try:
                cluster.start()
                break
            except RuntimeError:
                if attempt == 2 or "could not bind" not in cluster.log.read_text(errors="replace"):
                    raise
                cluster.port = unused_port()
        try:
            yield cluster
        finally:
            if cluster.running:
                cluster.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
