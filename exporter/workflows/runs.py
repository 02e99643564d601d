"""When a graph run ends: the one thing about a workflow that its checkpoints cannot say.

A run stopped at a static breakpoint (``interrupt_before`` / ``interrupt_after``) writes
nothing, so its last checkpoint looks like a step still executing. The process running the
graph knows better once the run returns. LangGraph reports every run to LangChain's callback
system, with the run's ``thread_id`` in its metadata; :func:`watch` registers one handler
through LangChain's process-wide configure hook (the mechanism tracers use), so every run
is seen without any change to the application, and forwards the start and end of each
outermost run of a thread to the listening trackers.

Only chain events are taken (model, tool and retriever events are ignored by flag), and
only those of the outermost run: the handler is not inheritable, and inside a run of a thread
the hook offers no handler (the run's id, in a context variable its tasks inherit, is still
live), so its nodes, and everything they call, configure their callbacks as if the hook were
not there. A handler in every callback
manager would make LangChain dispatch every chain event of every node (measured: 1.17x the
time of an in-memory graph run; ``bench/run_watcher.py``).
"""

from __future__ import annotations

import threading
import weakref
from contextvars import ContextVar
from typing import Any, Final, Protocol, cast
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.tracers.context import register_configure_hook

# Runs started and not ended beyond this (abandoned streams) are forgotten, oldest first.
MAX_LIVE_RUNS: Final = 100_000


class RunListener(Protocol):
    def run_began(self, thread_id: str, run_id: UUID) -> None: ...

    def run_ended(self, thread_id: str, run_id: UUID, raised: str | None) -> None: ...


class RunWatcher(BaseCallbackHandler):
    """Tells listeners when the outermost run of a thread starts and ends, and how."""

    run_inline = True
    ignore_llm = ignore_chat_model = ignore_retriever = ignore_agent = True
    ignore_retry = ignore_custom_event = True

    def __init__(self) -> None:
        super().__init__()
        # The outermost run this context is inside, if it is still going on.
        self.inside: ContextVar[UUID | None] = ContextVar("checkpoint_exporter_run", default=None)
        # Outermost runs going on: run id -> thread id.
        self._live: dict[UUID, str] = {}
        self._listeners: weakref.WeakSet[Any] = weakref.WeakSet()

    def subscribe(self, listener: RunListener) -> None:
        self._listeners.add(listener)

    def unsubscribe(self, listener: RunListener) -> None:
        self._listeners.discard(listener)

    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not self._listeners or not metadata or metadata.get("thread_id") is None:
            return
        self.inside.set(run_id)  # inherited by the run's tasks: see get()
        thread_id = str(metadata["thread_id"])
        if len(self._live) >= MAX_LIVE_RUNS:
            self._live.pop(next(iter(self._live)), None)
        self._live[run_id] = thread_id
        for listener in list(self._listeners):
            listener.run_began(thread_id, run_id)

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._ended(run_id, None)

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._ended(run_id, type(error).__name__)

    def get(self) -> RunWatcher | None:
        """What LangChain's configure hook adds to a callback manager: this handler, except
        inside a run going on (the hook reads only ``get()``, as of a context variable)."""
        run = self.inside.get()
        return None if run is not None and run in self._live else self

    def _ended(self, run_id: UUID, raised: str | None) -> None:
        thread_id = self._live.pop(run_id, None)
        if thread_id is None:
            return
        for listener in list(self._listeners):
            listener.run_ended(thread_id, run_id, raised)


_watcher: RunWatcher | None = None
_registering = threading.Lock()


def watch(listener: RunListener) -> RunWatcher:
    """Subscribe ``listener`` to run starts and ends, registering the hook once a process."""
    global _watcher
    with _registering:
        if _watcher is None:
            _watcher = RunWatcher()
            register_configure_hook(cast("ContextVar[Any]", _watcher), inheritable=False)
    _watcher.subscribe(listener)
    return _watcher
