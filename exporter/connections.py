"""The sidecar's HTTP connections: bounded header and idle times, a cap, and odd clients.

aiohttp's server keeps a connection that sends nothing, or its headers a byte at a time, for
an hour (its keep-alive default), and accepts connections until the file descriptors run out,
when ``/metrics`` and ``/healthz`` fail without a word. Go's ``http.Server``, under the
exporters built on exporter-toolkit, bounds the first two with ``ReadHeaderTimeout`` and
``IdleTimeout``. :class:`Connection` adds them to aiohttp's request handler (the idle time is
aiohttp's own ``keepalive_timeout``), :class:`ConnectionLimit` caps the connections open at
once, and :class:`ConnectionSite` serves a runner's application over such connections.

The handler also answers two kinds of client aiohttp does not: one that half-closes after its
request gets its answer before the connection closes, and a request line without an HTTP/1
version (HTTP/0.9) gets 400 with an HTTP/1.x status line instead of a reply in HTTP/0.9.

aiohttp has no hook for these, so the handler reads three of ``RequestHandler``'s attributes,
``_waiter`` (pending while it waits for a request), ``_request_count`` (requests parsed) and
``_messages`` (parsed requests not yet handled), and queues a 400 as aiohttp's ``_ErrInfo``,
as its parser does. tests/test_http_fuzz.py holds each behaviour over real sockets, so an
aiohttp release that changes them fails there.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from logging import Logger, LoggerAdapter
from time import monotonic
from typing import Any

from aiohttp import web
from aiohttp.http import HttpVersion10, RawRequestMessage
from aiohttp.http_exceptions import BadStatusLine
from aiohttp.streams import EMPTY_PAYLOAD
from aiohttp.web_protocol import RequestHandler, _ErrInfo
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from exporter.log import get_logger

log = get_logger("web")


@dataclass(frozen=True, slots=True)
class Limits:
    """How long a request's headers and an idle connection may take, and how many may be open."""

    header_timeout: float
    idle_timeout: float
    max_connections: int


@dataclass(slots=True)
class _Episode:
    started: float
    closed_idle: int = 0
    refused: int = 0


