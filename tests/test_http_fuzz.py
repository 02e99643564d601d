"""Bad input over real sockets to a running sidecar: 2xx or 4xx, never 5xx, never a hang."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import select
import signal
import socket
import string
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

import bcrypt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.factory import prepare_schema
from exporter.settings import Settings
from tests.postgres import fresh_database
from tests.samples import parse_metrics, value
from tests.waiting import eventually

# Every exchange is bounded: a request that gets no complete answer in this time is a hang.
ANSWER_TIMEOUT = 10.0
PASSWORD = "fuzz-password"
KNOWN_PATHS = ("/", "/metrics", "/api/health/checkpointer", "/healthz", "/readyz")


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class Server:
    """A ``checkpoint-exporter serve`` process, its port and its JSON log."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    log_offset: int = 0

    def new_events(self) -> list[dict[str, object]]:
        """The log events written since the last call; every line must be one JSON event."""
        with self.log_path.open("rb") as stream:
            stream.seek(self.log_offset)
            text = stream.read()
        self.log_offset += len(text)
        return [json.loads(line) for line in text.decode().splitlines() if line.strip()]


def exchange(port: int, request: bytes, timeout: float = ANSWER_TIMEOUT) -> bytes:
    """Send ``request`` and read until the server closes; fail if that takes over ``timeout``."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        return until_closed(sock, timeout)


def answers(data: bytes) -> list[Answer]:
    """Parse the responses to pipelined GETs (bodies by Content-Length or chunked)."""
    parsed = []
    while data:
        head, sep, data = data.partition(b"\r\n\r\n")
        assert sep, f"truncated response head {head[:200]!r}"
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            name, _, text = line.partition(":")
            headers[name.strip().lower()] = text.strip()
        if "content-length" in headers:
            length = int(headers["content-length"])
            body, data = data[:length], data[length:]
        elif headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size_line, _, data = data.partition(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                body, data = body + data[:size], data[size + 2 :]
                if size == 0:
                    break
        else:
            body, data = data, b""
        parsed.append(Answer(status, headers, body))
    return parsed


def status_of(data: bytes) -> int:
    """The status code of the first response in ``data``."""
    assert data.startswith(b"HTTP/"), f"not an HTTP response: {data[:200]!r}"
    return int(data.split(b" ", 2)[1])


def request(
    target: str,
    method: str = "GET",
    headers: tuple[tuple[str, str], ...] = (),
    version: str = "HTTP/1.1",
) -> bytes:
    lines = [f"{method} {target} {version}", "Host: 127.0.0.1", *(f"{n}: {v}" for n, v in headers)]
    return ("\r\n".join([*lines, "Connection: close", "", ""])).encode("latin-1")


def get_status(server: Server, target: str, *headers: tuple[str, str]) -> int:
    return status_of(exchange(server.port, request(target, headers=headers)))


# Runs the rest of its command line under a limit of 64 file descriptors.
FEW_DESCRIPTORS = (
    "import os, resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64)); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
)


def start_server(
    tmp: Path, env: dict[str, str], *flags: str, few_descriptors: bool = False
) -> Server:
    """``serve`` on port 0; its port from the ``sidecar_started`` entry of its log."""
    log_path = tmp / f"serve-{len(list(tmp.glob('serve-*.log')))}.log"
    limit = ("-c", FEW_DESCRIPTORS) if few_descriptors else ()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                *(sys.executable, *limit, "-m", "exporter", "serve"),
                *("--web.listen-address=127.0.0.1:0", "--log.format=json", "--log.level=debug"),
                *flags,
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    deadline = time.monotonic() + 120
    while True:
        assert process.poll() is None, log_path.read_text()
        started = [
            entry
            for entry in map(json.loads, log_path.read_text().split("\n")[:-1])
            if entry.get("event") == "sidecar_started"
        ]
        if started:
            break
        assert time.monotonic() < deadline, f"the sidecar did not start: {log_path.read_text()}"
        time.sleep(0.05)
    port = urlsplit(str(started[0]["url"])).port
    assert port is not None
    return Server(process, port, log_path)


def stop_server(server: Server) -> None:
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=30) == 0, server.log_path.read_text()


def base_env() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CHECKPOINT_EXPORTER_", "POSTGRES_", "USE_POSTGRES"))
    }


@pytest.fixture(scope="module")
def server(admin_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A standalone sidecar on a database of its own with LangGraph's tables in place."""
    with fresh_database(admin_dsn) as dsn:
        asyncio.run(prepare_schema(dsn, Settings(postgres_connection_string=dsn)))
        # A stalled client of test_stalled_clients_do_not_hold_up_others finishes its request
        # after a dozen scrapes, which a loaded machine may take longer than 10 s to serve.
        env = base_env() | {
            "POSTGRES_CONNECTION_STRING": dsn,
            "CHECKPOINT_EXPORTER_WEB_READ_HEADER_TIMEOUT": "2m",
        }
        running = start_server(tmp_path_factory.mktemp("fuzz"), env, "--collector.timeout=2s")
        try:
            yield running
        finally:
            stop_server(running)


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """An in-memory sidecar whose endpoints need a basic-auth password."""
    tmp = tmp_path_factory.mktemp("fuzz-auth")
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    config = tmp / "web.yml"
    config.write_text(f"basic_auth_users:\n  prometheus: {hashed}\n")
    env = base_env() | {"USE_POSTGRES_SAVER": "false"}
    running = start_server(tmp, env, f"--web.config.file={config}")
    try:
        yield running
    finally:
        stop_server(running)


