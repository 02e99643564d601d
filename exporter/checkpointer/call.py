"""The instrumented call in progress, visible to the saver's lock and serializer."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

from exporter.checkpointer.metrics import OperationProbe


@dataclass(slots=True)
class Call:
    """What one operation accumulates while it runs: lock wait and serialized bytes.

    It travels in a context variable because the saver's lock and serializer
    are reached from deep inside the saver (and from ``asyncio.to_thread``,
    which copies the context), where no argument could carry it.
    """

    probe: OperationProbe
    lock_wait: float = 0.0
    payload: int = 0


current_call: ContextVar[Call | None] = ContextVar("checkpoint_exporter_call", default=None)
