"""--web.config.file: TLS, client certificates and basic auth on a real sidecar, real sockets."""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import json
import os
import ssl
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import bcrypt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from exporter import Sidecar
from exporter.server import HEALTH_PATH
from exporter.settings import Settings, SettingsError
from exporter.web_config import WebConfigError, load_web_config
from tests.waiting import eventually

PASSWORD = "c0rrect-h0rse-pw"
WRONG = "wr0ng-guess-pw"
PROTECTED = ("/metrics", HEALTH_PATH, "/readyz", "/")


@dataclass(frozen=True)
class PKI:
    """A CA, a server certificate for 127.0.0.1 and localhost, and client certificates."""

    directory: Path
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path  # signed by another CA
    stranger_key: Path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def _issue(
    path: Path,
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    usages: tuple[x509.ObjectIdentifier, ...] = (),
    sans: tuple[x509.GeneralName, ...] = (),
) -> x509.Name:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, issuer_key = issuer if issuer is not None else (name, key)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    certificate = builder.sign(issuer_key, hashes.SHA256())
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return name


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    directory = tmp_path_factory.mktemp("pki")
    ca_key, other_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    ca_name = _issue(directory / "ca.crt", "test CA", ca_key, None, ca=True)
    other_name = _issue(directory / "other-ca.crt", "other CA", other_key, None, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    _issue(
        directory / "server.crt",
        "checkpoint-exporter",
        server_key,
        (ca_name, ca_key),
        # clientAuth too: the health check offers this certificate when one is required.
        usages=(ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH),
        sans=(
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.DNSName("localhost"),
        ),
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    _issue(
        directory / "client.crt",
        "prometheus",
        client_key,
        (ca_name, ca_key),
        usages=(ExtendedKeyUsageOID.CLIENT_AUTH,),
    )
    stranger_key = ec.generate_private_key(ec.SECP256R1())
    _issue(
        directory / "stranger.crt",
        "prometheus",
        stranger_key,
        (other_name, other_key),
        usages=(ExtendedKeyUsageOID.CLIENT_AUTH,),
    )
    return PKI(
        directory=directory,
        ca=directory / "ca.crt",
        server_cert=directory / "server.crt",
        server_key=_write_key(directory / "server.key", server_key),
        client_cert=directory / "client.crt",
        client_key=_write_key(directory / "client.key", client_key),
        stranger_cert=directory / "stranger.crt",
        stranger_key=_write_key(directory / "stranger.key", stranger_key),
    )


@pytest.fixture(scope="module")
def password_hash() -> str:
    """A real bcrypt hash of PASSWORD (cost 4, bcrypt's least, to keep the tests quick)."""
    return bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()


WriteConfig = Callable[[str], Path]


@pytest.fixture
def write_config(pki: PKI) -> WriteConfig:
    """Write a web configuration file beside the certificates, so relative paths find them."""

    def write(text: str) -> Path:
        path = pki.directory / f"web-{uuid.uuid4().hex[:12]}.yml"
        path.write_text(text)
        return path

    return write


TLS = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
MTLS = TLS + "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n"


def users(password_hash: str) -> str:
    return f"basic_auth_users:\n  prometheus: {password_hash}\n"


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def client_context(
    pki: PKI, *, cert: Path | None = None, key: Path | None = None
) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca))
    if cert is not None:
        context.load_cert_chain(cert, key)
    return context


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


def with_config(settings: Settings, path: Path, **changes: object) -> Settings:
    return settings.replace(web_config_file=load_web_config(path), **changes)


async def status(
    http: aiohttp.ClientSession, url: str, ssl_context: ssl.SSLContext | bool = True, **kw: object
) -> int:
    async with http.get(url, ssl=ssl_context, **kw) as response:  # type: ignore[arg-type]
        await response.read()
        return response.status