def memory_env(**settings: str) -> dict[str, str]:
    """An in-memory sidecar's environment, with ``CHECKPOINT_EXPORTER_`` settings added."""
    return (
        base_env()
        | {"USE_POSTGRES_SAVER": "false"}
        | {f"CHECKPOINT_EXPORTER_{name.upper()}": value for name, value in settings.items()}
    )


@pytest.fixture(scope="module")
def tight_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """An in-memory sidecar that gives a request's headers 0.5 s and an idle connection 1 s."""
    env = memory_env(web_read_header_timeout="500ms", web_idle_timeout="1s")
    running = start_server(tmp_path_factory.mktemp("fuzz-tight"), env)
    try:
        yield running
    finally:
        stop_server(running)


def capped(tmp: Path) -> Server:
    """An in-memory sidecar with the default cap, in a process allowed 64 descriptors.

    The cap is then lowered to 32, leaving 32 descriptors for the rest. Its timeouts are
    long, so that only the cap closes connections while a test runs.
    """
    env = memory_env(web_read_header_timeout="10m", web_idle_timeout="10m")
    running = start_server(tmp, env, few_descriptors=True)
    lowered = [e for e in running.new_events() if e["event"] == "http_connection_limit_lowered"]
    assert [(e["max_connections"], e["lowered_to"]) for e in lowered] == [(256, 32)]
    return running


@pytest.fixture
def capped_server(tmp_path: Path) -> Iterator[Server]:
    """A capped sidecar of the test's own, so that it sees its own episodes of the cap."""
    running = capped(tmp_path)
    try:
        yield running
    finally:
        stop_server(running)


@pytest.fixture(scope="module")
def hostile_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A capped sidecar for the generated hostile clients."""
    running = capped(tmp_path_factory.mktemp("fuzz-hostile"))
    try:
        yield running
    finally:
        stop_server(running)


SERVERS = ("server", "auth_server", "tight_server", "capped_server", "hostile_server")
# Warnings that say what the operator must know, not that bad input was mishandled.
EXPECTED_WARNINGS = {"http_connection_limit_reached", "http_connection_limit_lowered"}


@pytest.fixture(autouse=True)
def no_errors_logged(request: pytest.FixtureRequest) -> Iterator[None]:
    """Whatever a client sends, the sidecar logs no error: bad input is the client's mistake."""
    servers = [request.getfixturevalue(name) for name in SERVERS if name in request.fixturenames]
    for running in servers:
        running.new_events()
    yield
    for running in servers:
        bad = [
            e
            for e in running.new_events()
            if e["level"] not in ("debug", "info") and e["event"] not in EXPECTED_WARNINGS
        ]
        assert bad == []


