"""Parsers for the exporter's own kinds of value: addresses, paths, PostgreSQL names, collectors.

Each follows :class:`exporter.settings.parsers.Parser`: text to value, a check for values built
in code, and text for a value.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psycopg.conninfo import conninfo_to_dict

from exporter.redact import register_secret
from exporter.web_config import WebConfig, load_web_config

# Every collector, by name; `exporter.collectors.ALL` must hold exactly these (a test checks).
_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")

COLLECTORS = (
    "activity",
    "canary",
    "integrity",
    "migrations",
    "pool",
    "recovery",
    "statements",
    "tables",
    "workflows",
)

# Unquoted PostgreSQL identifiers only: the schema also goes into a libpq
# `options` string, where anything needing quotes would need escaping twice.
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# One label of a host name; underscores too, since container and service names use them.
_HOST_LABEL = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """Where the HTTP server binds; an empty host means every interface."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def register_environment_secrets(environ: Mapping[str, str]) -> None:
    """Mask the passwords the environment holds, before any message can quote them."""
    register_secret(environ.get("POSTGRES_PASSWORD"))
    try:
        params = conninfo_to_dict(environ.get("POSTGRES_CONNECTION_STRING", "").strip())
    except Exception:
        return  # Reported, without the string, when the setting is parsed.
    register_secret(str(params.get("password") or ""))


