"""Settings.load: defaults, environment variables, flags, parsers and cross-field checks."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

import exporter.redact
from exporter.redact import redact
from exporter.settings import (
    DEFAULT_PORT,
    DEFAULT_SCHEMA,
    RESERVED_PATHS,
    SPECS,
    ListenAddress,
    Settings,
    SettingsError,
    Spec,
)
from exporter.web_config import load_web_config

WEB_CONFIGS = Path(__file__).resolve().parent / "web_configs"
ONE_USER = str(WEB_CONFIGS / "one-user.yml")
TWO_USERS = str(WEB_CONFIGS / "two-users.yml")

SPEC_BY_FIELD = {spec.field: spec for spec in SPECS}

# One good, non-default value per setting: (raw text, parsed value).
GOOD: dict[str, tuple[str, Any]] = {
    "use_postgres_saver": ("false", False),
    "postgres_connection_string": (
        "postgresql://exporter@db.example:5432/app",
        "postgresql://exporter@db.example:5432/app",
    ),
    "postgres_schema": ("checkpoints_v2", "checkpoints_v2"),
    "listen_address": ("127.0.0.1:9100", ListenAddress("127.0.0.1", 9100)),
    "telemetry_path": ("/custom-metrics", "/custom-metrics"),
    "web_read_header_timeout": ("5s", 5.0),
    "web_idle_timeout": ("0", 0.0),
    "web_max_connections": ("64", 64),
    "log_level": ("debug", "debug"),
    "log_format": ("json", "json"),
    "data_dir": (
        "/nonexistent-checkpoint-exporter/pgdata",
        Path("/nonexistent-checkpoint-exporter/pgdata"),
    ),
    "pool_min_size": ("3", 3),
    "pool_max_size": ("20", 20),
    "pool_timeout": ("10s", 10.0),
    "prepare_threshold": ("none", None),
    "application_name": ("my-agent", "my-agent"),
    "fallback_to_memory": ("true", True),
    "rollout_percent": ("12.5", 12.5),
    "rollout_include": ("internal-*, qa-?", ("internal-*", "qa-?")),
    "rollout_include_key": ("canary_cohort", "canary_cohort"),
    "saver_shards": ("4", 4),
    "connect_timeout": ("250ms", 0.25),
    "collector_timeout": ("1m", 60.0),
    "health_timeout": ("500ms", 0.5),
    "exporter_pool_size": ("3", 3),
    "collectors": ("tables, pool", ("pool", "tables")),
    "leader_election": ("false", False),
    "tables_interval": ("5m", 300.0),
    "migrations_expected": ("9", 9),
    "tracking": ("false", False),
    "tracking_flush_interval": ("250ms", 0.25),
    "stuck_after": ("1h", 3600.0),
    "prune_threshold": ("50", 50),
    "canary_interval": ("0", 0.0),
    "canary_timeout": ("2s", 2.0),
    "recovery_limit": ("10", 10),
    "integrity_batch": ("500", 500),
    "integrity_orphan_grace": ("0", 0.0),
    "integrity_interval": ("0", 0.0),
    "web_config_file": (ONE_USER, load_web_config(ONE_USER)),
    "web_healthz_open": ("false", False),
}

# A second good value, different from GOOD's, for settings that have a flag.
OTHER: dict[str, tuple[str, Any]] = {
    "use_postgres_saver": ("yes", True),
    "postgres_schema": ("other_schema", "other_schema"),
    "listen_address": (":9200", ListenAddress("", 9200)),
    "telemetry_path": ("/other", "/other"),
    "web_read_header_timeout": ("500ms", 0.5),
    "web_idle_timeout": ("5m", 300.0),
    "web_max_connections": ("1000", 1000),
    "log_level": ("error", "error"),
    "log_format": ("console", "console"),
    "data_dir": (
        "/nonexistent-checkpoint-exporter/other",
        Path("/nonexistent-checkpoint-exporter/other"),
    ),
    "pool_min_size": ("0", 0),
    "pool_max_size": ("5", 5),
    "pool_timeout": ("2", 2.0),
    "prepare_threshold": ("7", 7),
    "application_name": ("other-agent", "other-agent"),
    "fallback_to_memory": ("off", False),
    "rollout_percent": ("0", 0.0),
    "rollout_include": ("", ()),
    "rollout_include_key": ("", None),
    "saver_shards": ("auto", None),
    "connect_timeout": ("3s", 3.0),
    "collector_timeout": ("500ms", 0.5),
    "health_timeout": ("2s", 2.0),
    "exporter_pool_size": ("1", 1),
    "collectors": ("activity", ("activity",)),
    "leader_election": ("on", True),
    "tables_interval": ("90", 90.0),
    "migrations_expected": ("unknown", None),
    "tracking": ("on", True),
    "tracking_flush_interval": ("2s", 2.0),
    "stuck_after": ("30m", 1800.0),
    "prune_threshold": ("5000", 5000),
    "canary_interval": ("10s", 10.0),
    "canary_timeout": ("1s", 1.0),
    "recovery_limit": ("3", 3),
    "integrity_batch": ("7", 7),
    "integrity_orphan_grace": ("5m", 300.0),
    "integrity_interval": ("1m", 60.0),
    "web_config_file": (TWO_USERS, load_web_config(TWO_USERS)),
    "web_healthz_open": ("yes", True),
}

FLAGGED = [spec for spec in SPECS if spec.flag is not None]


@pytest.fixture(autouse=True)
def isolated_secrets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each test starts with no registered secrets and a data home of its own."""
    monkeypatch.setattr(exporter.redact, "_secrets", set())
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))


