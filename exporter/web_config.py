"""The web configuration file of Prometheus' exporter-toolkit: TLS and basic auth for the sidecar.

The same YAML file Prometheus' own exporters read with ``--web.config.file`` works here::

    tls_server_config:
      cert_file: server.crt            # relative paths start at the file's directory
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert
      client_ca_file: clients-ca.crt
      min_version: TLS12
    basic_auth_users:
      prometheus: $2b$10$eCSp3/w42hSMy8i3IjxlaezwqvedFXXCuqZJFUMEEPPMc6yPq7nbS

Like exporter-toolkit, unknown keys are an error. Loading validates everything, certificates
included, so a bad file stops the program at start rather than at the first request.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from exporter.log import get_logger

log = get_logger("web")

CLIENT_AUTH_TYPES = (
    "NoClientCert",
    "RequestClientCert",
    "RequireAnyClientCert",
    "VerifyClientCertIfGiven",
    "RequireAndVerifyClientCert",
)
_VERIFY_MODES = {
    # Go's RequestClientCert asks for a certificate and never checks it; nothing here reads an
    # unchecked certificate, so not asking grants exactly the same access.
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
TLS_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}

_TLS_KEYS = frozenset(
    {
        "cert_file",
        "key_file",
        "client_auth_type",
        "client_ca_file",
        "min_version",
        "max_version",
        "prefer_server_cipher_suites",
    }
)
_HTTP_KEYS = frozenset({"http2", "headers"})
_HEADERS = frozenset(
    {
        "Content-Security-Policy",
        "X-Frame-Options",
        "X-Content-Type-Options",
        "X-XSS-Protection",
        "Strict-Transport-Security",
    }
)
# Keys of exporter-toolkit's format this exporter does not implement: refused by name, so that
# a file relying on one never runs with less protection than its author expects.
_UNSUPPORTED = {
    "tls_server_config.cert": "inline certificates are not supported; use cert_file",
    "tls_server_config.key": "inline keys are not supported; use key_file",
    "tls_server_config.client_ca": "inline certificates are not supported; use client_ca_file",
    "tls_server_config.client_allowed_sans": "not supported",
    "tls_server_config.cipher_suites": "not supported; OpenSSL's cipher suites apply",
    "tls_server_config.curve_preferences": "not supported",
    "rate_limit": "not supported",
}
_BCRYPT = re.compile(rb"^\$2[aby]\$(?P<cost>\d\d)\$[./A-Za-z0-9]{53}$")


class WebConfigError(ValueError):
    """The web configuration file cannot be used; the message says where and why."""


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """Validated ``tls_server_config``, paths absolute."""

    cert_file: Path
    key_file: Path
    client_auth_type: str = "NoClientCert"
    client_ca_file: Path | None = None
    min_version: str = "TLS12"
    max_version: str = "TLS13"
    prefer_server_cipher_suites: bool = True

    @property
    def requires_client_certificate(self) -> bool:
        return self.client_auth_type == "RequireAndVerifyClientCert"

    def server_context(self) -> ssl.SSLContext:
        """An SSL context for ``aiohttp.web.TCPSite``; raises WebConfigError on unusable files."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = TLS_VERSIONS[self.min_version]
        context.maximum_version = TLS_VERSIONS[self.max_version]
        if self.prefer_server_cipher_suites:
            context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
        _load_chain(context, self.cert_file, self.key_file)
        context.verify_mode = _VERIFY_MODES[self.client_auth_type]
        if self.client_ca_file is not None:
            _load_ca(context, self.client_ca_file, "client_ca_file")
        return context

    def client_context(self) -> ssl.SSLContext:
        """A context that trusts exactly this server's certificate (for the health check).

        Pinning the certificate the server presents needs neither its CA nor a host name that
        matches the address asked, and never turns verification off. When the server requires
        a client certificate, the server's own certificate and key are offered.
        """
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False  # the pinned certificate is the identity checked
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        _load_ca(context, self.cert_file, "cert_file")
        if self.requires_client_certificate:
            _load_chain(context, self.cert_file, self.key_file)
        return context