def default_data_dir() -> Path:
    """Where the embedded PostgreSQL keeps its data unless told: under XDG_DATA_HOME."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "checkpoint-exporter" / "pgdata"


@dataclass(frozen=True, slots=True)
class ListenAddressParser:
    """``host:port``, ``:port`` or ``[ipv6]:port``; hosts that could never be bound are refused."""

    def __call__(self, raw: str) -> ListenAddress:
        host, sep, port_text = raw.strip().rpartition(":")
        if not sep:
            raise ValueError(f"expected host:port or :port, got {raw!r}")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                raise ValueError(f"not a valid IPv6 address in {raw!r}") from None
        elif ":" in host:
            raise ValueError(f"an IPv6 host must be in brackets, got {raw!r}")
        elif host:
            _check_host(host, raw)
        if not (port_text.isascii() and port_text.isdigit()):
            raise ValueError(f"port must be a number, got {port_text!r}")
        port = int(port_text)
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be between 0 and 65535, got {port}")
        return ListenAddress(host, port)

    def validate(self, value: object) -> ListenAddress:
        if not isinstance(value, ListenAddress) or not isinstance(value.host, str):
            raise ValueError(f"expected a ListenAddress, got {value!r}")
        # Its text parses back to itself exactly when host and port are ones text could give.
        if self(str(value)) != value:
            raise ValueError(f"not a valid listen address: {value!r}")
        return value

    def show(self, value: ListenAddress) -> str:
        return str(value)


def _check_host(host: str, raw: str) -> None:
    """Refuse what could never be bound, at start rather than when binding."""
    labels = host.split(".")
    # A name whose last label is a number is an IPv4 address, as URL parsers read it.
    if labels[-1].isascii() and labels[-1].isdigit():
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(f"not a valid IPv4 address in {raw!r}") from None
    elif len(host) > 253 or not all(_HOST_LABEL.match(label) for label in labels):
        raise ValueError(f"not a valid host name in {raw!r}")


@dataclass(frozen=True, slots=True)
class LiteralPath:
    """A literal URL path.

    The router is given the path as it is, never as a pattern, so ``{`` and ``}`` are
    refused rather than read as a variable. ``%`` is refused too: requests are routed by
    their decoded path, which a percent escape could never equal.
    """

    def __call__(self, raw: str) -> str:
        return self.validate(raw.strip())

    def validate(self, value: object) -> str:
        if (
            not isinstance(value, str)
            or not value.startswith("/")
            or not value.isprintable()
            or any(ch.isspace() or ch in "?#%{}" for ch in value)
        ):
            raise ValueError(
                "expected a literal URL path such as /metrics (no spaces, ?, #, % or { }), "
                f"got {value!r}"
            )
        return value

    def show(self, value: str) -> str:
        return value


@dataclass(frozen=True, slots=True)
class Schema:
    """A lowercase, unquoted PostgreSQL identifier."""

    def __call__(self, raw: str) -> str:
        return self.validate(raw)

    def validate(self, value: object) -> str:
        if not isinstance(value, str) or not _IDENTIFIER.match(value):
            raise ValueError(
                "expected a lowercase PostgreSQL identifier (letters, digits, underscore; "
                f"at most 63 characters), got {value!r}"
            )
        return value

    def show(self, value: str) -> str:
        return value


@dataclass(frozen=True, slots=True)
class ApplicationName:
    """What PostgreSQL keeps of an application_name: it truncates at 63 bytes, drops non-ASCII."""

    def __call__(self, raw: str) -> str:
        return self.validate(raw)

    def validate(self, value: object) -> str:
        if (
            not isinstance(value, str)
            or not value
            or len(value) > 63
            or not value.isascii()
            or not value.isprintable()
        ):
            raise ValueError(f"expected 1 to 63 printable ASCII characters, got {value!r}")
        return value

    def show(self, value: str) -> str:
        return value


@dataclass(frozen=True, slots=True)
class ConnectionString:
    """A PostgreSQL URL or key=value string; parsing registers its password as a secret.

    Messages never quote the string: it may hold a password.
    """

    def __call__(self, raw: str) -> str:
        value = raw.strip()
        params = _conninfo(value)
        register_secret(str(params.get("password") or ""))
        _check_ports(params)
        return value

    def validate(self, value: object) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {type(value).__name__}")
        _check_ports(_conninfo(value.strip()))
        return value

    def show(self, value: str | None) -> str:
        return "" if value is None else value


def _conninfo(value: str) -> dict[str, Any]:
    if not value:
        raise ValueError("is empty")
    if "://" in value and not value.startswith(("postgresql://", "postgres://")):
        raise ValueError("a URL must start with postgresql:// or postgres://")
    try:
        params = conninfo_to_dict(value)
    except Exception:
        # The driver's message may quote the string, password included.
        raise ValueError("is not a valid PostgreSQL URL or key=value connection string") from None
    return params


def _check_ports(params: Mapping[str, Any]) -> None:
    # libpq only checks the port when connecting; several hosts mean several ports.
    for port in str(params.get("port") or "").split(","):
        if port and not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
            raise ValueError(f"port must be a number between 1 and 65535, got {port!r}")


@dataclass(frozen=True, slots=True)
class DataDir:
    """A directory, or where one can be created; text is made absolute when it is read."""

    def __call__(self, raw: str) -> Path:
        if not raw.strip():
            raise ValueError("is empty")
        return self.validate(Path(raw).expanduser()).absolute()

    def validate(self, value: object) -> Path:
        if not isinstance(value, Path):
            raise ValueError(f"expected a Path, got {value!r}")
        if value.exists() and not value.is_dir():
            raise ValueError(f"{value} exists and is not a directory")
        # exists() is False under a regular file too; such a directory can never be created.
        existing = next((p for p in value.absolute().parents if p.exists()), None)
        if existing is not None and not existing.is_dir():
            raise ValueError(f"{existing} is not a directory")
        return value

    def show(self, value: Path) -> str:
        return str(value)


@dataclass(frozen=True, slots=True)
class Collectors:
    """Collector names, comma-separated; read in the order of :data:`COLLECTORS`."""

    def __call__(self, raw: str) -> tuple[str, ...]:
        names = [name.strip() for name in raw.split(",") if name.strip()]
        self.validate(tuple(names))
        return tuple(name for name in COLLECTORS if name in names)

    def validate(self, value: object) -> tuple[str, ...]:
        if not isinstance(value, tuple) or not all(isinstance(name, str) for name in value):
            raise ValueError(f"expected a tuple of collector names, got {value!r}")
        unknown = sorted(set(value) - set(COLLECTORS))
        if unknown:
            raise ValueError(
                f"unknown collector {', '.join(unknown)!s}; known: {', '.join(COLLECTORS)}"
            )
        return value

    def show(self, value: tuple[str, ...]) -> str:
        return ",".join(value)


@dataclass(frozen=True, slots=True)
class WebConfigFile:
    """The path of a web configuration file, read and checked at once; empty for none."""

    def __call__(self, raw: str) -> WebConfig | None:
        if not raw.strip():
            return None
        return load_web_config(raw.strip())

    def validate(self, value: object) -> WebConfig | None:
        if value is not None and not isinstance(value, WebConfig):
            raise ValueError(f"expected a WebConfig from load_web_config, got {value!r}")
        return value

    def show(self, value: WebConfig | None) -> str:
        return "" if value is None else str(value.path)


@dataclass(frozen=True, slots=True)
class Patterns:
    """Comma-separated shell patterns (``internal-*``); empty for none."""

    def __call__(self, raw: str) -> tuple[str, ...]:
        return self.validate(tuple(item.strip() for item in raw.split(",") if item.strip()))

    def validate(self, value: object) -> tuple[str, ...]:
        if not isinstance(value, tuple) or not all(isinstance(p, str) and p for p in value):
            raise ValueError(f"expected a tuple of patterns, got {value!r}")
        return value

    def show(self, value: tuple[str, ...]) -> str:
        return ",".join(value)


@dataclass(frozen=True, slots=True)
class OptionalKey:
    """A key of a run's configurable or metadata, letters, digits, ``_``, ``-`` or ``.``."""

    def __call__(self, raw: str) -> str | None:
        return self.validate(raw.strip() or None)

    def validate(self, value: object) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not _KEY.match(value):
            raise ValueError(f"expected a key of letters, digits, _, - or ., got {value!r}")
        return value

    def show(self, value: str | None) -> str:
        return value or ""
