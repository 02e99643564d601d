"""Prometheus metrics and health for LangGraph checkpointers persisting in PostgreSQL."""

from exporter.checkpointer.instrumented import InstrumentedSaver, Observation, instrument
from exporter.factory import CheckpointerUnavailableError, build_checkpointer
from exporter.settings import Settings, SettingsError
from exporter.sidecar import Sidecar
from exporter.workflows.tracker import WorkflowRun, WorkflowTracker

__all__ = [
    "CheckpointerUnavailableError",
    "InstrumentedSaver",
    "Observation",
    "Settings",
    "SettingsError",
    "Sidecar",
    "WorkflowRun",
    "WorkflowTracker",
    "build_checkpointer",
    "instrument",
]