def auth(password: str = PASSWORD, user: str = "prometheus") -> tuple[str, str]:
    return ("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())


LONG = "a" * 9000
# (id, request, acceptable statuses)
TABLE: list[tuple[str, bytes, set[int]]] = [
    ("unknown path", request("/nope"), {404}),
    ("unknown nested path", request("/metrics/extra"), {404}),
    ("percent-encoded junk path", request("/%ff%fe%00"), {404, 400}),
    ("dot segments", request("/../../etc/passwd"), {404, 400}),
    ("POST metrics", request("/metrics", "POST"), {405}),
    ("PUT health", request("/api/health/checkpointer", "PUT"), {405}),
    ("DELETE landing", request("/", "DELETE"), {405}),
    ("TRACE", request("/metrics", "TRACE"), {405}),
    ("OPTIONS", request("/metrics", "OPTIONS"), {405}),
    ("lowercase method", request("/metrics", "get"), {400, 405}),
    ("junk method", b"G\x01T /metrics HTTP/1.1\r\nHost: x\r\n\r\n", {400}),
    ("CONNECT", b"CONNECT 127.0.0.1:80 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
     {405}),
    ("CONNECT to a path", request("/metrics", "CONNECT"), {405}),
    ("CONNECT to an unknown path", request("/nope", "CONNECT"), {405}),
    ("HEAD metrics", request("/metrics", "HEAD"), {200}),
    ("oversized header", request("/metrics", headers=(("X-Long", LONG),)), {400, 431}),
    ("oversized URL", request("/metrics?" + LONG), {400, 414}),
    ("oversized path", request("/" + LONG), {400, 414}),
    ("many headers", request("/metrics", headers=tuple((f"X-{i}", "v" * 100) for i in range(400))),
     {200, 400, 431}),
    ("header without colon", b"GET /metrics HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n", {400}),
    ("folded header", b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", {400}),
    ("space before colon", b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-A : a\r\n\r\n", {400}),
    ("NUL in header", b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", {400}),
    ("8-bit header value",
     b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: \xff\xfe\r\nConnection: close\r\n\r\n",
     {200, 400}),
    ("bare LF line ends", b"GET /metrics HTTP/1.1\nHost: x\nConnection: close\n\n", {200, 400}),
    ("no Host on HTTP/1.1", b"GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n", {400}),
    ("HTTP/1.0 without Host", b"GET /metrics HTTP/1.0\r\n\r\n", {200}),
    ("HTTP/1.0 health", b"GET /api/health/checkpointer HTTP/1.0\r\n\r\n", {200}),
    ("unknown HTTP version", request("/metrics", version="HTTP/9.9"), {200, 400, 505}),
    ("not HTTP", request("/metrics", version="SPDY/3"), {400}),
    ("absolute-form target", request("http://other.example/metrics"), {200, 400, 404}),
    ("Content-Length and chunked", request("/metrics", headers=(
        ("Content-Length", "3"), ("Transfer-Encoding", "chunked"))), {400}),
    ("negative Content-Length", request("/metrics", headers=(("Content-Length", "-1"),)), {400}),
    ("OpenMetrics with a word for version", request("/metrics", headers=(
        ("Accept", "application/openmetrics-text; version=latest"),)), {200}),
    ("text with a word for version", request("/metrics", headers=(
        ("Accept", "text/plain; version=abc"),)), {200}),
    ("version with a suffix", request("/metrics", headers=(
        ("Accept", "application/openmetrics-text; version=1.0.0-rc1"),)), {200}),
    ("empty version parts", request("/metrics", headers=(
        ("Accept", "application/openmetrics-text; version=1..0"),)), {200}),
    ("huge version", request("/metrics", headers=(
        ("Accept", "application/openmetrics-text; version=" + "9" * 5000),)), {200}),
    ("unknown escaping", request("/metrics", headers=(
        ("Accept", "application/openmetrics-text; version=1.0.0; escaping=nonsense"),)), {200}),
    ("separators only", request("/metrics", headers=(("Accept", ";;,,;=,=;"),)), {200}),
    ("many Accept entries", request("/metrics", headers=(("Accept", "text/html," * 800),)),
     {200}),
    ("two Accept headers", request("/metrics", headers=(
        ("Accept", "text/plain; version=x"), ("Accept", "application/openmetrics-text"))), {200}),
    ("gzip refused with q=0", request("/metrics", headers=(("Accept-Encoding", "gzip;q=0"),)),
     {200}),
    ("unknown encodings", request("/metrics", headers=(("Accept-Encoding", "br, zstd, x"),)),
     {200}),
    ("encoding garbage", request("/metrics", headers=(("Accept-Encoding", ",;q=;,*;q=x"),)),
     {200}),
    ("empty name[]", request("/metrics?name[]="), {200}),
    ("non-UTF-8 name[]", request("/metrics?name[]=%ff%fe"), {200}),
    ("non-ASCII name[]", request("/metrics?name[]=" + quote("é☃\U0001f600")), {200}),
    ("NUL in name[]", request("/metrics?name[]=%00"), {200}),
    ("huge name[]", request("/metrics?name[]=" + "x" * 7000), {200}),
    ("many name[]", request("/metrics?" + "&".join(f"name[]=n{i}" for i in range(500))), {200}),
    ("name[] without value", request("/metrics?name[]&name[]=&&=&"), {200}),
    ("bad percent escapes", request("/metrics?name[]=%zz%&%"), {200, 400}),
    ("raw 8-bit query",
     b"GET /metrics?name[]=\xff HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", {200, 400}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("raw", "allowed"), [(r, a) for _, r, a in TABLE], ids=[n for n, *_ in TABLE]
)
def test_bad_requests_get_a_4xx_or_a_normal_answer(
    server: Server, raw: bytes, allowed: set[int]
) -> None:
    """Each malformed or odd request is answered in time, 2xx or 4xx as listed, never 5xx."""
    status = status_of(exchange(server.port, raw))
    assert status in allowed


def test_unusable_accept_entries_fall_back_to_the_text_format(server: Server) -> None:
    """An Accept entry naming a version nobody can serve is skipped; the next one still counts."""
    header = "application/openmetrics-text; version=latest, application/openmetrics-text"
    [answer] = answers(exchange(server.port, request("/metrics", headers=(("Accept", header),))))
    assert answer.headers["content-type"].startswith("application/openmetrics-text")
    assert answer.body.endswith(b"# EOF\n")
    header = "text/plain; version=abc"
    [answer] = answers(exchange(server.port, request("/metrics", headers=(("Accept", header),))))
    assert answer.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert value(parse_metrics(answer.body.decode()), "langgraph_checkpointer_up") == 1


def test_pipelined_requests_are_answered_in_order(server: Server) -> None:
    """Ten requests in one write get ten answers, in order, on the one connection."""
    targets = [("/healthz", 200), ("/nope", 404), ("/metrics", 200), ("/readyz", 200)] * 2
    targets += [("/api/health/checkpointer", 200), ("/", 200)]
    raw = b"".join(
        f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for target, _ in targets[:-1]
    )
    raw += request(targets[-1][0])
    got = answers(exchange(server.port, raw))
    assert [a.status for a in got] == [status for _, status in targets]
    assert b"langgraph_checkpointer_up 1.0" in got[2].body


def test_stalled_clients_do_not_hold_up_others(server: Server) -> None:
    """100 clients stuck halfway through their request headers cost the others nothing."""
    stalled = []
    try:
        for _ in range(100):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=ANSWER_TIMEOUT)
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: text/pl")
            stalled.append(sock)
        started = time.monotonic()
        for target in ("/metrics", "/api/health/checkpointer", "/healthz", "/readyz") * 3:
            assert get_status(server, target) == 200
        assert time.monotonic() - started < ANSWER_TIMEOUT
        # A stalled request is merely waiting: finished late, it is answered normally.
        stalled[0].sendall(b"ain\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := stalled[0].recv(65536):
            data += chunk
        assert status_of(data) == 200
    finally:
        for sock in stalled:
            sock.close()
    assert get_status(server, "/metrics") == 200


def _reset(sock: socket.socket) -> None:
    # SO_LINGER 0: close with a TCP reset, as a crashed or killed client does.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_clients_that_leave_mid_response_are_harmless(server: Server) -> None:
    """Clients that vanish before, during or after their answers leave the server serving."""
    many = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 30
    for _ in range(5):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=ANSWER_TIMEOUT)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(many)
        sock.recv(1024)
        _reset(sock)
    for target in KNOWN_PATHS:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=ANSWER_TIMEOUT)
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        _reset(sock)
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=ANSWER_TIMEOUT)
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        sock.close()
    for target in KNOWN_PATHS:
        assert get_status(server, target) == 200
    assert server.process.poll() is None


# How long a test lets the server take to close a connection it must close: a cap for a
# wedged server, far above the 0.5 s and 1 s limits of tight_server.
CLOSE_CAP = 30.0


def until_closed(sock: socket.socket, cap: float = CLOSE_CAP) -> bytes:
    """Everything the server sends until it closes the connection; fails after ``cap`` s."""
    deadline = time.monotonic() + cap
    chunks = []
    while True:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            pytest.fail(f"the server kept the connection open for {cap:g} s")
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=ANSWER_TIMEOUT)


@pytest.mark.parametrize(
    "raw",
    [b"GET /\r\n\r\n", b"GET /metrics\r\n\r\n", b"GET / HTTP/0.9\r\n\r\n"],
    ids=["no-version", "no-version-metrics", "http-0.9"],
)
def test_a_request_without_an_http_1_version_gets_400(server: Server, raw: bytes) -> None:
    """An HTTP/0.9-style request line is a bad request, answered with an HTTP/1.x status line."""
    data = exchange(server.port, raw)
    assert data.startswith((b"HTTP/1.0 400 ", b"HTTP/1.1 400 ")), data[:100]


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
        request("/metrics"),
        b"GET /healthz HTTP/1.0\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /readyz HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
    ids=["keep-alive", "close", "http-1.0", "pipelined"],
)
def test_a_client_that_half_closes_after_its_request_gets_the_answer(
    server: Server, raw: bytes
) -> None:
    """shutdown(SHUT_WR) after the request ends the request stream, not the wish for an answer."""
    with connect(server.port) as sock:
        sock.sendall(raw)
        sock.shutdown(socket.SHUT_WR)
        got = answers(until_closed(sock))
    assert [answer.status for answer in got] == [200] * raw.count(b"GET ")


