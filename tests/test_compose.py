"""The compose stack, checked offline: the Compose specification, variables, secrets, mounts,
the Prometheus configuration it mounts, and the image's user and health check."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from exporter.settings import Settings
from exporter.sidecar import Sidecar
from tests.tools import require_tool

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus.yml"
SCHEMA = Path(__file__).resolve().parent / "schemas" / "compose" / "compose-spec.json"

# Compose interpolation: $$ is a literal dollar; ${NAME}, ${NAME:-default}, ${NAME:?error}, ... and
# $NAME refer to variables.
INTERPOLATION = re.compile(
    r"\$(?:\$|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)[^}]*\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY", re.IGNORECASE)
# Only a whole reference to a variable is an acceptable secret value.
REFERENCE_ONLY = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(?::?[?-][^}]*)?\}$")


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return document


def env_example() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f".env.example: not NAME=value: {line!r}"
            values[name.strip()] = value.strip()
    return values


def referenced_variables(text: str) -> set[str]:
    return {
        match["braced"] or match["bare"]
        for match in INTERPOLATION.finditer(text)
        if match["braced"] or match["bare"]
    }


def environment(service: dict[str, Any]) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        return dict(item.partition("=")[::2] for item in raw)
    return {str(key): str(value) for key, value in raw.items()}


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    instructions = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, arguments = line.partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def test_compose_file_follows_the_compose_specification() -> None:
    """docker-compose.yml validates against the Compose specification's JSON schema."""
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    document = compose()
    errors = sorted(
        jsonschema.Draft7Validator(schema).iter_errors(document), key=lambda e: list(e.path)
    )
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)
    assert "version" not in document, "the Compose specification ignores `version`: drop it"


def test_schema_rejects_what_compose_rejects() -> None:
    """The vendored schema is strict: an unknown service key fails validation."""
    schema = json.loads(SCHEMA.read_text())
    document = compose()
    document["services"]["exporter"]["helthcheck"] = {"test": ["CMD", "true"]}
    with pytest.raises(jsonschema.ValidationError, match="helthcheck"):
        jsonschema.validate(document, schema, cls=jsonschema.Draft7Validator)


def test_every_variable_is_defined_in_env_example() -> None:
    """Each variable the compose file uses has a value in .env.example, and none is stale."""
    used = referenced_variables(COMPOSE_FILE.read_text())
    defined = env_example()
    assert used, "the compose file should take its credentials from variables"
    assert used - defined.keys() == set(), "missing from .env.example"
    assert defined.keys() - used == set(), "defined in .env.example but unused"


def test_no_literal_secret_in_compose_file() -> None:
    """Passwords reach the services only through variables; .env is git-ignored."""
    text = COMPOSE_FILE.read_text()
    for name, service in compose()["services"].items():
        for key, value in environment(service).items():
            if SECRET_NAME.search(key):
                assert REFERENCE_ONLY.match(value), f"{name}: {key} must be ${{VARIABLE}} only"
            for userinfo in re.findall(r"://([^@/\s]+)@", value):
                _, _, password = userinfo.partition(":")
                assert not password or REFERENCE_ONLY.match(password), f"{name}: {key}"
    for name, value in env_example().items():
        if SECRET_NAME.search(name):
            assert value not in text, f"the placeholder of {name} appears in docker-compose.yml"
    gitignore = (ROOT / ".gitignore").read_text().splitlines()
    assert ".env" in gitignore, ".env holds the real credentials: git must ignore it"


