"""The one place that masks secrets in anything the exporter emits."""

from __future__ import annotations

import re
import threading
from urllib.parse import unquote

MASK = "***"

# user:password@ inside a URL; greedy to the token's last "@" so that an
# unencoded "@" inside the password cannot leave its tail visible.
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)(?P<secret>\S*)(?=@)")
# password=... in a libpq conninfo string or a URL query string.
_KEY_PASSWORD = re.compile(
    r"(?P<head>\bpassword\s*=\s*)(?P<secret>'(?:[^'\\]|\\.)*'|[^\s&'\"]+)", re.IGNORECASE
)
# Secrets shorter than this would mask ordinary text, and are not worth hiding.
_MIN_SECRET_LENGTH = 4

_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def register_secret(secret: str | None) -> None:
    """Mask this exact value (and its URL-decoded form) wherever it appears later."""
    if not secret:
        return
    with _secrets_lock:
        for value in {secret, unquote(secret)}:
            if len(value) >= _MIN_SECRET_LENGTH:
                _secrets.add(value)


def redact(text: str) -> str:
    """Return ``text`` with every password masked as ``***``.

    Handles URLs (``postgresql://user:***@host/db``), conninfo strings
    (``password=***``) and any value registered with :func:`register_secret`,
    so error messages that quote a connection string are safe too.
    """
    text = _URL_PASSWORD.sub(lambda m: m["head"] + (MASK if m["secret"] else ""), text)
    text = _KEY_PASSWORD.sub(lambda m: m["head"] + MASK, text)
    if _secrets:
        with _secrets_lock:
            secrets = sorted(_secrets, key=len, reverse=True)
        for secret in secrets:
            text = text.replace(secret, MASK)
    return text


def describe_error(exc: BaseException) -> str:
    """One masked line naming ``exc`` and its message, for logs, health and errors.

    Driver messages span lines (libpq adds DETAIL and HINT); the first says what failed.
    """
    return redact(f"{type(exc).__name__}: {exc}".strip().splitlines()[0])