@dataclass(frozen=True, slots=True)
class WebConfig:
    """A validated web configuration file: optional TLS, basic auth users, response headers."""

    path: Path
    tls: TLSConfig | None = None
    # (user, bcrypt hash) pairs; hashes stay out of repr, since they can be attacked offline.
    users: tuple[tuple[str, bytes], ...] = field(default=(), repr=False)
    headers: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        return str(self.path)

    def ssl_context(self) -> ssl.SSLContext | None:
        return None if self.tls is None else self.tls.server_context()


def load_web_config(path: str | Path) -> WebConfig:
    """Read and validate ``path``; raise WebConfigError naming the file and the bad key.

    Relative paths inside the file resolve against the file's directory, as in exporter-toolkit.
    """
    path = Path(path).expanduser().absolute()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise WebConfigError(f"cannot read {path}: {reason}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        # Only the problem and its position: YAML's own message quotes the file's lines.
        raise WebConfigError(f"{path}: not valid YAML ({_yaml_problem(exc)})") from None
    try:
        return _parse(path, {} if document is None else document)
    except WebConfigError as exc:
        raise WebConfigError(f"{path}: {exc}") from None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"{exc.problem or 'syntax error'} at line {mark.line + 1}, column {mark.column + 1}"
    return "syntax error"


def _mapping(value: Any, name: str, known: frozenset[str]) -> dict[str, Any]:
    """``value`` as a mapping holding only ``known`` keys; ``name`` is its key ("" at the top)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise WebConfigError(f"{name or 'the file'} must be a YAML mapping")
    for key in value:
        if key not in known:
            full = f"{name}.{key}" if name else str(key)
            if full in _UNSUPPORTED:
                raise WebConfigError(f"{full}: {_UNSUPPORTED[full]}")
            raise WebConfigError(f"unknown key {full}")
    return value


def _parse(path: Path, document: Any) -> WebConfig:
    top = _mapping(
        document,
        "",
        frozenset({"tls_server_config", "http_server_config", "basic_auth_users"}),
    )
    tls = _parse_tls(
        path.parent, _mapping(top.get("tls_server_config"), "tls_server_config", _TLS_KEYS)
    )
    http = _mapping(top.get("http_server_config"), "http_server_config", _HTTP_KEYS)
    if "http2" in http and not isinstance(http["http2"], bool):
        raise WebConfigError("http_server_config.http2 must be true or false")
    return WebConfig(
        path=path,
        tls=tls,
        users=_parse_users(top.get("basic_auth_users")),
        headers=_parse_headers(http.get("headers")),
    )


def _string(config: Mapping[str, Any], key: str) -> str | None:
    value = config.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise WebConfigError(f"tls_server_config.{key} must be a string")
    return value


def _parse_tls(directory: Path, config: dict[str, Any]) -> TLSConfig | None:
    if not any(value not in (None, "") for value in config.values()):
        return None
    cert, key = _string(config, "cert_file"), _string(config, "key_file")
    if cert is None or key is None:
        raise WebConfigError("tls_server_config needs both cert_file and key_file")
    client_auth = _string(config, "client_auth_type") or "NoClientCert"
    if client_auth not in CLIENT_AUTH_TYPES:
        raise WebConfigError(
            f"tls_server_config.client_auth_type: expected one of {', '.join(CLIENT_AUTH_TYPES)}, "
            f"got {client_auth!r}"
        )
    if client_auth == "RequireAnyClientCert":
        raise WebConfigError(
            "tls_server_config.client_auth_type RequireAnyClientCert is not supported (Python's "
            "ssl module checks every client certificate it accepts); use "
            "RequireAndVerifyClientCert with client_ca_file"
        )
    ca = _string(config, "client_ca_file")
    if ca is not None and _VERIFY_MODES[client_auth] == ssl.CERT_NONE:
        raise WebConfigError(
            f"tls_server_config.client_ca_file is set but client_auth_type is {client_auth}, "
            "which checks no certificate"
        )
    if ca is None and _VERIFY_MODES[client_auth] != ssl.CERT_NONE:
        raise WebConfigError(
            f"tls_server_config.client_auth_type {client_auth} needs client_ca_file"
        )
    versions = {}
    for name, default in (("min_version", "TLS12"), ("max_version", "TLS13")):
        versions[name] = _string(config, name) or default
        if versions[name] not in TLS_VERSIONS:
            raise WebConfigError(
                f"tls_server_config.{name}: expected TLS12 or TLS13, got {versions[name]!r}"
            )
    if TLS_VERSIONS[versions["min_version"]] > TLS_VERSIONS[versions["max_version"]]:
        raise WebConfigError("tls_server_config.min_version is above max_version")
    prefer = config.get("prefer_server_cipher_suites", True)
    if not isinstance(prefer, bool):
        raise WebConfigError("tls_server_config.prefer_server_cipher_suites must be true or false")
    tls = TLSConfig(
        cert_file=directory / Path(cert).expanduser(),
        key_file=directory / Path(key).expanduser(),
        client_auth_type=client_auth,
        client_ca_file=None if ca is None else directory / Path(ca).expanduser(),
        min_version=versions["min_version"],
        max_version=versions["max_version"],
        prefer_server_cipher_suites=prefer,
    )
    tls.server_context()  # certificate, key and CA must load now, not at the first connection
    return tls


def _no_passphrase() -> str:
    raise WebConfigError("encrypted private keys are not supported")


def _readable(path: Path, key: str) -> None:
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise WebConfigError(f"tls_server_config.{key} {path}: {exc.strerror or exc}") from None


def _load_chain(context: ssl.SSLContext, cert: Path, key: Path) -> None:
    _readable(cert, "cert_file")
    _readable(key, "key_file")
    try:
        context.load_cert_chain(cert, key, password=_no_passphrase)
    except ssl.SSLError as exc:
        raise WebConfigError(
            f"tls_server_config.cert_file {cert} and key_file {key}: not a PEM certificate and "
            f"its private key{_reason(exc)}"
        ) from None


def _load_ca(context: ssl.SSLContext, path: Path, key: str) -> None:
    _readable(path, key)
    try:
        context.load_verify_locations(cafile=path)
    except ssl.SSLError as exc:
        raise WebConfigError(
            f"tls_server_config.{key} {path}: no PEM certificate{_reason(exc)}"
        ) from None


def _reason(exc: ssl.SSLError) -> str:
    # OpenSSL's reason code (KEY_VALUES_MISMATCH, NO_START_LINE) when it gives one.
    return f" ({exc.reason})" if exc.reason else ""


def _parse_users(users: Any) -> tuple[tuple[str, bytes], ...]:
    if users is None:
        return ()
    if not isinstance(users, dict):
        raise WebConfigError("basic_auth_users must map user names to bcrypt hashes")
    parsed = []
    for user, hashed in users.items():
        if not isinstance(user, str) or not user or ":" in user:
            raise WebConfigError(
                "basic_auth_users: user names must be non-empty strings without ':'"
            )
        # Never quote the value: a plain password put there by mistake must not reach a log.
        encoded = hashed.encode() if isinstance(hashed, str) else b""
        match = _BCRYPT.match(encoded)
        if match is None or not 4 <= int(match["cost"]) <= 31:
            raise WebConfigError(
                f"basic_auth_users: the value for user {user!r} is not a bcrypt hash "
                '(such as htpasswd -nBC 10 "" makes)'
            )
        parsed.append((user, encoded))
    return tuple(parsed)


def _parse_headers(headers: Any) -> tuple[tuple[str, str], ...]:
    config = _mapping(headers, "http_server_config.headers", _HEADERS)
    parsed = []
    for name, value in config.items():
        if value in (None, ""):
            continue
        if not isinstance(value, str) or any(ch in value for ch in "\r\n"):
            raise WebConfigError(f"http_server_config.headers.{name} must be a one-line string")
        parsed.append((name, value))
    return tuple(parsed)
