"""Components built the way the sidecar builds them: one Target, and the settings' values."""

from __future__ import annotations

from langgraph.checkpoint.serde.base import SerializerProtocol

from exporter.settings import Settings
from exporter.target import Target
from exporter.workflows.canary import Canary
from exporter.workflows.recovery import RecoveryCheck


def canary_on(dsn: str, settings: Settings) -> Canary:
    """The canary a sidecar with ``settings`` runs on ``dsn``."""
    target = Target.of(dsn, settings)
    return Canary(target, interval=settings.canary_interval, timeout=settings.canary_timeout)


def recovery_check(
    dsn: str, settings: Settings, serde: SerializerProtocol | None = None
) -> RecoveryCheck:
    """The recovery check a sidecar with ``settings`` (and the application's ``serde``) runs."""
    return RecoveryCheck(Target.of(dsn, settings, serde), settings.recovery_limit)
