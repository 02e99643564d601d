"""The aiohttp application: routes for metrics, health, readiness and a landing page."""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Iterator

from aiohttp import hdrs, web
from prometheus_client import CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler
from prometheus_client.metrics_core import Metric

from exporter.sidecar import Sidecar
from exporter.version import VERSION
from exporter.web_config import auth_middleware, headers_hook

HEALTH_PATH = "/api/health/checkpointer"
SIDECAR_KEY = web.AppKey("sidecar", Sidecar)


class _Families:
    """The families one scrape collected, as a collector."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def exposition(registry: CollectorRegistry, families: Iterable[Metric]) -> CollectorRegistry:
    """One scrape's view: the long-lived registry plus the families collected just now.

    Built per request, so concurrent scrapes never see each other's results.
    Both are registered without names, which prometheus_client's ``name[]``
    filtering then narrows family by family.
    """
    view = CollectorRegistry(support_collectors_without_names=True)
    view.register(registry)
    view.register(_Families(families))
    return view


# A version parameter prometheus_client can compare: dotted whole numbers.
_VERSION = re.compile(r"[0-9]{1,9}(?:\.[0-9]{1,9})*")


def negotiable(accept: str) -> str:
    """``accept`` without the entries whose ``version`` parameter is not dotted numbers.

    prometheus_client compares that parameter part by part with integers and raises on
    anything else (``version=latest`` answered 500). An entry naming a version nobody
    can serve is dropped, as an unknown media type would be; with none left, the
    default text format is served.
    """
    kept = []
    for entry in accept.split(","):
        version = None
        for token in entry.split(";"):
            key, sep, value = token.strip().partition("=")
            if sep and key == "version":  # the first one counts, as in prometheus_client
                version = value
                break
        if not version or _VERSION.fullmatch(version):
            kept.append(entry)
    return ",".join(kept)


async def metrics(request: web.Request) -> web.StreamResponse:
    sidecar = request.app[SIDECAR_KEY]
    view = exposition(sidecar.registry, await sidecar.scrape())
    accept = ",".join(request.headers.getall(hdrs.ACCEPT, []))
    usable = negotiable(accept)
    if usable != accept:
        headers = request.headers.copy()
        headers.popall(hdrs.ACCEPT)
        if usable:
            headers[hdrs.ACCEPT] = usable
        request = request.clone(headers=headers)
    # The handler negotiates OpenMetrics, gzip and name[] filtering.
    return await make_aiohttp_handler(view)(request)


async def health(request: web.Request) -> web.Response:
    document, status = await request.app[SIDECAR_KEY].health()
    return web.json_response(document, status=status)


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


async def readyz(request: web.Request) -> web.Response:
    answer = await request.app[SIDECAR_KEY].ping()
    ready = answer is None or answer.ok
    body = {"ready": ready, "error": None if answer is None else answer.error}
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


def create_app(sidecar: Sidecar) -> web.Application:
    """The sidecar's routes; unknown paths get 404 and wrong methods 405 from aiohttp.

    With users in the web configuration file, every route needs their credentials, except
    ``/healthz`` while ``web_healthz_open`` holds.
    """
    settings = sidecar.settings
    web_config = settings.web_config_file
    middlewares = []
    if web_config is not None and web_config.users:
        open_paths = frozenset({"/healthz"} if settings.web_healthz_open else ())
        middlewares.append(auth_middleware(web_config.users, open_paths))
    app = web.Application(middlewares=middlewares)
    if web_config is not None and web_config.headers:
        app.on_response_prepare.append(headers_hook(web_config.headers))
    app[SIDECAR_KEY] = sidecar
    app.router.add_get("/", landing)
    app.router.add_get(sidecar.settings.telemetry_path, metrics)
    app.router.add_get(HEALTH_PATH, health)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app
