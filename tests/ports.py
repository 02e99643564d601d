"""Local ports for tests: one where connecting is refused, and servers that report their own.

A port found free and closed again may be taken by the time it is used. A socket bound and
never listening refuses every connection for as long as it stays open, and no one else can
bind it, so :func:`refused_port` keeps its sockets open for the whole test session.
"""

from __future__ import annotations

import re
import socket
import subprocess
import time
from pathlib import Path

_held: list[socket.socket] = []


def refused_port() -> int:
    """A local TCP port that refuses connections (bound, not listening) for the session."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    _held.append(sock)
    return int(sock.getsockname()[1])


LISTENING = re.compile(rb'msg="Listening on" address=\S*:(\d+)')


def listening_port(log: Path, process: subprocess.Popen[bytes], within: float = 60) -> int:
    """The port a Prometheus or Alertmanager started on ``:0`` bound, from its log.

    Both log ``msg="Listening on" address=host:port`` at info level once the listener is
    open, with the port the kernel chose.
    """
    deadline = time.monotonic() + within
    while True:
        found = LISTENING.search(log.read_bytes())
        if found:
            return int(found.group(1))
        text = log.read_text(errors="replace")
        assert process.poll() is None, f"{process.args!r} exited {process.returncode}:\n{text}"
        assert time.monotonic() < deadline, f"{process.args!r} did not listen:\n{text}"
        time.sleep(0.02)


def unused_port() -> int:
    """A port free a moment ago, for a server that cannot bind 0 and say which port it got
    (PostgreSQL): the caller retries with another when the server finds it taken."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
