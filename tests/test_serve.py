"""`checkpoint-exporter serve` with no settings runs on its own PostgreSQL, and stops cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.logstream import LogStream, started_url


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as error:
        return int(error.code), bytes(error.read())


def wait_until_serving(url: str, process: subprocess.Popen[Any], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, "the sidecar exited early"
        try:
            if get(url)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {seconds}s")


def test_serve_on_the_embedded_database(tmp_path: Path) -> None:
    """Healthy PostgresSaver with real figures; SIGTERM exits 0 and stops the database."""
    data_dir = tmp_path / "pgdata"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CHECKPOINT_EXPORTER_", "POSTGRES_", "USE_POSTGRES"))
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "exporter",
            "serve",
            "--web.listen-address",
            "127.0.0.1:0",
            "--embedded.data-dir",
            str(data_dir),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    log = LogStream(process.stderr)
    try:
        base = started_url(log)
        wait_until_serving(base + "/healthz", process, 90)
        status, body = get(base + "/api/health/checkpointer")
        health = json.loads(body)
        metrics_status, metrics = get(base + "/metrics")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        with process.stdout:
            stdout = process.stdout.read().decode()
        stderr = log.output().decode()
    assert status == 200
    assert health["status"] == "healthy"
    assert health["checkpointer"] == "PostgresSaver"
    assert health["postgres"]["connected"] is True
    assert health["postgres"]["connectionString"].startswith("postgresql://")
    assert metrics_status == 200
    assert b"langgraph_checkpointer_up 1.0" in metrics
    assert b'langgraph_checkpointer_pool_connections_opened_total{pool="exporter"}' in metrics
    assert process.returncode == 0, stderr
    assert not (data_dir / "postmaster.pid").exists()
    events = [json.loads(line) for line in stderr.splitlines()]
    assert {
        "embedded_database_started",
        "sidecar_started",
        "sidecar_stopped",
        "embedded_database_stopped",
    } <= {e["event"] for e in events}
    assert all("component" in e and "level" in e for e in events)
    started = next(e for e in events if e["event"] == "sidecar_started")
    expected_loop = "asyncio" if sys.platform == "win32" else "uvloop"
    assert started["event_loop"] == expected_loop
    assert stdout == ""
