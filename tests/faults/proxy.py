"""A TCP proxy with a fault switch: pass traffic, delay it, or drop every connection.

It runs its own event loop in a thread, like a network apart from the process
under test: a busy loop in the test cannot hide or add latency here.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Coroutine
from types import TracebackType
from typing import Any

from psycopg.conninfo import conninfo_to_dict

PASS, DROP = "pass", "drop"
CHUNK = 65536
# How long closing waits for the connections it aborted to wind down (a delayed chunk included).
SHUTDOWN_SECONDS = 10.0
SHUTDOWN_ROUNDS = 5


class FaultyProxy:
    """Listens on ``127.0.0.1:<port>`` and forwards to ``upstream``.

    ``delay(seconds)`` holds every chunk that long in each direction (a round
    trip costs twice that); ``drop()`` closes every open connection and closes
    new ones at once; ``refuse()`` closes them too and stops listening, keeping
    the port bound, so that new connections are refused as by a stopped server;
    ``heal()`` listens again and passes traffic untouched.
    """

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        # A host that is a directory means PostgreSQL's Unix socket in it, as libpq reads it.
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self.accepted = 0
        self._mode = PASS
        self._delay = 0.0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="faulty-proxy")
        self._server: asyncio.Server | None = None
        # Bound and not listening while refusing: the kernel refuses, and nobody else binds.
        self._held: socket.socket | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._connections: set[asyncio.Task[Any]] = set()
        self._deliveries: set[asyncio.Task[None]] = set()
        self._closing = False

    def start(self) -> None:
        self._thread.start()
        self._call(self._listen())

    def close(self) -> None:
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> FaultyProxy:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def delay(self, seconds: float) -> None:
        self._mode, self._delay = PASS, seconds

    def drop(self) -> None:
        self._mode = DROP
        self._call(self._close_all())

    def refuse(self) -> None:
        self._call(self._refuse())

    def heal(self) -> None:
        self._mode, self._delay = PASS, 0.0
        if self._held is not None:
            self._call(self._listen())

    def _call(self, work: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(work, self._loop).result(timeout=10)

    async def _listen(self) -> None:
        sock, self._held = self._held or _bound(self.port), None
        sock.listen()
        self._server = await asyncio.start_server(self._accept, sock=sock)
        self.port = int(sock.getsockname()[1])

    async def _refuse(self) -> None:
        if self._server is None:
            return
        self._server.close()
        await self._close_all()
        await self._server.wait_closed()
        self._server = None
        self._held = _bound(self.port)

    async def _shutdown(self) -> None:
        self._closing = True
        if self._held is not None:
            self._held.close()
        if self._server is not None:
            self._server.close()
        # With both ends of every connection aborted, each connection's task ends by itself;
        # cancelling them instead would make asyncio's stream server log the cancellation.
        # Connections the kernel had already accepted still arrive for a moment: they are
        # turned away at once, and the round repeats until none is left.
        for _ in range(SHUTDOWN_ROUNDS):
            await self._close_all()
            if self._connections:
                await asyncio.wait(self._connections, timeout=SHUTDOWN_SECONDS)
            # An aborted transport closes its socket in a callback: let those run.
            await asyncio.sleep(0.01)
            if not self._connections and not self._writers:
                return

    async def _close_all(self) -> None:
        writers, self._writers = list(self._writers), set()
        for writer in writers:
            writer.transport.abort()
        for delivery in list(self._deliveries):
            delivery.cancel()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        self._writers.add(writer)
        try:
            if self._mode == DROP or self._closing:
                return
            host, port = self.upstream
            try:
                if host.startswith("/"):
                    path = f"{host}/.s.PGSQL.{port}"
                    up_reader, up_writer = await asyncio.open_unix_connection(path)
                else:
                    up_reader, up_writer = await asyncio.open_connection(host, port)
            except OSError:
                return
            self._writers.add(up_writer)
            try:
                await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
            finally:
                self._writers.discard(up_writer)
                up_writer.transport.abort()
        finally:
            self._writers.discard(writer)
            writer.transport.abort()
            if task is not None:
                self._connections.discard(task)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy one direction, each chunk (and the end of stream) held for the delay."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    with contextlib.suppress(OSError):
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()

        delivery = asyncio.create_task(deliver())
        # Aborting the connection drops what is still held back (see _close_all).
        self._deliveries.add(delivery)
        delivery.add_done_callback(self._deliveries.discard)
        try:
            while True:
                try:
                    data = await reader.read(CHUNK)
                except OSError:
                    data = b""
                queue.put_nowait((time.monotonic() + self._delay, data))
                if not data:
                    break
            # Waits without raising: a delivery cancelled by _close_all ends the pipe quietly.
            await asyncio.wait({delivery})
        except (OSError, ConnectionError):
            pass
        finally:
            delivery.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError, ConnectionError):
                await delivery


def _bound(port: int) -> socket.socket:
    """A socket bound to ``127.0.0.1:port`` (0: any free port), not yet listening."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


def proxy_for(dsn: str) -> FaultyProxy:
    """A proxy (not started) to the server of ``dsn``, over TCP or its Unix socket."""
    params = conninfo_to_dict(dsn)
    return FaultyProxy(str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432))