def test_tables_cover_every_setting() -> None:
    """The value tables of this module name every setting in SPECS, so none goes untested."""
    assert set(GOOD) == set(SPEC_BY_FIELD)
    assert set(OTHER) == {spec.field for spec in FLAGGED}
    assert {field.name for field in dataclasses.fields(Settings)} == set(SPEC_BY_FIELD)


def test_defaults_without_environment_or_flags(tmp_path: Path) -> None:
    """With nothing set, load() gives the documented defaults and an embedded database."""
    settings = Settings.load({}, {})
    assert settings == Settings()
    assert settings.use_postgres_saver is True
    assert settings.postgres_connection_string is None
    assert settings.postgres_schema == DEFAULT_SCHEMA
    assert settings.listen_address == ListenAddress("", DEFAULT_PORT)
    assert settings.telemetry_path == "/metrics"
    assert settings.log_level == "info"
    assert settings.log_format == "auto"
    assert settings.data_dir == tmp_path / "xdg" / "checkpoint-exporter" / "pgdata"
    assert (settings.pool_min_size, settings.pool_max_size) == (1, 10)
    assert settings.prepare_threshold == 0
    assert settings.fallback_to_memory is False
    assert settings.embedded is True


def test_default_data_dir_without_xdg_data_home(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without XDG_DATA_HOME the data directory lives under ~/.local/share."""
    monkeypatch.delenv("XDG_DATA_HOME")
    expected = Path.home() / ".local" / "share" / "checkpoint-exporter" / "pgdata"
    assert Settings.load({}, {}).data_dir == expected


@pytest.mark.parametrize(
    "spec", [s for s in SPECS if not s.default.startswith("(")], ids=lambda s: s.field
)
def test_documented_default_parses_to_the_actual_default(
    spec: Spec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default shown in --help and the README parses to the value Settings really uses.

    A default in parentheses, such as ``(embedded)``, describes an unset setting instead.
    """
    monkeypatch.delenv("XDG_DATA_HOME")
    assert spec.parse(spec.default) == getattr(Settings(), spec.field)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.env)
def test_each_environment_variable_is_read(spec: Spec) -> None:
    """Setting a variable, and nothing else, changes exactly its own setting."""
    raw, expected = GOOD[spec.field]
    settings = Settings.load({spec.env: raw}, {})
    assert getattr(settings, spec.field) == expected
    assert dataclasses.replace(settings, **{spec.field: getattr(Settings(), spec.field)}) == (
        Settings()
    )


@pytest.mark.parametrize("spec", FLAGGED, ids=lambda s: s.flag)
def test_flag_beats_its_environment_variable(spec: Spec) -> None:
    """When both are given, the flag's value wins over the variable's."""
    env_raw, env_value = GOOD[spec.field]
    flag_raw, flag_value = OTHER[spec.field]
    assert env_value != flag_value
    settings = Settings.load({spec.env: env_raw}, {spec.field: flag_raw})
    assert getattr(settings, spec.field) == flag_value