def test_a_connection_that_sends_nothing_is_closed_at_the_header_timeout(
    tight_server: Server,
) -> None:
    """A socket that never sends a byte is closed, without an answer, once headers are late."""
    with connect(tight_server.port) as sock:
        assert until_closed(sock) == b""
    assert get_status(tight_server, "/metrics") == 200


def test_headers_sent_a_byte_at_a_time_are_cut_off(tight_server: Server) -> None:
    """A client that keeps sending, a byte at a time, is closed once its headers are late."""
    with connect(tight_server.port) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        deadline = time.monotonic() + CLOSE_CAP
        while True:
            assert time.monotonic() < deadline, "a client trickling its headers was never cut off"
            try:
                sock.sendall(b"a")
            except (BrokenPipeError, ConnectionResetError):
                break
            # The client's pace, a byte every 50 ms, while it watches for the close.
            readable, _, _ = select.select([sock], [], [], 0.05)
            if readable:
                with contextlib.suppress(ConnectionResetError):
                    assert sock.recv(65536) == b"", "an answer to headers never finished"
                break


def test_an_idle_keep_alive_connection_is_closed_at_the_idle_timeout(
    tight_server: Server,
) -> None:
    """After its answer, a kept-alive connection that asks nothing more is closed."""
    with connect(tight_server.port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        [answer] = answers(until_closed(sock))
    assert answer.status == 200
    assert answer.headers.get("connection", "keep-alive").lower() != "close"


async def test_idle_sockets_past_the_cap_leave_scrapes_answered(capped_server: Server) -> None:
    """100 sockets that send nothing, past the descriptor limit (64) and the cap it lowers (32):
    scrapes and health checks still answer, the cap is logged once, and its end once."""
    idle = []
    try:
        for _ in range(100):
            idle.append(connect(capped_server.port))
        for target in ("/metrics", "/healthz", "/api/health/checkpointer") * 2:
            assert get_status(capped_server, target) == 200
    finally:
        for sock in idle:
            sock.close()
    assert capped_server.process.poll() is None
    events: list[dict[str, object]] = []

    def ended() -> bool:
        events.extend(capped_server.new_events())
        return any(e["event"] == "http_connection_limit_cleared" for e in events)

    await eventually(ended, what="the end of the cap's episode in the log")
    reached = [e for e in events if e["event"] == "http_connection_limit_reached"]
    assert len(reached) == 1
    assert reached[0]["max_connections"] == 32
    cleared = [e for e in events if e["event"] == "http_connection_limit_cleared"]
    assert len(cleared) == 1
    closed_idle = cleared[0]["closed_idle"]
    assert isinstance(closed_idle, int)
    assert closed_idle >= 100 - 32


TOKEN_CHARS = string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~"
tokens = st.text(alphabet=TOKEN_CHARS, min_size=1, max_size=12)
visible = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60)
# Headers that announce a body or change the connection would make the server rightly wait.
RESERVED_HEADERS = {
    "connection",
    "content-length",
    "transfer-encoding",
    "expect",
    "upgrade",
    "host",
}
unicode_text = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=40)

