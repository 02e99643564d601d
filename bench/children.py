"""Our sidecar and postgres_exporter as child processes, and reading them over HTTP.

The benchmarks that compare what a scraper sees (latency, memory over a soak) run the real
``checkpoint-exporter serve`` beside Debian's ``prometheus-postgres-exporter``.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import re
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from time import monotonic, perf_counter
from typing import Any, Final

import aiohttp
from benchlib import ROOT, BenchError
from psycopg.conninfo import conninfo_to_dict

from exporter.cli import build_parser
from exporter.settings import SPECS, Settings

OURS: Final = "checkpoint-exporter"
THEIRS: Final = "postgres_exporter"
POSTGRES_EXPORTER: Final = "/usr/bin/prometheus-postgres-exporter"
READY_TIMEOUT: Final = 60.0
REQUEST_TIMEOUT: Final = 30.0
INHERITED_SETTINGS: Final = re.compile(
    r"^(CHECKPOINT_EXPORTER_|POSTGRES_|USE_POSTGRES_SAVER$|DATA_SOURCE_)"
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def child_environment(**extra: str) -> dict[str, str]:
    """This process's environment without exporter settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not INHERITED_SETTINGS.match(k)}
    env.update(extra)
    return env


def stop(process: subprocess.Popen[Any], grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; always reaps the process."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass(slots=True)
class Child:
    """A process the benchmark started, where it writes, and where it serves."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    url: str = ""

    def tail(self, lines: int = 5) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])


@contextmanager
def child(
    name: str,
    argv: Sequence[str],
    env: dict[str, str],
    log: Path,
    *,
    url: str = "",
    stdout: Path | None = None,
) -> Iterator[Child]:
    """Start ``argv`` (serving at ``url``, if it serves); stop it on exit, whatever happens."""
    with ExitStack() as files:
        err = files.enter_context(log.open("wb"))
        out = files.enter_context(stdout.open("wb")) if stdout is not None else err
        process = subprocess.Popen(
            list(argv), env=env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=err
        )
    try:
        yield Child(name, process, log, url)
    finally:
        stop(process)


def sidecar_child(
    url: str, scratch: Path, flags: Sequence[str], name: str = "sidecar"
) -> AbstractContextManager[Child]:
    """``python -m exporter serve`` on a free port, watching the database at ``url``."""
    port = free_port()
    argv = [sys.executable, "-m", "exporter", "serve", "--web.listen-address", f"127.0.0.1:{port}"]
    env = child_environment(POSTGRES_CONNECTION_STRING=url)
    log = scratch / f"{name}.log"
    return child(OURS, [*argv, *flags], env, log, url=f"http://127.0.0.1:{port}")


def postgres_exporter_child(url: str, scratch: Path) -> AbstractContextManager[Child]:
    """postgres_exporter with default flags, on the embedded server's unix socket (no TCP)."""
    params = conninfo_to_dict(url)
    socket_dir, port = str(params["host"]), str(params.get("port") or 5432)
    dsn = f"postgresql://postgres@:{port}/postgres?host={socket_dir}&sslmode=disable"
    listen = free_port()
    return child(
        THEIRS,
        [POSTGRES_EXPORTER, f"--web.listen-address=127.0.0.1:{listen}"],
        child_environment(DATA_SOURCE_NAME=dsn),
        scratch / "postgres_exporter.log",
        url=f"http://127.0.0.1:{listen}",
    )


def postgres_exporter_version() -> str:
    try:
        done = subprocess.run(
            [POSTGRES_EXPORTER, "--version"], capture_output=True, text=True, check=False
        )
    except OSError:
        return "not installed"
    first = (done.stdout or done.stderr).strip().splitlines()
    return first[0] if first else "unknown"


def add_encoding_option(parser: argparse.ArgumentParser) -> None:
    """``--encoding``: what every scrape over HTTP asks the sidecar to send."""
    parser.add_argument(
        "--encoding",
        choices=("identity", "gzip"),
        default="identity",
        help="Accept-Encoding of every scrape (identity)",
    )


def add_sidecar_flags(parser: argparse.ArgumentParser) -> None:
    """The options that set what our ``serve`` runs with: none beyond its defaults unless given."""
    parser.add_argument(
        "--collector-timeout",
        default=None,
        metavar="DURATION",
        help="our --collector.timeout (default: the exporter's own default)",
    )
    parser.add_argument(
        "--sidecar-flag",
        action="append",
        default=[],
        metavar="FLAG",
        help="one more flag for our serve, e.g. --sidecar-flag=--exporter.pool-size=5 "
        "(repeatable; default: none)",
    )


def sidecar_flags(args: argparse.Namespace) -> list[str]:
    """The flags our ``serve`` gets beyond its listen address: none by default."""
    timeout = ["--collector.timeout", args.collector_timeout] if args.collector_timeout else []
    return [*timeout, *args.sidecar_flag]


def sidecar_settings(url: str, args: argparse.Namespace) -> Settings:
    """The settings ``serve`` builds from those flags, parsed by the exporter's own CLI."""
    namespace = build_parser().parse_args(["serve", *sidecar_flags(args)])
    flags = {spec.field: getattr(namespace, spec.field, None) for spec in SPECS}
    flags["listen_address"] = "127.0.0.1:0"
    return Settings.load(environ={"POSTGRES_CONNECTION_STRING": url}, flags=flags)


# --------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Response:
    """One scrape as the client saw it."""

    seconds: float
    status: int
    raw: bytes
    gzipped: bool

    @property
    def body(self) -> bytes:
        return gzip.decompress(self.raw) if self.gzipped else self.raw

    @property
    def text(self) -> str:
        return self.body.decode()


@asynccontextmanager
async def http_client(encoding: str) -> AsyncIterator[aiohttp.ClientSession]:
    """One keep-alive client; bodies arrive as sent, so no decompression is timed."""
    async with aiohttp.ClientSession(
        auto_decompress=False,
        headers={"Accept-Encoding": encoding},
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
    ) as session:
        yield session


async def fetch(session: aiohttp.ClientSession, url: str) -> Response:
    started = perf_counter()
    async with session.get(url) as response:
        raw = await response.read()
    seconds = perf_counter() - started
    gzipped = response.headers.get("Content-Encoding", "") == "gzip"
    return Response(seconds, response.status, raw, gzipped)


async def wait_ready(session: aiohttp.ClientSession, proc: Child, path: str) -> None:
    """Poll ``proc.url + path`` until it answers 200; fail fast if the process exits."""
    deadline = monotonic() + READY_TIMEOUT
    while True:
        code = proc.process.poll()
        if code is not None:
            raise BenchError(f"{proc.name} exited with status {code}: {proc.tail()}")
        try:
            if (await fetch(session, proc.url + path)).status == 200:
                return
        except (aiohttp.ClientError, TimeoutError):
            pass
        if monotonic() > deadline:
            raise BenchError(f"{proc.name} did not answer within {READY_TIMEOUT:g} s")
        await asyncio.sleep(0.1)


def series_keys(text: str) -> list[str]:
    """Each sample line's name and labels, in order (the text format, no timestamps)."""
    keys = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        brace = line.rfind("}")
        keys.append(line[: brace + 1] if brace >= 0 else line.split(" ", 1)[0])
    return keys


# --------------------------------------------------------------------------------------
# The database a scrape benchmark watches
# --------------------------------------------------------------------------------------
