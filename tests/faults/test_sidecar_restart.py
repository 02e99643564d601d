"""The standalone sidecar restarted with SIGTERM while 100 workflows keep running."""

from __future__ import annotations

import pytest

from tests.faults.scenarios import PARKED, sidecar_restart

pytestmark = pytest.mark.faults


async def test_a_restarted_sidecar_loses_and_repeats_nothing(cluster_dsn: str) -> None:
    """Database-side figures carry on across the restart and end equal to what happened.

    It exits 0 on SIGTERM; after the restart it reads the canary stored before
    it back and its recovery check loads every running workflow; the workflow
    counts equal the application's and the table's, and the save statements
    equal the application's saves plus the canary's.
    """
    result = await sidecar_restart(cluster_dsn)

    assert result.exit_code == 0
    for name, before in result.before.items():
        if name != "workflows running":
            assert before <= result.after[name] <= result.final[name], name
    assert result.restart_readback == "success"
    assert result.recovery["last_run_success"] == 1
    assert result.recovery["workflows_failed"] == 0
    assert result.recovery["workflows_checked"] >= PARKED
    assert result.recovery["workflows_recovered"] == result.recovery["workflows_checked"]
    assert result.workflows_failed == 0
    assert result.final["workflows completed"] == result.workflows_completed
    assert {k: v for k, v in result.final.items() if k.startswith("workflows")} == result.truth
    # A probe may run between the scrape that counted the probes and the statement counts.
    slack = result.final["statements save_checkpoint"] - result.application_puts
    assert result.canary_probes <= slack <= result.canary_probes + 2