methods = st.one_of(
    st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE"]), tokens
)
segments = st.one_of(
    st.sampled_from(["metrics", "api", "health", "checkpointer", "healthz", "readyz", "", ".."]),
    unicode_text.map(lambda s: quote(s, safe="")),
    st.text(alphabet="%0123456789abcdefABCDEFxz/.", max_size=10),
)
paths = st.one_of(
    st.sampled_from(KNOWN_PATHS),
    st.lists(segments, min_size=1, max_size=5).map(lambda parts: "/" + "/".join(parts)),
)
queries = st.lists(
    st.tuples(st.one_of(st.sampled_from(["name[]", "name", ""]), tokens), unicode_text),
    max_size=8,
).map(lambda pairs: "&".join(f"{quote(k, safe='[]')}={quote(v, safe='')}" for k, v in pairs))
accepts = st.lists(
    st.tuples(
        st.sampled_from(
            ["application/openmetrics-text", "text/plain", "*/*", "text/*", "application/json"]
        ),
        st.lists(
            st.tuples(
                st.one_of(st.sampled_from(["version", "escaping", "q", "charset"]), tokens),
                st.one_of(
                    st.sampled_from(["1.0.0", "0.0.4", "2.0.0", "1", "allow-utf-8", "values"]),
                    st.text(alphabet=string.ascii_letters + string.digits + ".-_+ ", max_size=12),
                ),
            ),
            max_size=3,
        ),
    ),
    min_size=1,
    max_size=3,
).map(lambda entries: ", ".join(m + "".join(f"; {k}={v}" for k, v in ps) for m, ps in entries))
header_names = st.one_of(
    st.sampled_from(
        ["Accept", "Accept-Encoding", "Authorization", "Content-Type", "Range", "Cookie"]
    ),
    tokens.filter(lambda name: name.lower() not in RESERVED_HEADERS),
)
header_values = st.one_of(
    visible,
    st.binary(max_size=40).map(
        lambda raw: raw.replace(b"\r", b"").replace(b"\n", b"").decode("latin-1")
    ),
)
headers = st.lists(
    st.one_of(
        st.tuples(header_names, header_values),
        st.tuples(st.just("Accept"), accepts),
        st.tuples(
            st.just("Accept-Encoding"),
            st.lists(
                st.sampled_from(["gzip", "deflate", "br", "*", "identity;q=0", "gzip;q=0"])
            ).map(", ".join),
        ),
    ),
    max_size=5,
)


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    method=methods,
    path=paths,
    query=queries,
    fields=headers,
    version=st.sampled_from(["HTTP/1.1", "HTTP/1.0"]),
)
def test_fuzzed_requests_never_get_a_server_error(
    server: Server,
    method: str,
    path: str,
    query: str,
    fields: list[tuple[str, str]],
    version: str,
) -> None:
    """Generated methods, paths, query strings and headers get an answer below 500, in time."""
    target = f"{path}?{query}" if query else path
    raw = request(target, method, tuple(fields), version)
    assert 100 <= status_of(exchange(server.port, raw)) < 500


