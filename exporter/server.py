"""The HTTP layer: routes for metrics, health, readiness and a landing page, and their site.

It is handed what it serves (:class:`Served`, which the sidecar implements) and never
imports its owner, so the arrows point one way: sidecar -> server.
"""

from __future__ import annotations

import html
import logging
from typing import Any, Protocol

from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.log import server_logger
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric

from exporter.checkpointer.backend import Backend
from exporter.connections import ConnectionSite, Limits
from exporter.database import Ping
from exporter.exposition import Renderer, choose_encoding
from exporter.log import get_logger
from exporter.settings import Settings
from exporter.version import VERSION
from exporter.web_auth import auth_middleware, headers_hook

log = get_logger("sidecar")

HEALTH_PATH = "/api/health/checkpointer"


class Served(Protocol):
    """What the routes answer from: one scrape, the health document, a database ping."""

    @property
    def registry(self) -> CollectorRegistry: ...

    @property
    def backend(self) -> Backend: ...

    async def scrape(self) -> list[Metric]: ...

    async def health(self) -> tuple[dict[str, Any], int]: ...

    async def ping(self) -> Ping | None: ...


SERVED_KEY = web.AppKey("served", Served)
SETTINGS_KEY = web.AppKey("settings", Settings)
RENDERER_KEY = web.AppKey("renderer", Renderer)


async def metrics(request: web.Request) -> web.Response:
    """One scrape, encoded as the client's ``Accept`` asks; gzipped when it accepts gzip."""
    families = await request.app[SERVED_KEY].scrape()
    accept = ",".join(request.headers.getall(hdrs.ACCEPT, []))
    names = request.query.getall("name[]", [])
    body, content_type = request.app[RENDERER_KEY].render(families, accept, names)
    response = web.Response(
        body=body,
        headers={hdrs.CONTENT_TYPE: content_type, hdrs.VARY: "Accept, Accept-Encoding"},
    )
    # Forced: left to choose, aiohttp takes the first coding it finds named, q=0 included.
    if choose_encoding(",".join(request.headers.getall(hdrs.ACCEPT_ENCODING, []))):
        response.enable_compression(web.ContentCoding.gzip)
    return response


async def health(request: web.Request) -> web.Response:
    document, status = await request.app[SERVED_KEY].health()
    return web.json_response(document, status=status)


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


async def readyz(request: web.Request) -> web.Response:
    answer = await request.app[SERVED_KEY].ping()
    ready = answer is None or answer.ok
    body = {
        "ready": ready,
        "error": None if answer is None else answer.error,
        "cause": None if answer is None else answer.cause,
    }
    return web.json_response(body, status=200 if ready else 503)


async def landing(request: web.Request) -> web.Response:
    served = request.app[SERVED_KEY]
    links = [
        (request.app[SETTINGS_KEY].telemetry_path, "Metrics"),
        (HEALTH_PATH, "Checkpointer health"),
        ("/healthz", "Liveness"),
        ("/readyz", "Readiness"),
    ]
    items = "".join(
        f'<li><a href="{html.escape(path)}">{html.escape(title)}</a></li>' for path, title in links
    )
    body = (
        '<!doctype html><html><head><meta charset="utf-8"><title>checkpoint-exporter</title>'
        f"</head><body><h1>checkpoint-exporter {html.escape(VERSION)}</h1>"
        f"<p>Checkpointer: {html.escape(served.backend.checkpointer)}, schema "
        f"<code>{html.escape(served.backend.schema)}</code></p><ul>{items}</ul></body></html>"
    )
    return web.Response(text=body, content_type="text/html")


@web.middleware
async def refuse_connect(request: web.Request, handler: Handler) -> web.StreamResponse:
    """405 for CONNECT, the method no resource here allows, whatever its target.

    Its target is a host and port, which matches no path, so the router answered 404.
    """
    if request.method == hdrs.METH_CONNECT:
        raise web.HTTPMethodNotAllowed(request.method, (hdrs.METH_GET, hdrs.METH_HEAD))
    return await handler(request)


def create_app(served: Served, settings: Settings) -> web.Application:
    """The sidecar's routes; unknown paths get 404 and wrong methods 405 from aiohttp.

    With users in the web configuration file, every route needs their credentials, except
    ``/healthz`` while ``web_healthz_open`` holds.
    """
    web_config = settings.web_config_file
    middlewares: list[Middleware] = [refuse_connect]
    if web_config is not None and web_config.users:
        open_paths = frozenset({"/healthz"} if settings.web_healthz_open else ())
        middlewares.append(auth_middleware(web_config.users, open_paths))
    app = web.Application(middlewares=middlewares)
    if web_config is not None and web_config.headers:
        app.on_response_prepare.append(headers_hook(web_config.headers))
    app[SERVED_KEY] = served
    app[SETTINGS_KEY] = settings
    app[RENDERER_KEY] = Renderer(served.registry)
    app.router.add_get("/", landing)
    # A plain resource: the configured path is matched as written, never as a pattern.
    telemetry = web.PlainResource(settings.telemetry_path)
    app.router.register_resource(telemetry)
    telemetry.add_route(hdrs.METH_HEAD, metrics)
    telemetry.add_route(hdrs.METH_GET, metrics)
    app.router.add_get(HEALTH_PATH, health)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


class ServerLog(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's server logger, with the requests clients got wrong kept out of the errors.

    aiohttp logs every request it cannot parse (a malformed header, an oversized line) at
    ERROR level, with a traceback that quotes the offending bytes, which may be a
    credential. Such a request is the client's mistake and is answered 4xx; a port scanner
    must not page whoever alerts on error logs. So it becomes one debug event naming the
    error class only, as aiohttp itself does for an unknown method on a fresh connection.
    Anything else, a handler's exception above all, stays an error.
    """

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        if isinstance(exc_info, HttpProcessingError) and 400 <= exc_info.code < 500:
            log.debug("http_bad_request", status=exc_info.code, error=type(exc_info).__name__)
            return
        super().exception(msg, *args, exc_info=exc_info, **kwargs)


class HttpServer:
    """The listen address, bound and serving :func:`create_app`'s routes until :meth:`close`."""

    def __init__(self, runner: web.AppRunner, settings: Settings) -> None:
        self._runner = runner
        self._settings = settings

    @property
    def port(self) -> int:
        """The port actually bound (useful with port 0)."""
        return int(self._runner.addresses[0][1])

    @property
    def url(self) -> str:
        """The base URL: https when the web configuration file enables TLS."""
        host = self._settings.listen_address.host or "127.0.0.1"
        host = f"[{host}]" if ":" in host else host
        web_config = self._settings.web_config_file
        scheme = "https" if web_config is not None and web_config.tls is not None else "http"
        return f"{scheme}://{host}:{self.port}"

    async def close(self) -> None:
        await self._runner.cleanup()


async def serve(served: Served, settings: Settings) -> HttpServer:
    """Bind the listen address and serve ``served``; nothing stays open if binding fails."""
    runner = web.AppRunner(create_app(served, settings), handle_signals=False)
    await runner.setup()
    web_config = settings.web_config_file
    try:
        site = ConnectionSite(
            runner,
            settings.listen_address.host or None,
            settings.listen_address.port,
            limits=Limits(
                header_timeout=settings.web_read_header_timeout,
                idle_timeout=settings.web_idle_timeout,
                max_connections=settings.web_max_connections,
            ),
            logger=ServerLog(server_logger),
            ssl_context=web_config.ssl_context() if web_config is not None else None,
        )
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return HttpServer(runner, settings)