def test_relative_paths_resolve_against_the_file(
    pki: PKI, write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """cert_file, key_file and client_ca_file start at the file's directory, not the cwd."""
    monkeypatch.chdir(tmp_path)
    config = load_web_config(write_config(MTLS))
    assert config.tls is not None
    assert config.tls.cert_file == pki.server_cert
    assert config.tls.key_file == pki.server_key
    assert config.tls.client_ca_file == pki.ca
    assert config.users == ()


def test_an_empty_file_means_no_tls_and_no_auth(write_config: WriteConfig) -> None:
    """A file with nothing in it (or an empty tls_server_config) changes nothing."""
    for text in ("", "tls_server_config:\nbasic_auth_users:\n"):
        config = load_web_config(write_config(text))
        assert (config.tls, config.users, config.ssl_context()) == (None, (), None)


def test_request_client_cert_asks_for_none(write_config: WriteConfig) -> None:
    """RequestClientCert never checks what it asks for, so no certificate is asked at all."""
    config = load_web_config(write_config(TLS + "  client_auth_type: RequestClientCert\n"))
    context = config.ssl_context()
    assert context is not None
    assert context.verify_mode == ssl.CERT_NONE


BAD_FILES = {
    "not-yaml": ("basic_auth_users: {a: [\n", "not valid YAML"),
    "a-list": ("- tls_server_config\n", "the file must be a YAML mapping"),
    "unknown-top-key": ("basic_auth: {}\n", "unknown key basic_auth"),
    "unknown-tls-key": (TLS + "  ciphers: []\n", "unknown key tls_server_config.ciphers"),
    "unsupported-key": (TLS + "  cipher_suites: []\n", "tls_server_config.cipher_suites: not"),
    "inline-cert": ("tls_server_config:\n  cert: x\n", "inline certificates are not supported"),
    "no-key-file": ("tls_server_config:\n  cert_file: server.crt\n", "both cert_file and"),
    "missing-cert": (
        "tls_server_config:\n  cert_file: gone.crt\n  key_file: server.key\n",
        "gone.crt: No such file or directory",
    ),
    "cert-not-pem": (
        "tls_server_config:\n  cert_file: server.key\n  key_file: server.key\n",
        "not a PEM certificate and its private key",
    ),
    "key-of-another-cert": (
        "tls_server_config:\n  cert_file: server.crt\n  key_file: client.key\n",
        "KEY_VALUES_MISMATCH",
    ),
    "bad-client-auth": (TLS + "  client_auth_type: Always\n", "expected one of NoClientCert"),
    "require-any": (
        TLS + "  client_auth_type: RequireAnyClientCert\n",
        "RequireAnyClientCert is not supported",
    ),
    "verify-without-ca": (
        TLS + "  client_auth_type: RequireAndVerifyClientCert\n",
        "needs client_ca_file",
    ),
    "ca-without-verify": (TLS + "  client_ca_file: ca.crt\n", "which checks no certificate"),
    "ca-not-pem": (
        TLS + "  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: server.key\n",
        "client_ca_file",
    ),
    "tls10": (TLS + "  min_version: TLS10\n", "expected TLS12 or TLS13"),
    "min-above-max": (
        TLS + "  min_version: TLS13\n  max_version: TLS12\n",
        "min_version is above max_version",
    ),
    "plain-password": (f"basic_auth_users:\n  prometheus: {PASSWORD}\n", "is not a bcrypt hash"),
    "truncated-hash": ("basic_auth_users:\n  prometheus: $2y$10$abc\n", "is not a bcrypt hash"),
    "user-with-colon": ("basic_auth_users:\n  'a:b': x\n", "without ':'"),
    "users-a-list": ("basic_auth_users: [prometheus]\n", "must map user names"),
    "http2-word": ("http_server_config:\n  http2: maybe\n", "http2 must be true or false"),
    "unknown-header": (
        "http_server_config:\n  headers:\n    X-Powered-By: me\n",
        "unknown key http_server_config.headers.X-Powered-By",
    ),
}


@pytest.mark.parametrize(("text", "expected"), BAD_FILES.values(), ids=BAD_FILES.keys())
def test_bad_files_name_the_setting_and_the_key(
    text: str, expected: str, write_config: WriteConfig
) -> None:
    """Settings.load rejects the file with one line naming the setting, the file and the fault."""
    path = write_config(text)
    with pytest.raises(SettingsError) as caught:
        Settings.load({}, {"web_config_file": str(path)})
    message = str(caught.value)
    assert message.startswith(f"CHECKPOINT_EXPORTER_WEB_CONFIG_FILE (--web.config.file): {path}: ")
    assert expected in message
    assert "\n" not in message
    assert PASSWORD not in message


def test_an_unreadable_file_names_the_setting(tmp_path: Path) -> None:
    """A missing file is reported at load, with the reason and without a traceback chain."""
    with pytest.raises(SettingsError, match=r"--web.config.file\): cannot read .*No such file"):
        Settings.load({"CHECKPOINT_EXPORTER_WEB_CONFIG_FILE": str(tmp_path / "none.yml")}, {})


async def test_basic_auth_protects_every_endpoint_but_healthz(
    memory_settings: Settings,
    write_config: WriteConfig,
    password_hash: str,
    http: aiohttp.ClientSession,
) -> None:
    """Missing, wrong or malformed credentials get 401 with a challenge; right ones get 200."""
    settings = with_config(memory_settings, write_config(users(password_hash)))
    async with Sidecar(settings, registry=CollectorRegistry()) as sidecar:
        assert sidecar.url.startswith("http://")
        for path in (*PROTECTED, "/no-such-page"):
            url = sidecar.url + path
            async with http.get(url) as response:
                assert response.status == 401, path
                assert response.headers["WWW-Authenticate"] == "Basic"
            for headers in (
                basic("prometheus", WRONG),
                basic("nobody", PASSWORD),
                basic("prometheus", PASSWORD + "x"),
                {"Authorization": f"Bearer {PASSWORD}"},
                {"Authorization": "Basic not-base64!"},
                {"Authorization": "Basic " + base64.b64encode(PASSWORD.encode()).decode()},
            ):
                assert await status(http, url, headers=headers) == 401, (path, headers)
        for path in PROTECTED:
            assert (
                await status(http, sidecar.url + path, headers=basic("prometheus", PASSWORD)) == 200
            )
        assert (
            await status(http, sidecar.url + "/no-such-page", headers=basic("prometheus", PASSWORD))
            == 404
        )
        assert await status(http, sidecar.url + "/healthz") == 200


async def test_healthz_is_protected_when_not_open(
    memory_settings: Settings,
    write_config: WriteConfig,
    password_hash: str,
    http: aiohttp.ClientSession,
) -> None:
    """With web_healthz_open false, /healthz needs the credentials like everything else."""
    settings = with_config(
        memory_settings, write_config(users(password_hash)), web_healthz_open=False
    )
    async with Sidecar(settings, registry=CollectorRegistry()) as sidecar:
        assert await status(http, sidecar.url + "/healthz") == 401
        assert (
            await status(http, sidecar.url + "/healthz", headers=basic("prometheus", PASSWORD))
            == 200
        )


async def test_bcrypt_runs_once_per_distinct_credential(
    memory_settings: Settings,
    write_config: WriteConfig,
    password_hash: str,
    http: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A right password is checked by bcrypt once, then remembered; wrong ones never are."""
    calls: list[bytes] = []
    checkpw = bcrypt.checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        calls.append(hashed)
        return checkpw(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", counting)
    settings = with_config(memory_settings, write_config(users(password_hash)))
    async with Sidecar(settings, registry=CollectorRegistry()) as sidecar:
        for _ in range(5):
            assert (
                await status(http, sidecar.url + "/", headers=basic("prometheus", PASSWORD)) == 200
            )
        assert len(calls) == 1
        for _ in range(3):
            assert await status(http, sidecar.url + "/", headers=basic("prometheus", WRONG)) == 401
        assert len(calls) == 4
        # An unknown user costs a bcrypt check too, so timing does not reveal user names.
        assert await status(http, sidecar.url + "/", headers=basic("nobody", PASSWORD)) == 401
        assert len(calls) == 5
        assert calls[-1] != password_hash.encode()


class Gate:
    """bcrypt.checkpw held shut while closed: verifications stay in flight until opened."""

    def __init__(self, checkpw: Callable[[bytes, bytes], bool]) -> None:
        self._checkpw = checkpw
        self._open = threading.Event()
        self._open.set()
        self._lock = threading.Lock()
        self.calls: list[bytes] = []
        self.waiting = 0

    def __call__(self, password: bytes, hashed: bytes) -> bool:
        with self._lock:
            self.calls.append(hashed)
            self.waiting += 1
        self._open.wait()
        with self._lock:
            self.waiting -= 1
        return self._checkpw(password, hashed)

    def close(self) -> None:
        self._open.clear()

    def open(self) -> None:
        self._open.set()


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[Gate]:
    gated = Gate(bcrypt.checkpw)
    monkeypatch.setattr(bcrypt, "checkpw", gated)
    yield gated
    gated.open()  # never leave a thread of the default executor blocked


def three_users(password_hash: str) -> str:
    """prometheus, grafana and alice, all with PASSWORD (cost 4)."""
    return "basic_auth_users:\n" + "".join(
        f"  {name}: {hashed}\n"
        for name, hashed in (
            ("prometheus", password_hash),
            ("grafana", bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()),
            ("alice", bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()),
        )
    )


async def test_a_flood_of_wrong_passwords_delays_no_other_user(
    memory_settings: Settings,
    write_config: WriteConfig,
    password_hash: str,
    http: aiohttp.ClientSession,
    gate: Gate,
) -> None:
    """30 wrong passwords for one user, one of them held in bcrypt: the other 29 get 429 at once.

    Meanwhile a user verified before is answered from memory, without bcrypt; another user's
    first login is checked beside the one in flight, not after it; and with both checks
    taken, a third attempt finds no room (429).
    """
    settings = with_config(memory_settings, write_config(three_users(password_hash)))
    async with Sidecar(settings, registry=CollectorRegistry()) as sidecar:
        url = sidecar.url + "/"
        assert await status(http, url, headers=basic("prometheus", PASSWORD)) == 200
        gate.close()
        flood = [
            asyncio.ensure_future(status(http, url, headers=basic("alice", f"{WRONG}-{i}")))
            for i in range(30)
        ]
        await eventually(lambda: sum(t.done() for t in flood) == 29, what="29 answers")
        assert gate.waiting == 1
        assert sorted(t.result() for t in flood if t.done()) == [429] * 29
        assert await status(http, url, headers=basic("prometheus", PASSWORD)) == 200
        assert len(gate.calls) == 2
        first_login = asyncio.ensure_future(status(http, url, headers=basic("grafana", PASSWORD)))
        await eventually(lambda: gate.waiting == 2, what="grafana's check beside alice's")
        assert await status(http, url, headers=basic("nobody", PASSWORD)) == 429
        gate.open()
        assert await first_login == 200
        assert [await t for t in flood if not t.done() or t.result() != 429] == [401]
        assert len(gate.calls) == 3


async def test_concurrent_logins_with_one_password_share_one_check(
    memory_settings: Settings,
    write_config: WriteConfig,
    password_hash: str,
    http: aiohttp.ClientSession,
    gate: Gate,
) -> None:
    """Logins with the same credentials arriving during its check wait for that check."""
    settings = with_config(memory_settings, write_config(users(password_hash)))
    async with Sidecar(settings, registry=CollectorRegistry()) as sidecar:
        gate.close()
        logins = [
            asyncio.ensure_future(
                status(http, sidecar.url + "/", headers=basic("prometheus", PASSWORD))
            )
            for _ in range(5)
        ]
        await eventually(lambda: gate.waiting == 1, what="the first check")
        gate.open()
        assert await asyncio.gather(*logins) == [200] * 5
        assert len(gate.calls) == 1


async def test_an_unknown_user_costs_what_a_known_one_does(
    memory_settings: Settings,
    write_config: WriteConfig,
    password_hash: str,
    http: aiohttp.ClientSession,
    gate: Gate,
) -> None:
    """An unknown name goes through bcrypt at the users' own cost, so timing tells no names."""
    settings = with_config(memory_settings, write_config(users(password_hash)))
    async with Sidecar(settings, registry=CollectorRegistry()) as sidecar:
        for user in ("prometheus", "nobody", "prometheus-not"):
            assert await status(http, sidecar.url + "/", headers=basic(user, WRONG)) == 401
    known, *unknown = gate.calls
    assert known == password_hash.encode()
    assert len(unknown) == 2
    for hashed in unknown:
        assert hashed != known
        assert hashed[:7] == known[:7]  # $2b$04$: the same cost


async def test_tls_with_basic_auth(
    memory_settings: Settings,
    pki: PKI,
    write_config: WriteConfig,
    password_hash: str,
    http: aiohttp.ClientSession,
) -> None:
    """Over https the same rules hold; a client that does not trust the CA cannot connect."""
    settings = with_config(memory_settings, write_config(TLS + users(password_hash)))
    async with Sidecar(settings, registry=CollectorRegistry()) as sidecar:
        assert sidecar.url.startswith("https://127.0.0.1:")
        trusted = client_context(pki)
        for path in PROTECTED:
            url = sidecar.url + path
            assert await status(http, url, trusted) == 401
            assert await status(http, url, trusted, headers=basic("prometheus", WRONG)) == 401
            assert await status(http, url, trusted, headers=basic("prometheus", PASSWORD)) == 200
        assert await status(http, sidecar.url + "/healthz", trusted) == 200
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await status(http, sidecar.url + "/healthz", ssl.create_default_context())


async def test_plain_http_to_the_tls_port_fails_cleanly(
    memory_settings: Settings, pki: PKI, write_config: WriteConfig, http: aiohttp.ClientSession
) -> None:
    """Plain HTTP gets no answer, and the server keeps serving TLS afterwards."""
    settings = with_config(memory_settings, write_config(TLS))
    async with Sidecar(settings, registry=CollectorRegistry()) as sidecar:
        plain = sidecar.url.replace("https://", "http://")
        for _ in range(3):
            with pytest.raises(aiohttp.ClientError):
                await status(http, plain + "/healthz")
        assert await status(http, sidecar.url + HEALTH_PATH, client_context(pki)) == 200


async def test_required_client_certificate(
    memory_settings: Settings, pki: PKI, write_config: WriteConfig, http: aiohttp.ClientSession
) -> None:
    """RequireAndVerifyClientCert turns away clients without a certificate or with a stranger's."""
    settings = with_config(memory_settings, write_config(MTLS))
    async with Sidecar(settings, registry=CollectorRegistry()) as sidecar:
        url = sidecar.url + "/metrics"
        with pytest.raises(aiohttp.ClientError):
            await status(http, url, client_context(pki))
        stranger = client_context(pki, cert=pki.stranger_cert, key=pki.stranger_key)
        with pytest.raises(aiohttp.ClientError):
            await status(http, url, stranger)
        member = client_context(pki, cert=pki.client_cert, key=pki.client_key)
        for path in (*PROTECTED, "/healthz"):
            assert await status(http, sidecar.url + path, member) == 200


async def test_optional_client_certificate(
    memory_settings: Settings, pki: PKI, write_config: WriteConfig, http: aiohttp.ClientSession
) -> None:
    """VerifyClientCertIfGiven lets a client without a certificate in, but not a stranger's."""
    config = TLS + "  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: ca.crt\n"
    settings = with_config(memory_settings, write_config(config))
    async with Sidecar(settings, registry=CollectorRegistry()) as sidecar:
        url = sidecar.url + "/healthz"
        assert await status(http, url, client_context(pki)) == 200
        stranger = client_context(pki, cert=pki.stranger_cert, key=pki.stranger_key)
        with pytest.raises(aiohttp.ClientError):
            await status(http, url, stranger)


async def test_tls13_only(
    memory_settings: Settings, pki: PKI, write_config: WriteConfig, http: aiohttp.ClientSession
) -> None:
    """min_version TLS13 refuses a TLS 1.2 client."""
    settings = with_config(memory_settings, write_config(TLS + "  min_version: TLS13\n"))
    async with Sidecar(settings, registry=CollectorRegistry()) as sidecar:
        old = client_context(pki)
        old.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises(aiohttp.ClientError):
            await status(http, sidecar.url + "/healthz", old)
        assert await status(http, sidecar.url + "/healthz", client_context(pki)) == 200


async def test_configured_headers_are_sent(
    memory_settings: Settings, write_config: WriteConfig, http: aiohttp.ClientSession
) -> None:
    """Headers from http_server_config reach the responses; http2 is accepted and ignored."""
    config = (
        "http_server_config:\n  http2: true\n  headers:\n"
        "    X-Frame-Options: deny\n    X-Content-Type-Options: nosniff\n"
    )
    settings = with_config(memory_settings, write_config(config))
    async with (
        Sidecar(settings, registry=CollectorRegistry()) as sidecar,
        http.get(sidecar.url + "/metrics") as response,
    ):
        assert response.status == 200
        assert response.headers["X-Frame-Options"] == "deny"
        assert response.headers["X-Content-Type-Options"] == "nosniff"


async def test_passwords_never_reach_the_logs(
    memory_settings: Settings,
    write_config: WriteConfig,
    password_hash: str,
    http: aiohttp.ClientSession,
) -> None:
    """Refused and accepted requests log no password; refusals are logged with their reason."""
    settings = with_config(memory_settings, write_config(users(password_hash)))
    with capture_logs() as logs:
        async with Sidecar(settings, registry=CollectorRegistry()) as sidecar:
            for password in (PASSWORD, WRONG):
                await status(http, sidecar.url + "/metrics", headers=basic("prometheus", password))
            await status(http, sidecar.url + "/metrics")
    text = json.dumps(logs, default=str)
    assert PASSWORD not in text
    assert WRONG not in text
    assert password_hash not in text
    refused = [e for e in logs if e["event"] == "request_unauthorized"]
    assert [e["reason"] for e in refused] == ["wrong credentials", "no credentials"]
    started = next(e for e in logs if e["event"] == "sidecar_started")
    assert (started["tls"], started["basic_auth"]) == (False, True)


def test_hashes_stay_out_of_repr(write_config: WriteConfig, password_hash: str) -> None:
    """repr of the settings shows the file, never the bcrypt hashes it holds."""
    path = write_config(users(password_hash))
    settings = Settings.load({}, {"web_config_file": str(path)})
    assert str(path) in repr(settings)
    assert password_hash not in repr(settings)


def test_a_file_broken_after_load_fails_at_start(
    pki: PKI, write_config: WriteConfig, tmp_path: Path
) -> None:
    """A certificate removed after the settings loaded is a WebConfigError when the site starts."""
    (tmp_path / "server.crt").write_bytes(pki.server_cert.read_bytes())
    (tmp_path / "server.key").write_bytes(pki.server_key.read_bytes())
    path = tmp_path / "web.yml"
    path.write_text(TLS)
    config = load_web_config(path)
    (tmp_path / "server.crt").unlink()
    with pytest.raises(WebConfigError, match=r"server\.crt: No such file"):
        config.ssl_context()


async def healthcheck(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run `checkpoint-exporter healthcheck` in its own process, off the loop."""
    environment = {
        k: v for k, v in os.environ.items() if not k.startswith("CHECKPOINT_EXPORTER_")
    } | env
    command = [sys.executable, "-m", "exporter", "healthcheck", *args]
    return await asyncio.to_thread(
        subprocess.run,
        command,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        pytest.param(TLS, "healthy", id="tls"),
        pytest.param(MTLS, "healthy", id="client-certificate-required"),
        pytest.param(TLS + "USERS", "alive", id="tls-and-users"),
    ],
)
async def test_healthcheck_command_follows_the_web_config(
    config: str,
    expected: str,
    memory_settings: Settings,
    write_config: WriteConfig,
    password_hash: str,
) -> None:
    """The command uses https pinned to the server's certificate; with users it asks /healthz."""
    path = write_config(config.replace("USERS", users(password_hash)))
    settings = with_config(memory_settings, path)
    async with Sidecar(settings, registry=CollectorRegistry()) as sidecar:
        result = await healthcheck(
            {"CHECKPOINT_EXPORTER_WEB_CONFIG_FILE": str(path)},
            "--web.listen-address",
            f"127.0.0.1:{sidecar.port}",
        )
    assert (result.returncode, result.stdout.strip(), result.stderr) == (0, expected, "")


async def test_healthcheck_command_without_a_password_for_healthz(
    memory_settings: Settings, write_config: WriteConfig, password_hash: str
) -> None:
    """With every endpoint behind a password, the command says why it cannot check: exit 1."""
    path = write_config(users(password_hash))
    settings = with_config(memory_settings, path, web_healthz_open=False)
    async with Sidecar(settings, registry=CollectorRegistry()) as sidecar:
        env = {
            "CHECKPOINT_EXPORTER_WEB_CONFIG_FILE": str(path),
            "CHECKPOINT_EXPORTER_WEB_HEALTHZ_OPEN": "false",
        }
        refused = await healthcheck(env, "--web.listen-address", f"127.0.0.1:{sidecar.port}")
        asked = await healthcheck(env, "--url", sidecar.url + HEALTH_PATH)
    assert refused.returncode == 1
    assert refused.stdout == ""
    assert refused.stderr.count("\n") == 1
    assert "CHECKPOINT_EXPORTER_WEB_HEALTHZ_OPEN=true" in refused.stderr
    assert (asked.returncode, asked.stdout.strip()) == (1, "HTTP 401")