def test_after_the_fuzzing_metrics_are_still_served(server: Server) -> None:
    """The fuzzed sidecar still serves a full exposition, with the database up."""
    [answer] = answers(exchange(server.port, request("/metrics")))
    assert answer.status == 200
    samples = parse_metrics(answer.body.decode())
    assert value(samples, "langgraph_checkpointer_up") == 1
    assert (
        value(samples, "langgraph_checkpointer_scrape_collector_success", collector="tables") == 1
    )


def test_malformed_credentials_get_401(auth_server: Server) -> None:
    """Every malformed Authorization header is a plain 401; the right password still works."""
    malformed = [
        "Basic",
        "Basic ",
        "Basic !!!!",
        "Basic " + base64.b64encode(b"no-colon").decode(),
        "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(),
        "Basic " + base64.b64encode(b"prometheus:" + b"x" * 200).decode(),
        "Basic " + base64.b64encode(b"prometheus:a\x00b").decode(),
        "Basic " + base64.b64encode("prométheus:é".encode()).decode(),
        "Basic " + "QUJD" * 1500,
        "Bearer abc",
        "basic" + " " * 100 + base64.b64encode(b"prometheus:wrong").decode(),
        auth("wrong")[1],
        auth(PASSWORD, "someone")[1],
    ]
    for header in malformed:
        assert get_status(auth_server, "/metrics", ("Authorization", header)) == 401, header
    assert get_status(auth_server, "/metrics", auth()) == 200
    assert get_status(auth_server, "/nope", auth()) == 404
    assert get_status(auth_server, "/nope") == 401
    assert get_status(auth_server, "/healthz") == 200


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(
    path=paths,
    credentials=st.one_of(
        st.tuples(unicode_text, unicode_text).map(
            lambda pair: "Basic " + base64.b64encode(f"{pair[0]}:{pair[1]}".encode()).decode()
        ),
        st.binary(max_size=80).map(lambda raw: "Basic " + base64.b64encode(raw).decode()),
        header_values,
    ),
)
def test_fuzzed_credentials_never_get_a_server_error(
    auth_server: Server, path: str, credentials: str
) -> None:
    """Generated Authorization headers on generated paths: 401 (or 400 for unparsable ones),
    except on /healthz, which this server leaves open: 200, or 400 when unparsable."""
    status = get_status(auth_server, path, ("Authorization", credentials))
    assert status in ({200, 400} if path == "/healthz" else {400, 401})