@pytest.mark.parametrize("spec", FLAGGED, ids=lambda s: s.flag)
def test_absent_flag_falls_back_to_the_variable(spec: Spec) -> None:
    """A flag argparse left as None does not hide the environment variable."""
    raw, expected = GOOD[spec.field]
    settings = Settings.load({spec.env: raw}, {spec.field: None})
    assert getattr(settings, spec.field) == expected


def test_load_reads_the_process_environment_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an explicit mapping, load() reads os.environ."""
    monkeypatch.setenv("CHECKPOINT_EXPORTER_POOL_MAX_SIZE", "33")
    monkeypatch.setenv("POSTGRES_SCHEMA", "from_env")
    settings = Settings.load()
    assert settings.pool_max_size == 33
    assert settings.postgres_schema == "from_env"


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [
        ("5", 5.0),
        ("5s", 5.0),
        ("250ms", 0.25),
        ("1m", 60.0),
        ("1.5s", 1.5),
        ("0.5", 0.5),
        (" 2s ", 2.0),
        ("3600s", 3600.0),
        ("2h", 7200.0),
        ("0.5d", 43_200.0),
    ],
)
def test_duration_forms(raw: str, seconds: float) -> None:
    """Durations accept bare seconds and the ms, s, m, h and d units."""
    settings = Settings.load({"CHECKPOINT_EXPORTER_CANARY_INTERVAL": raw}, {})
    assert settings.canary_interval == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("raw", "address"),
    [
        (":9877", ListenAddress("", 9877)),
        ("127.0.0.1:0", ListenAddress("127.0.0.1", 0)),
        ("[::1]:9100", ListenAddress("::1", 9100)),
        ("[::]:80", ListenAddress("::", 80)),
        ("localhost:65535", ListenAddress("localhost", 65535)),
        ("0.0.0.0:9877", ListenAddress("0.0.0.0", 9877)),
    ],
)
def test_listen_address_forms(raw: str, address: ListenAddress) -> None:
    """Listen addresses accept :port, host:port and bracketed IPv6, and print back the same."""
    settings = Settings.load({}, {"listen_address": raw})
    assert settings.listen_address == address
    assert str(settings.listen_address) == raw


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("true", True),
        ("True", True),
        ("1", True),
        ("yes", True),
        ("on", True),
        (" TRUE ", True),
        ("false", False),
        ("FALSE", False),
        ("0", False),
        ("no", False),
        ("off", False),
    ],
)
def test_boolean_forms(raw: str, value: bool) -> None:
    """Booleans accept true/false, 1/0, yes/no and on/off in any case."""
    settings = Settings.load({"CHECKPOINT_EXPORTER_FALLBACK_TO_MEMORY": raw}, {})
    assert settings.fallback_to_memory is value


@pytest.mark.parametrize(
    ("raw", "value"),
    [("none", None), ("NONE", None), ("off", None), ("disabled", None), ("0", 0), ("5", 5)],
)
def test_prepare_threshold_forms(raw: str, value: int | None) -> None:
    """The prepare threshold is a whole number or none (for PgBouncer in transaction mode)."""
    settings = Settings.load({"CHECKPOINT_EXPORTER_PREPARE_THRESHOLD": raw}, {})
    assert settings.prepare_threshold == value


@pytest.mark.parametrize(("raw", "level"), [("WARN", "warning"), ("Warning", "warning")])
def test_log_level_is_normalised(raw: str, level: str) -> None:
    """Log levels ignore case and warn means warning."""
    assert Settings.load({"CHECKPOINT_EXPORTER_LOG_LEVEL": raw}, {}).log_level == level


def test_schema_of_63_characters_is_accepted() -> None:
    """The longest PostgreSQL identifier (63 characters) is a valid schema name."""
    name = "s" * 63
    assert Settings.load({"POSTGRES_SCHEMA": name}, {}).postgres_schema == name


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://exporter:pw@db.example:5432/app?sslmode=require",
        "postgres://db.example/app",
        "postgresql:///app?host=/var/run/postgresql",
        "host=db.example port=5432 dbname=app user=exporter",
        "host=a.example,b.example port=5432,5433 dbname=app",
    ],
)
def test_connection_string_forms(dsn: str) -> None:
    """URLs, conninfo strings and multi-host lists are accepted verbatim."""
    settings = Settings.load({"POSTGRES_CONNECTION_STRING": dsn}, {})
    assert settings.postgres_connection_string == dsn
    assert settings.embedded is False


def test_connection_string_password_is_registered_as_secret() -> None:
    """Loading a connection string makes its password masked everywhere afterwards."""
    Settings.load({"POSTGRES_CONNECTION_STRING": "host=db password=s3cr3t-pw"}, {})
    assert redact("auth failed for s3cr3t-pw") == "auth failed for ***"


def test_postgres_password_is_registered_as_secret() -> None:
    """POSTGRES_PASSWORD is masked everywhere once settings are loaded."""
    Settings.load({"POSTGRES_PASSWORD": "an0ther-pw"}, {})
    assert redact("value an0ther-pw here") == "value *** here"


def test_connection_string_is_hidden_from_repr() -> None:
    """repr(settings) never shows the connection string (it may hold a password)."""
    settings = Settings.load({"POSTGRES_CONNECTION_STRING": "postgresql://u:s3cr3t-pw@h/db"}, {})
    assert "s3cr3t-pw" not in repr(settings)


def test_relative_data_dir_is_made_absolute(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A relative data directory is resolved against the working directory at load time."""
    monkeypatch.chdir(tmp_path)
    settings = Settings.load({}, {"data_dir": "pgdata"})
    assert settings.data_dir == tmp_path / "pgdata"


