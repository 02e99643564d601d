"""The command line: every malformed setting or flag exits 2 with one clean line on stderr."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

import exporter.cli
import exporter.redact
from exporter.cli import LOADTEST_OPTIONS, main
from exporter.settings import SPECS
from exporter.version import VERSION

PASSWORD = "s3cr3t-pw"
GOOD_URL = f"postgresql://exporter:{PASSWORD}@db.example:5432/app"
PREFIX = "checkpoint-exporter: error: "
# Placeholders the test replaces with paths under its own tmp_path.
A_FILE = "{file}"
# Web configuration files the test writes under its tmp_path, by placeholder.
WEB_CONFIGS = {
    "{web:invalid-yaml}": "basic_auth_users: [unclosed\n",
    "{web:unknown-key}": "tls_server_config:\n  cert_file: a.crt\n  ciphers: [x]\n",
    "{web:missing-cert}": "tls_server_config:\n  cert_file: nowhere.crt\n  key_file: nowhere.key\n",
    "{web:plain-password}": f"basic_auth_users:\n  prometheus: {PASSWORD}\n",
    "{web:short-hash}": "basic_auth_users:\n  prometheus: $2y$10$tooshort\n",
}
WEB_FLAG = "--web.config.file"
WEB_ENV = "CHECKPOINT_EXPORTER_WEB_CONFIG_FILE"


def _is_ours(name: str) -> bool:
    return name.startswith(("CHECKPOINT_EXPORTER_", "POSTGRES_")) or name == "USE_POSTGRES_SAVER"


@dataclass(frozen=True)
class Case:
    """One malformed invocation: argv, environment, and the setting the error must name."""

    argv: tuple[str, ...]
    names: str
    env: dict[str, str] = field(default_factory=dict)
    password: str = PASSWORD


def case(id: str, argv: list[str], names: str, **env: str) -> Any:
    return pytest.param(Case(tuple(argv), names, env), id=id)


def env_case(id: str, variable: str, value: str) -> Any:
    return case(id, [], variable, **{variable: value})


def url_case(id: str, url: str, password: str = PASSWORD) -> Any:
    env = {"POSTGRES_CONNECTION_STRING": url}
    return pytest.param(Case((), "POSTGRES_CONNECTION_STRING", env, password), id=id)


INTEGER_SETTINGS = {
    "--pool.min-size": "CHECKPOINT_EXPORTER_POOL_MIN_SIZE",
    "--pool.max-size": "CHECKPOINT_EXPORTER_POOL_MAX_SIZE",
    "--exporter.pool-size": "CHECKPOINT_EXPORTER_EXPORTER_POOL_SIZE",
    "--pool.prepare-threshold": "CHECKPOINT_EXPORTER_PREPARE_THRESHOLD",
    "--web.max-connections": "CHECKPOINT_EXPORTER_WEB_MAX_CONNECTIONS",
}
DURATION_SETTINGS = {
    "--pool.timeout": "CHECKPOINT_EXPORTER_POOL_TIMEOUT",
    "--postgres.connect-timeout": "CHECKPOINT_EXPORTER_CONNECT_TIMEOUT",
    "--collector.timeout": "CHECKPOINT_EXPORTER_COLLECTOR_TIMEOUT",
    "--web.read-header-timeout": "CHECKPOINT_EXPORTER_WEB_READ_HEADER_TIMEOUT",
}
BAD_INTEGERS = {"negative": "-1", "huge": "99999999999999999999", "not-a-number": "ten"}
BAD_DURATIONS = {
    "negative": "-1s",
    "huge": "99999m",
    "hours": "5h",
    "not-a-duration": "abc",
    "zero": "0s",
}

CASES = [
    # Connection strings (environment only).
    url_case("url-mysql-scheme", f"mysql://exporter:{PASSWORD}@db.example:3306/app"),
    url_case("url-port-not-a-number", f"postgresql://u:{PASSWORD}@h:notaport/db"),
    url_case("url-port-out-of-range", f"postgresql://u:{PASSWORD}@h:70000/db"),
    url_case("url-port-zero", f"postgresql://u:{PASSWORD}@h:0/db"),
    url_case("url-empty", ""),
    url_case("url-blank", "   "),
    url_case("url-bad-percent-encoding", "postgresql://u:pa%zzword@h/db", password="pa%zzword"),
    url_case("url-unknown-query-parameter", f"postgresql://u:{PASSWORD}@h/db?bogus=1"),
    url_case("url-unclosed-ipv6-bracket", f"postgresql://u:{PASSWORD}@[::1/db"),
    url_case("conninfo-unterminated-quote", f"host=h password='{PASSWORD}"),
    url_case("conninfo-unknown-keyword", f"host=h password={PASSWORD} bogus=1"),
    url_case("conninfo-bad-port", f"host=h port=abc password={PASSWORD}"),
    url_case("conninfo-plain-words", "just some words"),
    # Listen addresses.
    case("listen-port-too-big", ["--web.listen-address", ":70000"], "--web.listen-address"),
    case("listen-port-negative", ["--web.listen-address=:-1"], "--web.listen-address"),
    env_case("listen-no-port", "CHECKPOINT_EXPORTER_WEB_LISTEN_ADDRESS", "host"),
    env_case("listen-ipv6-unbracketed", "CHECKPOINT_EXPORTER_WEB_LISTEN_ADDRESS", "::1:80"),
    case("listen-empty-port", ["--web.listen-address", "127.0.0.1:"], "--web.listen-address"),
    case("listen-port-word", ["--web.listen-address", "localhost:http"], "--web.listen-address"),
    case("listen-port-underscore", ["--web.listen-address", ":8_0"], "--web.listen-address"),
    case("listen-host-with-slash", ["--web.listen-address", "a/b:80"], "--web.listen-address"),
    case("idle-timeout-two-hours", ["--web.idle-timeout", "2h"], "--web.idle-timeout"),
    env_case("idle-timeout-negative", "CHECKPOINT_EXPORTER_WEB_IDLE_TIMEOUT", "-1s"),
    env_case("max-connections-zero", "CHECKPOINT_EXPORTER_WEB_MAX_CONNECTIONS", "0"),
    case(
        "listen-ipv4-octet-too-big",
        ["--web.listen-address", "999.1.1.1:80"],
        "--web.listen-address",
    ),
    case("listen-ipv4-three-parts", ["--web.listen-address", "10.1.1:80"], "--web.listen-address"),
    case("listen-ipv6-not-hex", ["--web.listen-address", "[::zz]:80"], "--web.listen-address"),
    case("listen-host-empty-label", ["--web.listen-address", "a..b:80"], "--web.listen-address"),
    case("listen-host-leading-hyphen", ["--web.listen-address", "-a.b:80"], "--web.listen-address"),
    env_case("listen-host-comma", "CHECKPOINT_EXPORTER_WEB_LISTEN_ADDRESS", "a,b:80"),
    # Every numeric setting: negative, huge and non-numeric, by flag and by variable.
    *[
        case(f"{flag.lstrip('-')}-{kind}-flag", [f"{flag}={raw}"], flag)
        for flag in INTEGER_SETTINGS
        for kind, raw in BAD_INTEGERS.items()
    ],
    *[
        env_case(f"{variable}-{kind}", variable, raw)
        for variable in INTEGER_SETTINGS.values()
        for kind, raw in BAD_INTEGERS.items()
    ],
    env_case("pool-min-size-fraction", "CHECKPOINT_EXPORTER_POOL_MIN_SIZE", "1.5"),
    env_case("pool-min-size-underscore", "CHECKPOINT_EXPORTER_POOL_MIN_SIZE", "1_0"),
    env_case("pool-max-size-zero", "CHECKPOINT_EXPORTER_POOL_MAX_SIZE", "0"),
    env_case("exporter-pool-size-too-big", "CHECKPOINT_EXPORTER_EXPORTER_POOL_SIZE", "21"),
    # Collector selection.
    case("collectors-unknown", ["--collectors", "pool,bogus"], "--collectors"),
    env_case("collectors-sql", "CHECKPOINT_EXPORTER_COLLECTORS", "pool; DROP TABLE x"),
    case(
        "leader-election-not-a-boolean",
        ["--collector.leader-election", "maybe"],
        "--collector.leader-election",
    ),
    env_case("tables-interval-too-short", "CHECKPOINT_EXPORTER_TABLES_INTERVAL", "500ms"),
    *[
        case(f"{flag.lstrip('-')}-{kind}", [f"{flag}={raw}"], flag)
        for flag in DURATION_SETTINGS
        for kind, raw in BAD_DURATIONS.items()
    ],
    *[
        env_case(f"{variable}-{kind}", variable, raw)
        for variable in DURATION_SETTINGS.values()
        for kind, raw in BAD_DURATIONS.items()
    ],
    # Schema names.
    case("schema-with-quote", ["--postgres.schema", 'a"b'], "--postgres.schema"),
    env_case("schema-with-sql", "POSTGRES_SCHEMA", "x; DROP TABLE y"),
    env_case("schema-uppercase", "POSTGRES_SCHEMA", "Checkpoints"),
    env_case("schema-64-chars", "POSTGRES_SCHEMA", "s" * 64),
    env_case("schema-leading-digit", "POSTGRES_SCHEMA", "1schema"),
    env_case("schema-empty", "POSTGRES_SCHEMA", ""),
    env_case("schema-with-newline", "POSTGRES_SCHEMA", "a\nb"),
    # Logging.
    env_case("log-level-unknown", "CHECKPOINT_EXPORTER_LOG_LEVEL", "loud"),
    case("log-level-trace-flag", ["--log.level", "trace"], "--log.level"),
    case("log-format-unknown", ["--log.format", "xml"], "--log.format"),
    env_case("log-format-env", "CHECKPOINT_EXPORTER_LOG_FORMAT", "yaml"),
    # Booleans.
    env_case("use-postgres-saver-maybe", "USE_POSTGRES_SAVER", "maybe"),
    env_case("use-postgres-saver-empty", "USE_POSTGRES_SAVER", ""),
    case("fallback-to-memory-2", ["--fallback-to-memory=2"], "--fallback-to-memory"),
    # Paths and names.
    case("telemetry-path-relative", ["--web.telemetry-path", "metrics"], "--web.telemetry-path"),
    case("telemetry-path-query", ["--web.telemetry-path", "/m?x=1"], "--web.telemetry-path"),
    case("telemetry-path-reserved", ["--web.telemetry-path", "/healthz"], "--web.telemetry-path"),
    case("telemetry-path-pattern", ["--web.telemetry-path", "/{x}"], "--web.telemetry-path"),
    case("telemetry-path-bad-regex", ["--web.telemetry-path", "/{x:[}"], "--web.telemetry-path"),
    env_case("telemetry-path-env-brace", "CHECKPOINT_EXPORTER_WEB_TELEMETRY_PATH", "/m}"),
    env_case("application-name-64-chars", "CHECKPOINT_EXPORTER_APPLICATION_NAME", "a" * 64),
    env_case("application-name-non-ascii", "CHECKPOINT_EXPORTER_APPLICATION_NAME", "agent-é"),
    case("data-dir-is-a-file", ["--embedded.data-dir", A_FILE], "--embedded.data-dir"),
    env_case("data-dir-env-is-a-file", "CHECKPOINT_EXPORTER_DATA_DIR", A_FILE),
    case(
        "data-dir-under-a-file", ["--embedded.data-dir", A_FILE + "/pgdata"], "--embedded.data-dir"
    ),
    env_case("data-dir-empty", "CHECKPOINT_EXPORTER_DATA_DIR", ""),
    # Web configuration files.
    case("web-config-missing-file", [WEB_FLAG, "/nonexistent/web.yml"], WEB_FLAG),
    env_case("web-config-is-a-directory", WEB_ENV, "/"),
    case("web-config-not-a-mapping", [WEB_FLAG, A_FILE], WEB_FLAG),
    *[case(f"web-config-{name[5:-1]}", [WEB_FLAG, name], WEB_FLAG) for name in WEB_CONFIGS],
    env_case("web-config-env-plain-password", WEB_ENV, "{web:plain-password}"),
    case(
        "web-healthz-open-not-a-boolean", ["--web.healthz-open", "sometimes"], "--web.healthz-open"
    ),
    # Cross-field rule.
    case(
        "pool-min-above-max",
        ["--pool.min-size", "8", "--pool.max-size", "4"],
        "--pool.min-size",
    ),
    # Unknown or incomplete flags and commands.
    case("unknown-flag", ["--no-such-flag"], "--no-such-flag"),
    case("unknown-flag-with-password", ["--postgres.password", PASSWORD], "--postgres.password"),
    case("unknown-flag-after-command", ["serve", "--verbose"], "--verbose"),
    case("unknown-command", ["bogus"], "bogus"),
    case("flag-without-value", ["--log.level"], "--log.level"),
    case("flag-with-newline", ["--bad\nflag"], "--bad"),
    case("env-only-setting-as-flag", ["--postgres.connection-string", GOOD_URL], "--postgres"),
    # Load-test options.
    case("loadtest-workflows-zero", ["loadtest", "--workflows", "0"], "--workflows"),
    case("loadtest-workflows-huge", ["loadtest", "--workflows", "10001"], "--workflows"),
    case("loadtest-workflows-word", ["loadtest", "--workflows", "many"], "--workflows"),
    case("loadtest-duration-zero", ["loadtest", "--duration", "0s"], "--duration"),
    case("loadtest-duration-two-days", ["loadtest", "--duration", "48h"], "--duration"),
    case("loadtest-think-time-word", ["loadtest", "--think-time", "x"], "--think-time"),
    case("loadtest-think-time-negative", ["loadtest", "--think-time=-1ms"], "--think-time"),
    case("loadtest-state-kb-nan", ["loadtest", "--state-kb", "nan"], "--state-kb"),
    case("loadtest-state-kb-zero", ["loadtest", "--state-kb", "0"], "--state-kb"),
    case("loadtest-state-kb-newline", ["loadtest", "--state-kb", "99999\n"], "--state-kb"),
    case("loadtest-output-xml", ["loadtest", "--output", "xml"], "--output"),
    case("loadtest-bad-setting", ["loadtest", "--pool.max-size", "0"], "--pool.max-size"),
    case("serve-rejects-loadtest-option", ["serve", "--workflows", "4"], "--workflows"),
]


def clear_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Remove every variable the exporter reads, so only the case's own values count."""
    for name in list(os.environ):
        if _is_ours(name):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))


