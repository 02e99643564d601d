"""Components built the way the sidecar builds them: one Target, and the settings' values."""

from __future__ import annotations

from langgraph.checkpoint.serde.base import SerializerProtocol
from prometheus_client import CollectorRegistry

from exporter.settings import Settings
from exporter.target import Target
from exporter.workflows.canary import Canary
from exporter.workflows.recovery import RecoveryCheck
from exporter.workflows.tracker import WorkflowTracker


def canary_on(dsn: str, settings: Settings) -> Canary:
    """The canary a sidecar with ``settings`` runs on ``dsn``."""
    target = Target.of(dsn, settings)
    return Canary(target, interval=settings.canary_interval, timeout=settings.canary_timeout)


def recovery_check(
    dsn: str, settings: Settings, serde: SerializerProtocol | None = None
) -> RecoveryCheck:
    """The recovery check a sidecar with ``settings`` (and the application's ``serde``) runs."""
    return RecoveryCheck(Target.of(dsn, settings, serde), settings.recovery_limit)


def tracker_on(
    dsn: str, settings: Settings, registry: CollectorRegistry, **options: int
) -> WorkflowTracker:
    """The tracker ``build_checkpointer`` starts with ``settings`` on ``dsn``, not started."""
    return WorkflowTracker(
        Target.of(dsn, settings),
        flush_interval=settings.tracking_flush_interval,
        deadline=settings.connect_timeout + settings.collector_timeout,
        registry=registry,
        **options,
    )