def test_output_is_valid_after_fuzzing(auth_server: Server) -> None:
    """The protected sidecar still answers the right password with a full exposition."""
    [answer] = answers(exchange(auth_server.port, request("/metrics", headers=(auth(),))))
    assert answer.status == 200
    assert value(parse_metrics(answer.body.decode()), "langgraph_checkpointer_up") == 1


# Hostile clients, as (kind, bytes): "ask" sends a request and half-closes, so the server
# answers or closes; "stall" sends part of a request and waits; "idle" sends nothing.
versions = st.sampled_from(
    ["", " HTTP/1.1", " HTTP/1.0", " HTTP/0.9", " HTTP/2.0", " HTTP/1.1 x", " http/1.1", "  "]
)
request_lines = st.one_of(
    st.binary(max_size=120),
    st.tuples(methods, st.text(alphabet=TOKEN_CHARS + "/?=&%:@ ", max_size=40), versions).map(
        lambda parts: f"{parts[0]} {parts[1]}{parts[2]}".encode("latin-1")
    ),
).map(lambda line: line + b"\r\nHost: x\r\nConnection: close\r\n\r\n")
huge_headers = st.one_of(
    st.integers(min_value=8_000, max_value=100_000).map(
        lambda size: b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Huge: " + b"a" * size + b"\r\n\r\n"
    ),
    st.integers(min_value=100, max_value=1_000).map(
        lambda count: (
            b"GET /metrics HTTP/1.1\r\nHost: x\r\n"
            + b"".join(b"X-%d: v\r\n" % i for i in range(count))
            + b"\r\n"
        )
    ),
)
hostile_clients = st.lists(
    st.one_of(
        st.tuples(st.just("ask"), st.one_of(request_lines, huge_headers)),
        st.tuples(
            st.just("stall"),
            st.binary(max_size=30).map(lambda part: b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + part),
        ),
        st.tuples(st.just("idle"), st.just(b"")),
    ),
    min_size=1,
    max_size=24,
)


def send_quietly(sock: socket.socket, raw: bytes) -> None:
    # The server may answer a huge request and close before the client has sent it all.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        sock.sendall(raw)


@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(clients=hostile_clients)
def test_hostile_clients_never_stop_a_scrape(
    hostile_server: Server, clients: list[tuple[str, bytes]]
) -> None:
    """Malformed request lines, huge headers, stalled headers and idle sockets at once, past
    the cap: a scrape is still answered in time, and every other answer is HTTP/1.x, below 500."""
    port = hostile_server.port
    open_sockets: list[tuple[str, socket.socket]] = []
    try:
        for kind, raw in clients:
            sock = connect(port)
            open_sockets.append((kind, sock))
            send_quietly(sock, raw)
            if kind == "ask":
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_WR)
        [scrape] = answers(exchange(port, request("/metrics")))
        assert scrape.status == 200
        assert value(parse_metrics(scrape.body.decode()), "langgraph_checkpointer_up") == 1
        for kind, sock in open_sockets:
            if kind == "ask":
                data = until_closed(sock)
                if data:
                    assert data.startswith((b"HTTP/1.0 ", b"HTTP/1.1 ")), data[:100]
                    assert status_of(data) < 500
    finally:
        for _, sock in open_sockets:
            sock.close()
    assert hostile_server.process.poll() is None