def test_existing_directory_is_a_valid_data_dir(tmp_path: Path) -> None:
    """An existing directory is accepted as the data directory."""
    assert Settings.load({}, {"data_dir": str(tmp_path)}).data_dir == tmp_path


def test_memory_saver_is_not_embedded() -> None:
    """With the PostgreSQL saver switched off, no embedded database is needed."""
    assert Settings.load({"USE_POSTGRES_SAVER": "false"}, {}).embedded is False


def test_pool_min_size_may_equal_max_size() -> None:
    """A fixed-size pool (min == max) is allowed."""
    settings = Settings.load({}, {"pool_min_size": "4", "pool_max_size": "4"})
    assert (settings.pool_min_size, settings.pool_max_size) == (4, 4)


def test_pool_min_size_above_max_size_is_rejected() -> None:
    """load() rejects min > max and names the minimum's variable and flag."""
    with pytest.raises(
        SettingsError, match=r"CHECKPOINT_EXPORTER_POOL_MIN_SIZE \(--pool.min-size\)"
    ):
        Settings.load(
            {"CHECKPOINT_EXPORTER_POOL_MIN_SIZE": "5", "CHECKPOINT_EXPORTER_POOL_MAX_SIZE": "2"}, {}
        )


def test_pool_min_size_above_default_max_size_is_rejected() -> None:
    """A minimum above the default maximum (10) is rejected too."""
    with pytest.raises(SettingsError, match="must not exceed"):
        Settings.load({}, {"pool_min_size": "11"})


@pytest.mark.parametrize("path", sorted(RESERVED_PATHS - {"/"}))
def test_telemetry_path_may_not_collide_with_reserved_paths(path: str) -> None:
    """The metrics path cannot shadow the health or landing endpoints."""
    with pytest.raises(SettingsError, match="CHECKPOINT_EXPORTER_WEB_TELEMETRY_PATH"):
        Settings.load({"CHECKPOINT_EXPORTER_WEB_TELEMETRY_PATH": path}, {})


@pytest.mark.parametrize("path", sorted(RESERVED_PATHS))
def test_check_rejects_reserved_telemetry_path(path: str) -> None:
    """Settings rejects every reserved path, also when built directly in code."""
    with pytest.raises(SettingsError, match="already served"):
        Settings(telemetry_path=path)


@pytest.mark.parametrize("path", ["/{x}", "/{x:[}", "/metrics/{name}", "/m}", "/a%2Fb", "/a b"])
def test_telemetry_path_is_a_literal_path(path: str) -> None:
    """Pattern syntax, percent escapes and spaces are refused, from the environment and in code."""
    with pytest.raises(SettingsError, match=r"CHECKPOINT_EXPORTER_WEB_TELEMETRY_PATH \(--web"):
        Settings.load({"CHECKPOINT_EXPORTER_WEB_TELEMETRY_PATH": path}, {})
    with pytest.raises(SettingsError, match="literal"):
        Settings(telemetry_path=path)