def test_every_mounted_path_exists() -> None:
    """Bind mounts, build contexts and Dockerfiles the compose file names exist in the repo."""
    document = compose()
    named = set(document.get("volumes") or {})
    checked = 0
    for name, service in document["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume["source"]
            if source in named:
                continue
            assert source.startswith("./"), f"{name}: mount {source!r} should be relative"
            assert (ROOT / source).exists(), f"{name}: {source} does not exist"
            checked += 1
        build = service.get("build")
        if build is not None:
            context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile")
            assert (context / (dockerfile or "Dockerfile")).is_file(), f"{name}: no Dockerfile"
    assert checked >= 5


def test_prometheus_config_passes_promtool() -> None:
    """promtool accepts deploy/prometheus.yml and the rule files it loads from alerts/."""
    promtool = require_tool("promtool")
    done = subprocess.run(
        [promtool, "check", "config", str(PROMETHEUS_CONFIG)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    for rule_file in config["rule_files"]:
        assert (PROMETHEUS_CONFIG.parent / rule_file).resolve().parent == ROOT / "alerts"
    assert f"SUCCESS: {len(config['rule_files'])} rule files found" in done.stdout


def test_prometheus_targets_are_services_of_the_stack() -> None:
    """Every scrape and Alertmanager target is a compose service on the port it listens on."""
    services = compose()["services"]
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    default_ports = {"prometheus": 9090, "alertmanager": 9093}
    static = [
        target
        for section in (*config["scrape_configs"], *config["alerting"]["alertmanagers"])
        for group in section["static_configs"]
        for target in group["targets"]
    ]
    scraped = set()
    for target in static:
        host, _, port = target.rpartition(":")
        if host == "localhost":
            continue  # Prometheus itself
        assert host in services, f"{target}: no such service"
        listen = environment(services[host]).get("CHECKPOINT_EXPORTER_WEB_LISTEN_ADDRESS")
        expected = int(listen.rpartition(":")[2]) if listen else default_ports[host]
        assert int(port) == expected, f"{target}: {host} listens on {expected}"
        scraped.add(host)
    assert {"exporter", "demo-load", "alertmanager"} <= scraped


def test_grafana_finds_its_provisioning_and_dashboards() -> None:
    """Grafana's provider path and data source URL point at what the stack mounts and runs."""
    services = compose()["services"]
    mounts = {
        target: ROOT / source
        for source, target, *_ in (v.split(":") for v in services["grafana"]["volumes"])
        if source.startswith("./")
    }
    provisioning = mounts["/etc/grafana/provisioning"]  # Grafana's default paths.provisioning
    providers = yaml.safe_load(
        (provisioning / "dashboards" / "checkpoint-exporter.yml").read_text()
    )
    for provider in providers["providers"]:
        path = provider["options"]["path"]
        assert path in mounts, f"provider path {path} is not mounted"
        assert sorted(mounts[path].glob("*.json")), f"no dashboards in {mounts[path]}"
    sources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    for source in sources["datasources"]:
        host, _, port = source["url"].removeprefix("http://").partition(":")
        assert host in services, f"data source {source['url']}: no such service"
        assert port == "9090"


def test_image_runs_as_non_root_with_a_health_check() -> None:
    """The image's last USER is not root, it has a CLI health check, and compose keeps both."""
    instructions = dockerfile_instructions()
    users = [arguments for keyword, arguments in instructions if keyword == "USER"]
    assert users, "the Dockerfile sets no USER: the exporter would run as root"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    checks = [arguments for keyword, arguments in instructions if keyword == "HEALTHCHECK"]
    assert len(checks) == 1
    assert "CMD" in checks[0]
    command = json.loads(checks[0].split("CMD", 1)[1])
    assert command[0] == "checkpoint-exporter"
    assert ("ENTRYPOINT", '["checkpoint-exporter"]') in instructions
    assert ("CMD", '["serve"]') in instructions
    assert ("EXPOSE", "9877") in instructions

    services = compose()["services"]
    for name in ("exporter", "demo-load"):
        service = services[name]
        assert service["build"]["dockerfile"] == "Dockerfile"
        assert service.get("user") in (None, user), f"{name} overrides the image's user"
        assert not (service.get("healthcheck") or {}).get("disable"), f"{name}: check disabled"


def health_check_command() -> list[str]:
    arguments = next(args for kw, args in dockerfile_instructions() if kw == "HEALTHCHECK")
    command: list[str] = json.loads(arguments.split("CMD", 1)[1])
    return command


async def run_health_check(listen_address: str) -> subprocess.CompletedProcess[str]:
    """The Dockerfile's HEALTHCHECK command, run as the container would, with the listen address."""
    command = health_check_command()
    executable = Path(sys.executable).parent / command[0]
    env = {**os.environ, "CHECKPOINT_EXPORTER_WEB_LISTEN_ADDRESS": listen_address}
    return await asyncio.to_thread(
        subprocess.run,
        [str(executable), *command[1:]],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


async def test_health_check_passes_on_a_serving_sidecar(settings: Settings) -> None:
    """The image's health check exits 0 against a running, healthy sidecar."""
    async with Sidecar(settings) as sidecar:
        done = await run_health_check(f"127.0.0.1:{sidecar.port}")
    assert done.returncode == 0, shlex.join(health_check_command()) + "\n" + done.stderr
    assert done.stdout.strip() == "healthy"


async def test_health_check_fails_when_nothing_answers(unused_tcp_port: int) -> None:
    """The image's health check exits non-zero when no sidecar listens."""
    done = await run_health_check(f"127.0.0.1:{unused_tcp_port}")
    assert done.returncode != 0
