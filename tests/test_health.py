"""The health rules for the canary, the recovery check and the integrity checks."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from time import monotonic

import aiohttp
import psycopg
from prometheus_client import CollectorRegistry

from exporter import Sidecar
from exporter.checkpointer.backend import POSTGRES, Backend
from exporter.checkpointer.metrics import DURATION_BUCKETS, Distribution
from exporter.database import Ping
from exporter.factory import prepare_schema
from exporter.health import (
    CANARY_UNHEALTHY_AFTER,
    DEGRADED,
    HEALTHY,
    UNHEALTHY,
    HealthInputs,
    health_document,
)
from exporter.settings import Settings
from exporter.workflows.canary import ERROR, MISMATCH, RESULTS, SUCCESS, TIMEOUT, CanaryStatus
from exporter.workflows.recovery import RecoveryFailure, RecoveryReport

NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
BACKEND = Backend(POSTGRES, "workflow_checkpoints", "postgresql://app@db/app")
UP = Ping(True, 0.001, server_version="16.4")


def canary(result: str | None, failures: int = 0, *, active: bool = True) -> CanaryStatus:
    probes = dict.fromkeys(RESULTS, 0)
    if result is not None:
        probes[result] = max(1, failures)
    return CanaryStatus(
        probes=probes,
        save=Distribution(DURATION_BUCKETS),
        load=Distribution(DURATION_BUCKETS),
        last_result=result,
        last_probe_at=NOW.timestamp() if result else None,
        last_save_seconds=0.004 if result else None,
        last_load_seconds=0.002 if result else None,
        last_error=None if result in (None, SUCCESS) else f"{result} happened",
        consecutive_failures=failures,
        readback="success",
        active=active,
    )


def recovery(failed: int) -> RecoveryReport:
    failures = tuple(RecoveryFailure(f"t{i}", "ValueError") for i in range(failed))
    return RecoveryReport(5, 5 - failed, failures, NOW.timestamp(), 0.25)


@dataclass
class Integrity:
    counts: Mapping[str, int] = field(default_factory=dict)
    completed_at: float | None = None


def inputs(**changes: object) -> HealthInputs:
    base = HealthInputs(
        backend=BACKEND, saver="AsyncPostgresSaver", ping=UP, pool_stats=None, last_error=None
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def judged(**changes: object) -> tuple[str, int]:
    document, status = health_document(inputs(**changes), NOW)
    return document["status"], status


def test_a_succeeding_canary_is_healthy() -> None:
    """The last probe succeeded: healthy, with the canary's figures in the document."""
    document, status = health_document(inputs(canary=canary(SUCCESS)), NOW)
    assert (document["status"], status) == (HEALTHY, 200)
    assert document["canary"] == {
        "active": True,
        "status": SUCCESS,
        "consecutiveFailures": 0,
        "lastSaveSeconds": 0.004,
        "lastLoadSeconds": 0.002,
        "lastProbeAt": NOW.isoformat(),
        "error": None,
        "restartReadback": "success",
    }


def test_a_canary_that_never_probed_judges_nothing() -> None:
    """Before the first probe (or canary off) the status is healthy."""
    assert judged(canary=canary(None)) == (HEALTHY, 200)
    document, _ = health_document(inputs(), NOW)
    assert document["canary"] is None


def test_failing_canary_degrades_then_makes_unhealthy() -> None:
    """Each failing result degrades; CANARY_UNHEALTHY_AFTER failures in a row make it 503."""
    for result in (TIMEOUT, ERROR, MISMATCH):
        for failures in range(1, CANARY_UNHEALTHY_AFTER):
            assert judged(canary=canary(result, failures)) == (DEGRADED, 200)
        assert judged(canary=canary(result, CANARY_UNHEALTHY_AFTER)) == (UNHEALTHY, 503)
        assert judged(canary=canary(result, CANARY_UNHEALTHY_AFTER + 5)) == (UNHEALTHY, 503)


def test_a_canary_this_sidecar_no_longer_runs_judges_nothing() -> None:
    """A former leader's failing canary figures do not make this sidecar unhealthy."""
    stale = canary(ERROR, CANARY_UNHEALTHY_AFTER, active=False)
    assert judged(canary=stale) == (HEALTHY, 200)


