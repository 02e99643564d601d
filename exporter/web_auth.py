"""Basic auth and response headers from the web configuration file, applied to requests.

exporter.web_config loads and validates the file; this module is what the HTTP
layer runs per request: the bcrypt check (paid once per credential, and bounded
under a flood of wrong ones) and the configured headers.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable

import bcrypt
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from exporter.log import get_logger

log = get_logger("web")

# Credentials bcrypt may check at once, each in a thread: a flood of wrong ones takes at most
# this many cores, and leaves room for another user's login beside the check in flight.
CHECKS = 2


class TooManyAttemptsError(Exception):
    """No room to check these credentials now; the client may retry in a moment."""


class BasicAuth:
    """Checks ``Authorization: Basic`` against bcrypt hashes, paying bcrypt once per credential.

    A successful check is remembered per user as an HMAC (under a key made at start) of the
    hash and the password, never the password itself; later requests compare against it in
    constant time and never wait for bcrypt. Failed checks are not remembered.

    bcrypt runs in threads, at most ``checks`` credentials at once and one per user name;
    requests with the credentials being checked wait for that check. Any other attempt
    raises :class:`TooManyAttemptsError` at once instead of queueing: 30 wrong passwords for
    one user then occupy one check, not the next 30, and another user's first login is
    checked beside it. An unknown user name is checked against a decoy hash at the
    configured hashes' highest cost, so response times do not tell which names exist.
    """

    def __init__(self, users: tuple[tuple[str, bytes], ...], checks: int = CHECKS) -> None:
        self._users = dict(users)
        self._decoy = _decoy_hash(users)
        self._key = secrets.token_bytes(32)
        self._verified: dict[str, bytes] = {}
        # The check in flight per user name: its credentials' digest, and its end.
        self._checking: dict[str, tuple[bytes, asyncio.Event]] = {}
        self._checks = checks

    def _digest(self, user: str, hashed: bytes, password: bytes) -> bytes:
        message = b"\0".join((user.encode(), hashed, password))
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def _remembered(self, user: str, digest: bytes) -> bool:
        return hmac.compare_digest(self._verified.get(user, b""), digest)

    async def check(self, user: str, password: bytes) -> bool:
        """Whether ``password`` is ``user``'s; raises TooManyAttemptsError when there is no room."""
        hashed = self._users.get(user)
        known = hashed is not None
        hashed = hashed if hashed is not None else self._decoy
        digest = self._digest(user, hashed, password)
        if known and self._remembered(user, digest):
            return True
        checking = self._checking.get(user)
        if checking is not None:
            if not hmac.compare_digest(checking[0], digest):
                raise TooManyAttemptsError(user)
            await checking[1].wait()
            return known and self._remembered(user, digest)
        if len(self._checking) >= self._checks:
            raise TooManyAttemptsError(user)
        ended = asyncio.Event()
        self._checking[user] = (digest, ended)
        work = asyncio.ensure_future(asyncio.to_thread(_checkpw, password, hashed))

        def finish(done: asyncio.Future[bool]) -> None:
            # On the thread's end, not the request's: a cancelled request keeps its check counted.
            del self._checking[user]
            if known and not done.cancelled() and done.exception() is None and done.result():
                self._verified[user] = digest
            ended.set()

        work.add_done_callback(finish)
        matches = await asyncio.shield(work)  # awaited for an unknown user too: same time
        return known and matches


def _decoy_hash(users: tuple[tuple[str, bytes], ...]) -> bytes:
    """A hash no password matches, at the highest cost among ``users`` (10 without any)."""
    cost = max((int(hashed[4:6]) for _, hashed in users), default=10)
    return bcrypt.gensalt(rounds=cost) + b"." * 31


def _checkpw(password: bytes, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(password, hashed)
    except ValueError:  # longer than bcrypt's 72 bytes: no stored hash can match it
        return False


def _credentials(header: str | None) -> tuple[str, bytes] | None:
    if header is None:
        return None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
        raw_user, sep, password = decoded.partition(b":")
        user = raw_user.decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


def auth_middleware(users: tuple[tuple[str, bytes], ...], open_paths: frozenset[str]) -> Middleware:
    """An aiohttp middleware answering 401 unless the request carries a valid user's password.

    Routes whose path is in ``open_paths`` stay open; unknown paths are protected too, so that
    a 404 tells nothing to a client without credentials.
    """
    auth = BasicAuth(users)

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        if resource is not None and resource.canonical in open_paths:
            return await handler(request)
        credentials = _credentials(request.headers.get("Authorization"))
        try:
            if credentials is not None and await auth.check(*credentials):
                return await handler(request)
        except TooManyAttemptsError:
            log.debug("request_throttled", path=request.path)
            return web.Response(
                status=429, text="Too Many Requests\n", headers={"Retry-After": "1"}
            )
        log.debug(
            "request_unauthorized",
            path=request.path,
            reason="no credentials" if credentials is None else "wrong credentials",
        )
        return web.Response(
            status=401, text="Unauthorized\n", headers={"WWW-Authenticate": "Basic"}
        )

    return authenticate


def headers_hook(
    headers: tuple[tuple[str, str], ...],
) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """An ``on_response_prepare`` hook adding the configured headers to every response."""

    async def add_headers(_: web.Request, response: web.StreamResponse) -> None:
        for name, value in headers:
            response.headers[name] = value

    return add_headers
