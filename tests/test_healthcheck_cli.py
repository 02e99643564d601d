"""`checkpoint-exporter healthcheck`: the container health check, run as a real process."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from prometheus_client import CollectorRegistry

from exporter import Sidecar
from exporter.server import HEALTH_PATH
from exporter.settings import Settings
from tests.ports import refused_port


async def healthcheck(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the command in its own process (off the loop, so the sidecar keeps answering)."""
    command = [sys.executable, "-m", "exporter", "healthcheck", *args]
    environment = {**os.environ, **(env or {})}
    return await asyncio.to_thread(
        subprocess.run,
        command,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=environment,
    )


async def test_a_healthy_sidecar_passes(settings: Settings) -> None:
    """Exit 0 and the status on stdout when the health endpoint answers 200."""
    async with Sidecar(settings, registry=CollectorRegistry()) as sidecar:
        result = await healthcheck("--url", sidecar.url + HEALTH_PATH)
    assert (result.returncode, result.stdout.strip(), result.stderr) == (0, "healthy", "")


async def test_the_listen_address_setting_finds_the_sidecar(settings: Settings) -> None:
    """Without --url the command asks this host at the port of --web.listen-address."""
    async with Sidecar(settings, registry=CollectorRegistry()) as sidecar:
        result = await healthcheck("--web.listen-address", f":{sidecar.port}")
    assert (result.returncode, result.stdout.strip()) == (0, "healthy")


async def test_a_proxy_in_the_environment_is_not_used(settings: Settings) -> None:
    """A container's http_proxy must not stand between the check and the sidecar beside it."""
    proxy = f"http://127.0.0.1:{refused_port()}"
    env = {"http_proxy": proxy, "HTTP_PROXY": proxy, "no_proxy": "", "NO_PROXY": ""}
    async with Sidecar(settings, registry=CollectorRegistry()) as sidecar:
        result = await healthcheck("--url", sidecar.url + HEALTH_PATH, env=env)
    assert (result.returncode, result.stdout.strip()) == (0, "healthy")


async def test_an_unhealthy_sidecar_fails(settings: Settings) -> None:
    """A sidecar whose database does not answer is unhealthy (503): exit 1, no password."""
    url = f"postgresql://u:s3cr3t-pw@127.0.0.1:{refused_port()}/db"
    down = settings.replace(postgres_connection_string=url, collector_timeout=0.5)
    async with Sidecar(down, registry=CollectorRegistry()) as sidecar:
        result = await healthcheck("--url", sidecar.url + HEALTH_PATH)
    assert (result.returncode, result.stdout.strip()) == (1, "unhealthy")
    assert "s3cr3t-pw" not in result.stdout + result.stderr


async def test_nothing_listening_fails_with_one_line() -> None:
    """No sidecar at the address: exit 1 with one line on stderr, no traceback."""
    result = await healthcheck("--url", f"http://127.0.0.1:{refused_port()}{HEALTH_PATH}")
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("checkpoint-exporter: error: http://127.0.0.1:")
    assert "Traceback" not in result.stderr