@pytest.fixture(autouse=True)
def no_server(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace serving, load tests and logging setup, so a wrongly accepted case returns 0 fast."""
    started: list[str] = []

    async def serve(*_: object) -> int:
        started.append("serve")
        return 0

    async def loadtest(*_: object) -> int:
        started.append("loadtest")
        return 0

    monkeypatch.setattr(exporter.cli, "serve", serve)
    monkeypatch.setattr(exporter.cli, "loadtest", loadtest)
    monkeypatch.setattr(exporter.cli, "configure_logging", lambda *_: None)
    monkeypatch.setattr(exporter.cli, "disable_created_metrics", lambda: None)
    monkeypatch.setattr(exporter.redact, "_secrets", set())
    return started


def test_there_are_enough_cases() -> None:
    """The table holds at least 30 malformed invocations, each with a unique id."""
    ids = [param.id for param in CASES]
    assert len(ids) >= 30
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize("bad", CASES)
def test_malformed_setting_exits_2_with_one_clean_line(
    bad: Case,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    no_server: list[str],
) -> None:
    """A bad value exits 2 with one 'error:' line naming the setting, no traceback, no password."""
    a_file = tmp_path / "not-a-directory"
    a_file.write_text("regular file\n")

    for placeholder, content in WEB_CONFIGS.items():
        (tmp_path / f"{placeholder[5:-1]}.yml").write_text(content)

    def fill(text: str) -> str:
        for placeholder in WEB_CONFIGS:
            text = text.replace(placeholder, str(tmp_path / f"{placeholder[5:-1]}.yml"))
        return text.replace(A_FILE, str(a_file))

    clear_environment(monkeypatch, tmp_path)
    monkeypatch.setenv("POSTGRES_CONNECTION_STRING", GOOD_URL)
    for name, value in bad.env.items():
        monkeypatch.setenv(name, fill(value))

    status = main([fill(arg) for arg in bad.argv])

    out, err = capsys.readouterr()
    assert status == 2, err
    assert no_server == []
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert err.endswith("\n")
    assert lines[0].startswith(PREFIX)
    assert bad.names in lines[0]
    assert "Traceback" not in out + err
    assert bad.password not in out + err
    assert PASSWORD not in out + err


def test_env_error_names_variable_and_flag(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad variable's message names the variable, its flag and the rejected value."""
    clear_environment(monkeypatch, tmp_path)
    monkeypatch.setenv("CHECKPOINT_EXPORTER_LOG_LEVEL", "loud")
    assert main([]) == 2
    assert capsys.readouterr().err == (
        f"{PREFIX}CHECKPOINT_EXPORTER_LOG_LEVEL (--log.level): "
        "expected one of debug, info, warn, warning, error, got 'loud'\n"
    )


@pytest.mark.parametrize(
    "argv",
    [["--pool.timeout", "-1s"], ["--pool.timeout=-1s"], ["serve", "--pool.timeout", "-1s"]],
    ids=["separate", "joined", "after-command"],
)
def test_a_negative_value_reports_the_range(
    argv: list[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A value that starts with '-' is the flag's value, not another flag: its range is reported."""
    clear_environment(monkeypatch, tmp_path)
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        f"{PREFIX}CHECKPOINT_EXPORTER_POOL_TIMEOUT (--pool.timeout): "
        "must be between 0.1s and 3600s, got -1s\n"
    )


def test_a_negative_loadtest_option_reports_the_range(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Load-test options take values starting with '-' the same way."""
    clear_environment(monkeypatch, tmp_path)
    assert main(["loadtest", "--workflows", "-4"]) == 2
    assert capsys.readouterr().err == f"{PREFIX}--workflows: must be between 1 and 10000, got -4\n"


def test_listen_address_hosts_that_parse(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, no_server: list[str]
) -> None:
    """Host names (with the underscores of container names), IPv4 and bracketed IPv6 parse."""
    clear_environment(monkeypatch, tmp_path)
    for address in ("my_service:80", "exporter-1.example.com:9877", "10.0.0.1:80", "[fe80::1]:80"):
        assert main(["--web.listen-address", address]) == 0, address
    assert no_server == ["serve"] * 4


def test_flag_overrides_bad_variable(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    no_server: list[str],
) -> None:
    """A good flag replaces a bad variable's value, so the command starts serving."""
    clear_environment(monkeypatch, tmp_path)
    monkeypatch.setenv("POSTGRES_CONNECTION_STRING", GOOD_URL)
    monkeypatch.setenv("CHECKPOINT_EXPORTER_LOG_LEVEL", "loud")
    assert main(["--log.level", "debug"]) == 0
    assert no_server == ["serve"]
    assert capsys.readouterr().err == ""


def test_good_loadtest_options_are_converted(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, no_server: list[str]
) -> None:
    """Valid load-test options parse and the load test (not the server) runs."""
    clear_environment(monkeypatch, tmp_path)
    argv = ["loadtest", "--workflows", "4", "--duration", "2s", "--think-time", "0", "--check"]
    assert main(argv) == 0
    assert no_server == ["loadtest"]
    command, _, namespace = exporter.cli.parse(argv)
    assert command == "loadtest"
    assert (namespace.workflows, namespace.duration, namespace.think_time) == (4, 2.0, 0.0)
    assert namespace.state_kb == 4.0


@pytest.mark.parametrize("argv", [["--help"], ["-h"], ["serve", "--help"], ["loadtest", "--help"]])
def test_help_exits_0(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """--help prints usage on stdout and exits 0."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    out, err = capsys.readouterr()
    assert exited.value.code == 0
    assert out.startswith("usage: checkpoint-exporter")
    assert err == ""


def test_help_lists_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    """serve --help and loadtest --help list every setting's flag; loadtest lists its options."""
    for command in ("serve", "loadtest"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        out = capsys.readouterr().out
        for spec in SPECS:
            if spec.flag is not None:
                assert spec.flag in out
                assert spec.env in out
    for name in LOADTEST_OPTIONS:
        assert "--" + name.replace("_", "-") in out


def test_help_lists_every_setting_with_its_default(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """serve --help shows every setting, those without a flag too, with its variable and default."""
    monkeypatch.setenv("COLUMNS", "10000")  # no wrapping, which could split a default
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    for spec in SPECS:
        assert f"{spec.help} Env: {spec.env}. Default: {spec.default}." in out


def test_version_prints_the_version(capsys: pytest.CaptureFixture[str]) -> None:
    """--version prints the installed package's version on stdout and exits 0."""
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert version("checkpoint-exporter") == VERSION
    assert capsys.readouterr().out == f"checkpoint-exporter {VERSION}\n"


def _clean_environment(tmp_path: Path) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not _is_ours(name)}
    env["XDG_DATA_HOME"] = str(tmp_path / "xdg")
    env["POSTGRES_CONNECTION_STRING"] = GOOD_URL
    return env


def _console_script() -> str | None:
    beside_python = Path(sys.executable).parent / "checkpoint-exporter"
    if beside_python.exists():
        return str(beside_python)
    return shutil.which("checkpoint-exporter")


def _run(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize(
    ("argv", "extra_env", "names"),
    [
        pytest.param(["--log.level", "loud"], {}, "--log.level", id="bad-flag"),
        pytest.param(
            [],
            {"POSTGRES_CONNECTION_STRING": f"postgresql://u:{PASSWORD}@h:notaport/db"},
            "POSTGRES_CONNECTION_STRING",
            id="bad-url",
        ),
        pytest.param(
            ["--no-such-flag", PASSWORD],
            {"POSTGRES_PASSWORD": PASSWORD},
            "--no-such-flag",
            id="unknown-flag",
        ),
    ],
)
def test_python_m_exporter_exits_2_cleanly(
    argv: list[str], extra_env: dict[str, str], names: str, tmp_path: Path
) -> None:
    """The real `python -m exporter` process exits 2 with one clean stderr line."""
    env = _clean_environment(tmp_path) | extra_env
    done = _run([sys.executable, "-m", "exporter", *argv], env, tmp_path)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(PREFIX)
    assert names in lines[0]
    assert "Traceback" not in done.stderr
    assert PASSWORD not in done.stdout + done.stderr


def test_console_script_exits_2_cleanly(tmp_path: Path) -> None:
    """The installed checkpoint-exporter script exits 2 with one clean stderr line."""
    script = _console_script()
    if script is None:
        pytest.skip("the checkpoint-exporter script is not installed beside this Python")
    env = _clean_environment(tmp_path) | {"CHECKPOINT_EXPORTER_POOL_TIMEOUT": "-1s"}
    done = _run([script], env, tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith(f"{PREFIX}CHECKPOINT_EXPORTER_POOL_TIMEOUT")
    assert "Traceback" not in done.stderr
    assert PASSWORD not in done.stdout + done.stderr


def test_a_taken_listen_address_exits_1_with_one_line(tmp_path: Path) -> None:
    """Binding an address in use fails start with one line naming the setting and the reason."""
    env = _clean_environment(tmp_path) | {"USE_POSTGRES_SAVER": "false"}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        done = _run(
            [sys.executable, "-m", "exporter", "--web.listen-address", address], env, tmp_path
        )
    assert done.returncode == 1, done.stderr
    assert done.stderr == (
        f"{PREFIX}CHECKPOINT_EXPORTER_WEB_LISTEN_ADDRESS (--web.listen-address): "
        f"cannot listen on {address}: Address already in use\n"
    )


def test_python_m_exporter_version(tmp_path: Path) -> None:
    """`python -m exporter --version` prints the version and exits 0."""
    done = _run(
        [sys.executable, "-m", "exporter", "--version"], _clean_environment(tmp_path), tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"checkpoint-exporter {VERSION}\n"
    assert done.stderr == ""


def test_without_the_embedded_extra_a_missing_database_is_one_line(tmp_path: Path) -> None:
    """No connection string and no pgserver: one line naming the extra, exit 2, no traceback."""
    script = (
        "import sys; sys.modules['pgserver'] = None; "  # as if the extra were not installed
        "from exporter.cli import main; sys.exit(main(['verify']))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "CHECKPOINT_"))}
    env["CHECKPOINT_EXPORTER_DATA_DIR"] = str(tmp_path / "pgdata")
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "checkpoint-exporter[embedded]" in lines[0]
    assert "Traceback" not in done.stderr
