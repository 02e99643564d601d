"""PostgreSQL stopped hard under a load of 100 workflows, then started again."""

from __future__ import annotations

import pytest

from tests.faults.cluster import StoppableCluster
from tests.faults.scenarios import (
    ANSWER_MARGIN,
    COLLECTOR_TIMEOUT,
    SCRAPE_INTERVAL,
    database_outage,
)

pytestmark = pytest.mark.faults


async def test_the_sidecar_rides_out_a_crash_and_every_count_adds_up(
    cluster: StoppableCluster, cluster_dsn: str
) -> None:
    """Endpoints answer on time throughout; up and health fall and recover; nothing is lost.

    Every counted operation matches the application's own ledger (attempts and
    errors per operation), and every checkpoint whose save succeeded reads back
    with the values and versions it was saved with.
    """
    result = await database_outage(cluster, cluster_dsn)

    assert result.sidecar_alive
    for figures in result.during:
        assert figures.asked > 0, figures
        assert figures.answered == figures.asked, figures
        assert figures.max_seconds <= COLLECTOR_TIMEOUT + ANSWER_MARGIN, figures
    healthz = next(f for f in result.whole if f.path == "/healthz")
    assert healthz.answered == healthz.asked
    assert 0.0 in result.up_values_during
    assert "unhealthy" in result.health_during
    assert result.up_again_after is not None
    assert result.up_again_after <= 2 * SCRAPE_INTERVAL
    assert result.recovered_after is not None
    assert result.recovered_after <= 2 * SCRAPE_INTERVAL
    assert result.final_up == 1.0

    assert sum(result.errors.values()) > 0, "the outage never reached the application"
    assert result.counter_mismatches == []
    assert result.checkpoints_verified == result.attempts["put"] - result.errors.get("put", 0)
    assert result.checkpoint_problems == []

    # Writes of checkpoints whose save failed stay behind: the integrity checks count exactly
    # those, and they are the only thing keeping health from "healthy".
    assert result.orphan_writes_of_saved_checkpoints == 0
    assert result.integrity_orphan_writes == result.stored_orphan_writes
    if result.stored_orphan_writes:
        assert result.final_health == "degraded"
        assert result.final_causes == ("integrity:orphan_writes",)
    else:
        assert result.final_health == "healthy"
