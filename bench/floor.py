"""The floor of bench/scrape_latency.py: a static aiohttp server, the same bytes every time.

No collection and no encoding: gzip is computed once up front. What serving
one of our responses costs over HTTP, and nothing more.
"""

from __future__ import annotations

import argparse
import gzip
import sys
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("body", type=Path, help="the bytes to serve at /metrics")
    parser.add_argument("--port", type=int, required=True, help="the port on 127.0.0.1")
    args = parser.parse_args(argv)
    body = args.body.read_bytes()
    compressed = gzip.compress(body)

    async def metrics(request: web.Request) -> web.Response:
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            headers = {"Content-Type": CONTENT_TYPE, "Content-Encoding": "gzip"}
            return web.Response(body=compressed, headers=headers)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
