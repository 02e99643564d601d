"""The aiohttp application: routes for metrics, health, readiness and a landing page."""

from __future__ import annotations

import html

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from exporter.exposition import Renderer, choose_encoding
from exporter.sidecar import Sidecar
from exporter.version import VERSION
from exporter.web_config import auth_middleware, headers_hook

HEALTH_PATH = "/api/health/checkpointer"
SIDECAR_KEY = web.AppKey("sidecar", Sidecar)
RENDERER_KEY = web.AppKey("renderer", Renderer)


async def metrics(request: web.Request) -> web.Response:
    """One scrape, encoded as the client's ``Accept`` asks; gzipped when it accepts gzip."""
    families = await request.app[SIDECAR_KEY].scrape()
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
    document, status = await request.app[SIDECAR_KEY].health()
    return web.json_response(document, status=status)


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


async def readyz(request: web.Request) -> web.Response:
    answer = await request.app[SIDECAR_KEY].ping()
    ready = answer is None or answer.ok
    body = {
        "ready": ready,
        "error": None if answer is None else answer.error,
        "cause": None if answer is None else answer.cause,
    }
    return web.json_response(body, status=200 if ready else 503)


async def landing(request: web.Request) -> web.Response:
    sidecar = request.app[SIDECAR_KEY]
    links = [
        (sidecar.settings.telemetry_path, "Metrics"),
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
        f"<p>Checkpointer: {html.escape(sidecar.backend.checkpointer)}, schema "
        f"<code>{html.escape(sidecar.backend.schema)}</code></p><ul>{items}</ul></body></html>"
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


def create_app(sidecar: Sidecar) -> web.Application:
    """The sidecar's routes; unknown paths get 404 and wrong methods 405 from aiohttp.

    With users in the web configuration file, every route needs their credentials, except
    ``/healthz`` while ``web_healthz_open`` holds.
    """
    settings = sidecar.settings
    web_config = settings.web_config_file
    middlewares: list[Middleware] = [refuse_connect]
    if web_config is not None and web_config.users:
        open_paths = frozenset({"/healthz"} if settings.web_healthz_open else ())
        middlewares.append(auth_middleware(web_config.users, open_paths))
    app = web.Application(middlewares=middlewares)
    if web_config is not None and web_config.headers:
        app.on_response_prepare.append(headers_hook(web_config.headers))
    app[SIDECAR_KEY] = sidecar
    app[RENDERER_KEY] = Renderer(sidecar.registry)
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