def within_descriptor_limit(requested: int) -> int:
    """``requested``, lowered to leave a quarter of the process's descriptor limit for the rest.

    The rest being the database connections, files, the listening socket: past the limit
    ``accept()`` fails, and every endpoint with it, without a word, whatever the cap says.
    At least 32 descriptors are left over. Lowering is logged once.
    """
    try:
        import resource
    except ImportError:  # Windows: no such limit to read
        return requested
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return requested
    allowed = max(1, soft - max(32, soft // 4))
    if allowed < requested:
        log.warning(
            "http_connection_limit_lowered",
            max_connections=requested,
            lowered_to=allowed,
            file_descriptor_limit=soft,
        )
        return allowed
    return requested


class ConnectionLimit:
    """At most ``maximum`` connections open; at the cap a new one closes the longest-open idle one.

    Go's exporters stop accepting at their cap, so that a scrape's connection waits in the
    kernel's backlog behind sockets that may never send a byte. Closing an idle connection
    instead (as nginx reuses its keep-alive connections) keeps a pile of such sockets from
    shutting scrapes out; only when every connection has a request in hand is the new one
    closed. Reaching the cap is logged when it starts and when it ends (at 3/4 of the cap,
    so that a count hovering at the cap is one episode), with counts, never per connection.
    """

    def __init__(self, maximum: int) -> None:
        self.maximum = maximum
        # Open connections in the order they were admitted: the first idle one is the oldest.
        self._open: dict[Connection, None] = {}
        self._episode: _Episode | None = None

    def admit(self, connection: Connection) -> bool:
        """Count ``connection`` in, closing an idle one at the cap; False when none is idle."""
        if len(self._open) >= self.maximum:
            victim = next((open_one for open_one in self._open if open_one.idle), None)
            episode = self._reached()
            if victim is None:
                episode.refused += 1
                return False
            episode.closed_idle += 1
            del self._open[victim]
            victim.force_close()
        self._open[connection] = None
        return True

    def release(self, connection: Connection) -> None:
        """Count ``connection`` out (safe twice); ends the episode once well below the cap."""
        self._open.pop(connection, None)
        episode = self._episode
        if episode is not None and len(self._open) <= self.maximum * 3 // 4:
            self._episode = None
            log.info(
                "http_connection_limit_cleared",
                max_connections=self.maximum,
                open_connections=len(self._open),
                closed_idle=episode.closed_idle,
                refused=episode.refused,
                seconds=round(monotonic() - episode.started, 3),
            )

    def _reached(self) -> _Episode:
        if self._episode is None:
            self._episode = _Episode(monotonic())
            log.warning("http_connection_limit_reached", max_connections=self.maximum)
        return self._episode


class Connection(RequestHandler):
    """aiohttp's request handler with a header timeout, a cap, half-closes and no HTTP/0.9."""

    def __init__(
        self,
        manager: web.Server,
        *,
        loop: asyncio.AbstractEventLoop,
        limits: Limits,
        connections: ConnectionLimit,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, loop=loop, keepalive_timeout=limits.idle_timeout, **kwargs)
        self._header_timeout = limits.header_timeout
        self._connections = connections
        self._header_timer: asyncio.TimerHandle | None = None
        self._half_closed = False

    @property
    def idle(self) -> bool:
        """Whether the connection waits for a request, with none in hand."""
        waiter = self._waiter
        return waiter is not None and not waiter.done()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if not self._connections.admit(self):
            self.force_close()
            return
        self._start_header_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._connections.release(self)
        self._stop_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        parsed = self._request_count
        super().data_received(data)
        if self._request_count != parsed:
            # A request's headers are complete (or failed to parse): their time is up.
            self._stop_header_timer()
            self._refuse_http_0_9(self._request_count - parsed)
        elif data and self._header_timer is None and self.idle:
            self._start_header_timer()  # the first bytes of the next request

    # aiohttp narrows asyncio's bool | None to None; True is what keeps the transport open.
    def eof_received(self) -> bool | None:  # type: ignore[override]
        """Answer every request sent before the client half-closed, then close.

        aiohttp returns None here, which makes the transport close at once: a client that
        sent its request and shut down its writing side got no answer.
        """
        if self.idle or self.ssl_context is not None:
            # Nothing asked, or only part of a request; or TLS, which has no half-close and
            # whose transport closes whatever this returns.
            return None
        self._half_closed = True
        self._close_when_answered()
        return True

    async def finish_response(
        self, request: BaseRequest, resp: StreamResponse, start_time: float | None
    ) -> tuple[StreamResponse, bool]:
        finished = await super().finish_response(request, resp, start_time)
        if self._half_closed:
            self._close_when_answered()
        return finished

    def _close_when_answered(self) -> None:
        # close() ends the connection after the answer in hand; pipelined requests come first.
        if not self._messages:
            self.close()

    def _refuse_http_0_9(self, new: int) -> None:
        """Turn the ``new`` requests just parsed that lack an HTTP/1 version into a 400."""
        messages = self._messages
        for index in range(len(messages) - new, len(messages)):
            message, _ = messages[index]
            if isinstance(message, RawRequestMessage) and message.version < HttpVersion10:
                error = BadStatusLine(error="Request line without an HTTP/1 version")
                messages[index] = (_ErrInfo(400, error, error.message), EMPTY_PAYLOAD)

    def _start_header_timer(self) -> None:
        self._header_timer = self._loop.call_later(self._header_timeout, self._headers_late)

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.idle:
            # Without an answer, as Go does: the client may be gone, or never meant one.
            self.force_close()


class ConnectionSite(web.TCPSite):
    """A TCP site serving each connection as a :class:`Connection`, under one connection cap.

    ``logger`` takes the server's log, and access logging is off, as with
    ``web.AppRunner(access_log=None)``. With TLS, the handshake must end within the header
    timeout too: until it does, the connection has not reached the request handler.
    """

    def __init__(
        self,
        runner: web.AppRunner,
        host: str | None,
        port: int,
        *,
        limits: Limits,
        logger: Logger | LoggerAdapter[Logger],
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(runner, host, port, ssl_context=ssl_context)
        self._limits = limits
        self._logger = logger
        self._connections = ConnectionLimit(within_descriptor_limit(limits.max_connections))

    def _connection(self) -> Connection:
        server = self._runner.server
        assert server is not None  # BaseSite's constructor checked it
        return Connection(
            server,
            loop=asyncio.get_running_loop(),
            limits=self._limits,
            connections=self._connections,
            logger=self._logger,
            access_log=None,
        )

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        tls = self._ssl_context is not None
        self._server = await asyncio.get_running_loop().create_server(
            self._connection,
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            ssl_handshake_timeout=self._limits.header_timeout if tls else None,
        )
        self._bound_port = self._server.sockets[0].getsockname()[1]