def test_direct_construction_rejects_min_above_max() -> None:
    """Settings built without load() are held to the pool rule when they are made."""
    with pytest.raises(SettingsError, match="POOL_MIN_SIZE"):
        Settings(pool_min_size=3, pool_max_size=2)


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"pool_max_size": 0}, "CHECKPOINT_EXPORTER_POOL_MAX_SIZE (--pool.max-size): "),
        ({"exporter_pool_size": 99}, "CHECKPOINT_EXPORTER_EXPORTER_POOL_SIZE"),
        ({"collector_timeout": -1.0}, "CHECKPOINT_EXPORTER_COLLECTOR_TIMEOUT"),
        ({"canary_interval": 10**9}, "CHECKPOINT_EXPORTER_CANARY_INTERVAL"),
        ({"recovery_limit": True}, "CHECKPOINT_EXPORTER_RECOVERY_LIMIT"),
        ({"stuck_after": "15m"}, "CHECKPOINT_EXPORTER_STUCK_AFTER"),
    ],
    ids=lambda value: next(iter(value)) if isinstance(value, dict) else "",
)
def test_direct_construction_holds_values_to_their_bounds(
    changes: dict[str, Any], named: str
) -> None:
    """A value env or flags would refuse is refused in code too, naming the same setting."""
    with pytest.raises(SettingsError) as caught:
        Settings(**changes)
    assert str(caught.value).startswith(named)
    with pytest.raises(SettingsError):
        Settings().replace(**changes)


def test_direct_construction_and_load_agree_on_every_bound() -> None:
    """Each bounded setting accepts its bounds and refuses just past them, built either way."""
    for spec in SPECS:
        low: Any = getattr(spec.parse, "low", None)
        high: Any = getattr(spec.parse, "high", None)
        if low is None or high is None:
            continue
        # The pool's lower bound, and the shards on it, may reach their upper one only with
        # room in the pool above it.
        roomy = spec.field in ("pool_min_size", "saver_shards")
        room: dict[str, Any] = {"pool_max_size": high} if roomy else {}
        for good in (low, high):
            assert getattr(Settings(**room, **{spec.field: good}), spec.field) == good
        step = 1 if isinstance(low, int) and isinstance(high, int) else 0.001
        for bad in (low - step, high + step):
            with pytest.raises(SettingsError, match=spec.env):
                Settings(**room, **{spec.field: bad})
            with pytest.raises(SettingsError, match=spec.env):
                Settings.load({spec.env: str(bad)}, {})


@pytest.mark.parametrize(
    ("field", "raw", "value"),
    [
        ("pool_max_size", "-1", -1),
        ("log_level", "loud", "loud"),
        ("log_format", "xml", "xml"),
        ("postgres_schema", "Checkpoints", "Checkpoints"),
        ("listen_address", "999.1.1.1:80", ListenAddress("999.1.1.1", 80)),
        ("listen_address", "bad_host!:80", ListenAddress("bad_host!", 80)),
        ("telemetry_path", "/a b", "/a b"),
        ("application_name", "a" * 64, "a" * 64),
        ("postgres_connection_string", "mysql://db/app", "mysql://db/app"),
        ("postgres_connection_string", "host=db port=99999", "host=db port=99999"),
        ("collectors", "pool,nope", ("pool", "nope")),
        ("prepare_threshold", "-1", -1),
        ("migrations_expected", "10001", 10_001),
    ],
)
def test_direct_construction_fails_as_loading_does(field: str, raw: str, value: Any) -> None:
    """A bad value built in code fails with the very message its variable's text fails with."""
    spec = SPEC_BY_FIELD[field]
    with pytest.raises(SettingsError) as from_text:
        Settings.load({spec.env: raw}, {})
    with pytest.raises(SettingsError) as from_code:
        Settings(**{field: value})
    assert str(from_code.value) == str(from_text.value)
    assert str(from_code.value).startswith(f"{spec.describe()}: ")


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("use_postgres_saver", 1, "expected true or false, got 1"),
        ("tracking", "false", "expected true or false, got 'false'"),
        ("log_level", "warn", "expected one of debug, info, warn, warning, error, got 'warn'"),
        ("log_level", "DEBUG", "expected one of debug, info, warn, warning, error, got 'DEBUG'"),
        ("listen_address", ":9877", "expected a ListenAddress, got ':9877'"),
        (
            "listen_address",
            ListenAddress("", 65_536),
            "port must be between 0 and 65535, got 65536",
        ),
        (
            "listen_address",
            ListenAddress(" db", 80),
            "not a valid listen address: ListenAddress(host=' db', port=80)",
        ),
        ("postgres_connection_string", 5, "expected a string, got int"),
        ("postgres_connection_string", " ", "is empty"),
        ("collectors", ["pool"], "expected a tuple of collector names, got ['pool']"),
        ("data_dir", "/var/lib/pgdata", "expected a Path, got '/var/lib/pgdata'"),
        ("web_config_file", "web.yml", "expected a WebConfig from load_web_config, got 'web.yml'"),
        ("prepare_threshold", 1.5, "expected a whole number, got 1.5"),
    ],
)
def test_direct_construction_refuses_what_text_cannot_give(
    field: str, value: Any, reason: str
) -> None:
    """Values of the wrong type, or forms only text may use (aliases, case), fail naming the
    setting; replace() and dataclasses.replace() are held to the same."""
    spec = SPEC_BY_FIELD[field]
    for build in (Settings, Settings().replace, lambda **c: dataclasses.replace(Settings(), **c)):
        with pytest.raises(SettingsError) as caught:
            build(**{field: value})
        assert str(caught.value) == f"{spec.describe()}: {reason}"


