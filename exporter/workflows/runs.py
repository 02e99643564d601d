"""When a graph run ends: the one thing about a workflow that its checkpoints cannot say.

A run stopped at a static breakpoint (``interrupt_before`` / ``interrupt_after``) writes
nothing, so its last checkpoint looks like a step still executing. The process running the
graph knows better once the run returns. LangGraph reports every run to LangChain's callback
system, with the run's ``thread_id`` in its metadata; :func:`watch` registers one handler
through LangChain's process-wide configure hook (the mechanism tracers use), so every run
is seen without any change to the application, and forwards the start and end of each
outermost run of a thread to the listening trackers.

Only chain events are taken (model, tool and retriever events are ignored by flag), and
the handler runs inline: a dictionary operation and a deque append per event.
"""

from __future__ import annotations

import threading
import weakref
from contextvars import ContextVar
from typing import Any, Final, Protocol
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
        # Every live run with a thread: run id -> (thread id, outermost for that thread).
        self._live: dict[UUID, tuple[str, bool]] = {}
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
        parent_run_id: UUID | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not self._listeners or not metadata or metadata.get("thread_id") is None:
            return
        thread_id = str(metadata["thread_id"])
        parent = self._live.get(parent_run_id) if parent_run_id is not None else None
        outermost = parent is None or parent[0] != thread_id
        if len(self._live) >= MAX_LIVE_RUNS:
            self._live.pop(next(iter(self._live)), None)
        self._live[run_id] = (thread_id, outermost)
        if outermost:
            for listener in list(self._listeners):
                listener.run_began(thread_id, run_id)

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._ended(run_id, None)

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._ended(run_id, type(error).__name__)

    def _ended(self, run_id: UUID, raised: str | None) -> None:
        live = self._live.pop(run_id, None)
        if live is not None and live[1]:
            for listener in list(self._listeners):
                listener.run_ended(live[0], run_id, raised)


_watcher: RunWatcher | None = None
_registering = threading.Lock()


def watch(listener: RunListener) -> RunWatcher:
    """Subscribe ``listener`` to run starts and ends, registering the hook once a process."""
    global _watcher
    with _registering:
        if _watcher is None:
            _watcher = RunWatcher()
            hook: ContextVar[RunWatcher | None] = ContextVar(
                "checkpoint_exporter_run_watcher", default=_watcher
            )
            register_configure_hook(hook, inheritable=True)
    _watcher.subscribe(listener)
    return _watcher
