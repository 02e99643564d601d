"""The application's pool (max 2) exhausted by 20 workflows: the metrics and the alerts show it."""

from __future__ import annotations

import pytest

from tests.faults.scenarios import pool_exhaustion
from tests.tools import require_tool

pytestmark = pytest.mark.faults


async def test_an_exhausted_pool_shows_in_metrics_health_and_alerts(dsn: str) -> None:
    """Requests wait for a connection, the saver's lock queue grows, health is degraded.

    The scraped figures, held steady, make the pool exhaustion and lock queue
    alerts of alerts/alerts.rules.yml fire for the checkpointer, as
    ``promtool test rules`` confirms.
    """
    promtool = require_tool("promtool")
    result = await pool_exhaustion(dsn, promtool)

    assert result.workflows_failed == 0
    assert result.max_waiting > 0
    assert result.available_at_max == 0
    assert result.max_lock_waiters > 0
    assert result.health_at_max == "degraded"
    for part, verdict in result.alerts.items():
        assert "fires for" in verdict, (part, verdict, result.alert_output[part])
    assert "checkpointer" in result.alerts["PoolExhausted"]
    assert "AsyncPostgresSaver" in result.alerts["LockQueue"]