def test_direct_construction_refuses_a_file_as_data_dir(tmp_path: Path) -> None:
    """A data directory that is a file, or lies under one, is refused in code as from text."""
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    for path in (a_file, a_file / "pgdata"):
        with pytest.raises(SettingsError) as from_text:
            Settings.load({"CHECKPOINT_EXPORTER_DATA_DIR": str(path)}, {})
        with pytest.raises(SettingsError) as from_code:
            Settings(data_dir=path)
        assert str(from_code.value) == str(from_text.value)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.field)
def test_every_default_passes_its_own_validation(
    spec: Spec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default a row gives its field is one that row's parser accepts as it is."""
    monkeypatch.delenv("XDG_DATA_HOME")
    default = spec.default_value()
    assert spec.parse.validate(default) == default
    assert getattr(Settings(), spec.field) == default


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.field)
def test_shown_values_parse_back(spec: Spec) -> None:
    """How a parser shows a value (as --help and the README show defaults) reads back as it."""
    for _, value in (GOOD[spec.field], OTHER.get(spec.field, GOOD[spec.field])):
        if value is not None:
            assert spec.parse(spec.parse.show(value)) == value


def test_replace_checks_the_result() -> None:
    """replace() applies the cross-field rules to the new copy."""
    settings = Settings()
    assert settings.replace(pool_max_size=50).pool_max_size == 50
    with pytest.raises(SettingsError, match="already served"):
        settings.replace(telemetry_path="/healthz")


def test_error_names_variable_and_flag() -> None:
    """A bad value's error names the variable and the flag, and is a ValueError."""
    with pytest.raises(SettingsError) as caught:
        Settings.load({"CHECKPOINT_EXPORTER_EXPORTER_POOL_SIZE": "99"}, {})
    assert isinstance(caught.value, ValueError)
    assert str(caught.value).startswith(
        "CHECKPOINT_EXPORTER_EXPORTER_POOL_SIZE (--exporter.pool-size): "
    )


def test_unset_settings_described_in_parentheses() -> None:
    """Settings whose documented default is a description have no value when unset."""
    described = {spec.field for spec in SPECS if spec.default.startswith("(")}
    assert described == {
        "postgres_connection_string",
        "web_config_file",
        "migrations_expected",
        "rollout_include",
        "rollout_include_key",
    }
    assert Settings().rollout_include == ()
    assert Settings.load({}, {"rollout_include_key": " "}).rollout_include_key is None
    assert Settings().migrations_expected is None
    assert Settings.load({}, {"migrations_expected": " "}).migrations_expected is None
    assert Settings().postgres_connection_string is None
    assert Settings.load({}, {"web_config_file": "  "}).web_config_file is None


def test_web_config_file_is_read_at_load(tmp_path: Path) -> None:
    """A bad web configuration file fails load(), naming the variable, the flag and the key."""
    path = tmp_path / "web.yml"
    path.write_text("basic_auth_user: {}\n")
    with pytest.raises(SettingsError) as caught:
        Settings.load({"CHECKPOINT_EXPORTER_WEB_CONFIG_FILE": str(path)}, {})
    assert str(caught.value) == (
        "CHECKPOINT_EXPORTER_WEB_CONFIG_FILE (--web.config.file): "
        f"{path}: unknown key basic_auth_user"
    )
