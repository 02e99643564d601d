"""Fixtures of the fault suite: one stoppable PostgreSQL on TCP, a fresh database per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.debian_postgres import require_bindir
from tests.faults.cluster import StoppableCluster, stoppable_cluster
from tests.postgres import fresh_database


@pytest.fixture(scope="package")
def cluster() -> Iterator[StoppableCluster]:
    """Debian's PostgreSQL on a TCP port, which tests may stop and start.

    Skips where it is not installed, except under ``CI=true``, where it fails.
    """
    with stoppable_cluster(require_bindir()) as started:
        yield started


@pytest.fixture
def cluster_dsn(cluster: StoppableCluster) -> Iterator[str]:
    """A database of its own on that cluster, started again first if a test left it down."""
    if not cluster.running:
        cluster.start()
    with fresh_database(cluster.admin_dsn) as dsn:
        yield dsn