def test_recovery_failures_degrade() -> None:
    """A recovery check with failed workflows degrades; one without is healthy."""
    assert judged(recovery=recovery(0)) == (HEALTHY, 200)
    assert judged(recovery=recovery(2)) == (DEGRADED, 200)
    document, _ = health_document(inputs(recovery=recovery(2)), NOW)
    assert document["recovery"] == {
        "checked": 5,
        "recovered": 3,
        "failed": 2,
        "tableExists": True,
        "error": None,
        "completedAt": NOW.isoformat(),
        "durationSeconds": 0.25,
    }
    assert "t0" not in str(document)


def test_an_unreachable_recovery_check_judges_nothing() -> None:
    """A check that could not reach the database does not degrade health by itself."""
    report = RecoveryReport(0, 0, (), NOW.timestamp(), 0.1, error="OperationalError: refused")
    assert judged(recovery=report) == (HEALTHY, 200)


def test_integrity_problems_degrade() -> None:
    """Any integrity problem degrades; zero counts are healthy; the findings are shown."""
    clean = Integrity({"orphan_writes": 0, "undecodable": 0}, NOW.timestamp())
    assert judged(integrity=clean) == (HEALTHY, 200)
    found = Integrity({"orphan_writes": 3, "undecodable": 0}, NOW.timestamp())
    assert judged(integrity=found) == (DEGRADED, 200)
    document, _ = health_document(inputs(integrity=found), NOW)
    assert document["integrity"] == {
        "problems": {"orphan_writes": 3, "undecodable": 0},
        "completedAt": NOW.isoformat(),
    }
    assert health_document(inputs(integrity=Integrity()), NOW)[0]["integrity"] == {
        "problems": {},
        "completedAt": None,
    }


def test_earlier_rules_win() -> None:
    """A database that does not answer is unhealthy and a fallback degraded, whatever else."""
    down = Ping(False, 1.0, error="OperationalError: refused")
    assert judged(ping=down, recovery=recovery(1), canary=canary(ERROR, 1)) == (UNHEALTHY, 503)
    fallback = replace(BACKEND, fallback_reason="refused")
    assert judged(backend=fallback, canary=canary(ERROR, 5)) == (DEGRADED, 200)


async def test_a_sidecar_whose_canary_keeps_failing_turns_unhealthy(settings: Settings) -> None:
    """Every save fails in the database (a trigger refuses it) while the database answers:
    health goes from degraded to 503 unhealthy once the canary failed three times in a row."""
    settings = settings.replace(leader_election=False, canary_interval=0.1)
    assert settings.postgres_connection_string is not None
    await prepare_schema(settings.postgres_connection_string, settings)
    with psycopg.connect(settings.postgres_connection_string, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql"
            " AS $$ BEGIN RAISE EXCEPTION 'no space left'; END $$"
        )
        conn.execute(
            f"CREATE TRIGGER refuse BEFORE INSERT ON {settings.postgres_schema}.checkpoints"
            " FOR EACH ROW EXECUTE FUNCTION refuse()"
        )
    seen: list[tuple[int, int, str]] = []
    async with (
        Sidecar(settings, registry=CollectorRegistry(), collectors=[]) as sidecar,
        aiohttp.ClientSession() as http,
    ):
        deadline = monotonic() + 5
        failures = 0
        while failures < CANARY_UNHEALTHY_AFTER and monotonic() < deadline:
            await asyncio.sleep(0.01)
            async with http.get(sidecar.url + "/api/health/checkpointer") as response:
                document = await response.json()
            failures = document["canary"]["consecutiveFailures"]
            seen.append((failures, response.status, document["status"]))
    assert seen[-1][1:] == (503, UNHEALTHY)
    assert document["canary"]["status"] == ERROR
    assert "RaiseException" in document["canary"]["error"]
    assert document["postgres"]["connected"] is True
    degraded = {entry[1:] for entry in seen if 0 < entry[0] < CANARY_UNHEALTHY_AFTER}
    assert degraded == {(200, DEGRADED)}
