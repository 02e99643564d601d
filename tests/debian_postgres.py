"""A throwaway PostgreSQL from the distribution's packages, for what the embedded one lacks.

The embedded ``pgserver`` build ships no contrib extensions; Debian's
``postgresql-NN`` package does (``pg_stat_statements`` among them). The server
here listens only on a Unix socket in a private directory and is started with
``pg_stat_statements`` preloaded.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

BINARIES = "/usr/lib/postgresql/*/bin/initdb"
PORT = 5432  # Only names the socket file: nothing listens on TCP.
SUPERUSER = "postgres"
# Tried in order when running as root; initdb and postgres refuse to run as root.
SERVICE_USERS = ("postgres", "pgserver")
CREATED_USER = "checkpoint-exporter-test"


def find_bindir() -> Path | None:
    """The ``bin`` directory of the highest installed PostgreSQL version, if any."""
    found: list[tuple[int, Path]] = []
    for initdb in Path("/").glob(BINARIES.lstrip("/")):
        version = initdb.parent.parent.name
        if re.fullmatch(r"\d+", version) and os.access(initdb, os.X_OK):
            found.append((int(version), initdb.parent))
    return max(found)[1] if found else None


def require_bindir() -> Path:
    """The binaries, or skip the test; under ``CI=true`` their absence fails it instead."""
    bindir = find_bindir()
    if bindir is not None:
        return bindir
    reason = f"no distribution PostgreSQL ({BINARIES}); install postgresql-NN"
    if os.environ.get("CI") == "true":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def service_user() -> str | None:
    """An unprivileged user to run the server as when we are root (None: run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in SERVICE_USERS:
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", CREATED_USER],
        check=True,
        capture_output=True,
    )
    return CREATED_USER


def _run(user: str | None, command: Sequence[str]) -> None:
    prefix = ["runuser", "-u", user, "--"] if user else []
    done = subprocess.run([*prefix, *command], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{command[0]} failed ({done.returncode}): {done.stderr.strip()}")


@contextmanager
def debian_postgres(bindir: Path, settings: Sequence[str] = ()) -> Iterator[str]:
    """Start a fresh cluster from ``bindir``; yield a superuser DSN over its socket; remove it.

    ``settings`` are extra ``name=value`` server settings. The directory is made
    with ``mkdtemp`` under the system temp dir (not pytest's, which is private
    to root) so the unprivileged server user can reach it.
    """
    user = service_user()
    workdir = Path(tempfile.mkdtemp(prefix="pg-"))
    data, log = workdir / "data", workdir / "server.log"
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(workdir, entry.pw_uid, entry.pw_gid)
    options = " ".join(
        [
            "-c shared_preload_libraries=pg_stat_statements",
            "-c listen_addresses=''",
            f"-c unix_socket_directories='{workdir}'",
            f"-p {PORT}",
            "-c fsync=off",
            *(f"-c {item}" for item in settings),
        ]
    )
    try:
        _run(
            user,
            [str(bindir / "initdb"), "-D", str(data), "-U", SUPERUSER, "--auth=trust", "-N"],
        )
        _run(
            user,
            [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-o", options, "start"],
        )
        try:
            yield f"host={workdir} port={PORT} user={SUPERUSER} dbname=postgres"
        finally:
            _run(user, [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
