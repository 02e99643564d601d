"""`checkpoint-exporter verify` as a real process: report, failing threads, exit status."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from exporter.settings import Settings
from tests.ports import refused_port
from tests.test_recovery import corrupt, garbage_error, run_graphs, track

PASSWORD = "verify_secret_pw"
PREFIX = "checkpoint-exporter: error: "


def verify(dsn: str, tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m exporter verify`` against ``dsn`` in a clean environment."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("CHECKPOINT_EXPORTER_", "POSTGRES_", "USE_POSTGRES"))
    }
    env |= {
        "XDG_DATA_HOME": str(tmp_path / "xdg"),
        "POSTGRES_CONNECTION_STRING": dsn,
        "CHECKPOINT_EXPORTER_LOG_FORMAT": "json",
    }
    return subprocess.run(
        [sys.executable, "-m", "exporter", "verify", *argv],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
async def workflows(settings: Settings, dsn: str) -> Settings:
    """Three running workflows from real graph runs, recorded in workflow_metadata."""
    settings = settings.replace(tracking=False)
    await run_graphs(settings, ["first", "second", "third"])
    track(
        dsn,
        settings.postgres_schema,
        {"first": ("running", 3.0), "second": ("running", 2.0), "third": ("running", 1.0)},
    )
    return settings


def test_every_workflow_recovers_exits_0(workflows: Settings, dsn: str, tmp_path: Path) -> None:
    """Nothing corrupted: exit 0, and the text report counts three recovered."""
    done = verify(dsn, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "3 running workflows checked, 3 recovered, 0 failed" in done.stdout
    assert "Traceback" not in done.stderr


def test_failing_threads_are_listed_and_exit_1(
    workflows: Settings, dsn: str, tmp_path: Path
) -> None:
    """Two corrupted threads: exit 1, each named with its error class, in text and in JSON."""
    for thread in ("first", "third"):
        assert corrupt(dsn, workflows.postgres_schema, thread) > 0
    error = garbage_error()

    text = verify(dsn, tmp_path)
    assert text.returncode == 1, text.stderr
    assert "3 running workflows checked, 1 recovered, 2 failed" in text.stdout
    assert f"failed: third ({error})" in text.stdout
    assert f"failed: first ({error})" in text.stdout
    assert "second" not in text.stdout

    as_json = verify(dsn, tmp_path, "--output", "json")
    assert as_json.returncode == 1, as_json.stderr
    recovery = json.loads(as_json.stdout)["recovery"]
    assert (recovery["checked"], recovery["recovered"], recovery["failed"]) == (3, 1, 2)
    assert recovery["failures"] == [
        {"threadId": "third", "error": error},
        {"threadId": "first", "error": error},
    ]
    logged = [json.loads(line) for line in as_json.stderr.splitlines()]
    failures = [e["thread_id"] for e in logged if e["event"] == "recovery_check_failed"]
    assert failures == ["third", "first"]


def test_limit_flag_is_respected(workflows: Settings, dsn: str, tmp_path: Path) -> None:
    """--recovery.limit 1 checks only the newest running workflow."""
    assert corrupt(dsn, workflows.postgres_schema, "first") > 0
    done = verify(dsn, tmp_path, "--recovery.limit", "1", "--output", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["recovery"]["checked"] == 1


def test_unreachable_database_exits_2_with_one_clean_line(tmp_path: Path) -> None:
    """PostgreSQL down: exit 2, one error line, no traceback, no password."""
    url = f"postgresql://exporter:{PASSWORD}@127.0.0.1:{refused_port()}/app"
    done = verify(url, tmp_path)
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(PREFIX + "PostgreSQL is unavailable")
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    assert PASSWORD not in done.stdout + done.stderr


def test_bad_setting_exits_2(dsn: str, tmp_path: Path) -> None:
    """A malformed flag exits 2 with one line naming it."""
    done = verify(dsn, tmp_path, "--recovery.limit", "0")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [done.stderr.strip()]
    assert done.stderr.startswith(PREFIX + "CHECKPOINT_EXPORTER_RECOVERY_LIMIT (--recovery.limit)")


def test_without_workflow_table_nothing_fails(dsn: str, tmp_path: Path) -> None:
    """A database without workflow_metadata: the report says so and the exit status is 0."""
    done = verify(dsn, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "no workflow_metadata table, nothing to check" in done.stdout


def test_integrity_pass_is_added_on_request(workflows: Settings, dsn: str, tmp_path: Path) -> None:
    """--integrity adds one whole integrity pass over the stored threads to the report."""
    done = verify(dsn, tmp_path, "--integrity", "--output", "json")
    assert done.returncode == 0, done.stderr
    integrity = json.loads(done.stdout)["integrity"]
    assert integrity["threads"] == 3
    assert integrity["problems"] == 0
