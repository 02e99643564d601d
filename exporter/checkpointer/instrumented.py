"""A transparent, instrumented proxy around any LangGraph checkpoint saver.

The proxy's class is built per wrapped type and defines only the methods that
type overrides: LangGraph and tools detect capabilities by class attribute, so
a method the inner saver inherits from ``BaseCheckpointSaver`` stays inherited
here too. Real signatures are kept (``functools.wraps``), generators stay
generators, and exceptions and return values pass through untouched.

A saver that hands each call to one of several savers (the routing saver) may say
which one serves a call (:class:`Dispatcher`); its proxy then records each call
under the type of that saver, so the ``saver`` label names the backend that did the
work. Only such a saver's proxy class has those methods: a plain saver's calls take
the same path as before.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Final, Generic, Protocol, cast

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.serde.base import SerializerProtocol
from prometheus_client import CollectorRegistry
from typing_extensions import TypeVar

from exporter.checkpointer.backend import Backend
from exporter.checkpointer.call import Call
from exporter.checkpointer.cohorts import Cohorts
from exporter.checkpointer.locks import time_lock
from exporter.checkpointer.metrics import OperationStats, SaverMetrics, saver_metrics
from exporter.checkpointer.payload import measure_serde
from exporter.checkpointer.timed_methods import (
    context_manager_methods,
    forwarded,
    served_async,
    served_sync,
    timed_async,
    timed_async_iterator,
    timed_iterator,
    timed_sync,
)
from exporter.redact import redact


class SaverListener(Protocol):
    """Told of every finished call; workflow tracking is one, and the proxy knows no more of it."""

    def observe(
        self,
        operation: str,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        error: str | None,
    ) -> None: ...


class Dispatcher(Protocol):
    """A saver that hands each call to one of several savers, and says which serves it.

    ``stores`` holds a saver of every type a call may go to (their stats are exported, as
    zero, from the start). ``served_by`` answers without I/O, and is None when it cannot
    yet: then the proxy asks ``place`` (or ``aplace``) inside the call's own timing, since
    deciding may query the store. A call no one saver serves stays None, and is recorded
    under the dispatcher's own type. ``method`` is the name of the method called.
    """

    @property
    def stores(self) -> Sequence[BaseCheckpointSaver[Any]]: ...

    @property
    def memory(self) -> BaseCheckpointSaver[Any] | None:
        """The store that keeps nothing past the process (its calls are not tracked)."""
        ...

    def served_by(
        self, method: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> BaseCheckpointSaver[Any] | None: ...

    def place(
        self, method: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> BaseCheckpointSaver[Any] | None: ...

    async def aplace(
        self, method: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> BaseCheckpointSaver[Any] | None: ...


def dispatches(cls: type[Any]) -> bool:
    """Whether savers of ``cls`` implement :class:`Dispatcher`."""
    return all(callable(getattr(cls, name, None)) for name in ("served_by", "place", "aplace"))


# Any by default: a bare ``InstrumentedSaver`` annotation keeps meaning what it meant.
L = TypeVar("L", bound=SaverListener, default=Any)


class Kind(Enum):
    SYNC = "sync"
    ASYNC = "async"
    ITERATOR = "iterator"
    ASYNC_ITERATOR = "async_iterator"


# Every public method of BaseCheckpointSaver that does I/O, with the operation
# label it records under. A test checks this against BaseCheckpointSaver's
# public surface, so a LangGraph upgrade that adds a method cannot slip by.
TIMED: Final[Mapping[str, tuple[str, Kind]]] = {
    "get": ("get", Kind.SYNC),
    "get_tuple": ("get_tuple", Kind.SYNC),
    "list": ("list", Kind.ITERATOR),
    "put": ("put", Kind.SYNC),
    "put_writes": ("put_writes", Kind.SYNC),
    "delete_thread": ("delete_thread", Kind.SYNC),
    "delete_for_runs": ("delete_for_runs", Kind.SYNC),
    "copy_thread": ("copy_thread", Kind.SYNC),
    "prune": ("prune", Kind.SYNC),
    "get_delta_channel_history": ("get_delta_channel_history", Kind.SYNC),
    "aget": ("get", Kind.ASYNC),
    "aget_tuple": ("get_tuple", Kind.ASYNC),
    "alist": ("list", Kind.ASYNC_ITERATOR),
    "aput": ("put", Kind.ASYNC),
    "aput_writes": ("put_writes", Kind.ASYNC),
    "adelete_thread": ("delete_thread", Kind.ASYNC),
    "adelete_for_runs": ("delete_for_runs", Kind.ASYNC),
    "acopy_thread": ("copy_thread", Kind.ASYNC),
    "aprune": ("prune", Kind.ASYNC),
    "aget_delta_channel_history": ("get_delta_channel_history", Kind.ASYNC),
}
# Forwarded untimed where the inner saver overrides them: pure and hot.
FORWARDED: Final = ("get_next_version",)
# Defined on every proxy, delegating to the inner saver.
DELEGATED: Final = ("serde", "config_specs", "with_allowlist")


@dataclass(frozen=True, slots=True)
class Observation:
    """One finished operation, as handed to an ``observer`` (the load test uses it)."""

    operation: str
    seconds: float
    lock_wait: float
    payload_bytes: int
    error: str | None


@dataclass(frozen=True, slots=True)
class ErrorRecord:
    """The last failure, for the health endpoint; the message is already redacted."""

    operation: str
    error: str
    message: str
    at: datetime


Observer = Callable[[Observation], None]


class InstrumentedSaver(BaseCheckpointSaver[Any], Generic[L]):
    """Base of the per-type proxies made by :func:`instrument`; never instantiated directly.

    Generic in the listener it feeds, so ``build_checkpointer``'s saver types
    ``saver.tracker`` as the workflow tracker it is.
    """

    backend: Backend | None
    tracker: L | None
    """The listener fed by this saver's calls (``build_checkpointer`` sets its tracker), or None."""
    cohorts: Cohorts | None
    """The rollout figures ``build_checkpointer`` exports for this saver, kept alive by it."""

    def __init__(
        self, inner: BaseCheckpointSaver[Any], metrics: SaverMetrics, observer: Observer | None
    ) -> None:
        # BaseCheckpointSaver.__init__ is not called: the serializer lives on the inner saver.
        self._inner = inner
        self._metrics = metrics
        self._observer = observer
        self._name = _name(inner)
        # Every operation the proxy times is exported (as zero) from the start.
        self._stats = {
            operation: metrics.stats(operation, self._name)
            for name, (operation, _) in TIMED.items()
            if hasattr(type(self), name) and overrides(type(self), name)
        }
        # A dispatcher's calls, by the type of the saver serving them: those stats too.
        self._served: dict[type[Any], dict[str, OperationStats]] = {}
        if dispatches(type(inner)):
            for store in cast(Dispatcher, inner).stores:
                label = type(store).__name__
                self._served[type(store)] = {op: metrics.stats(op, label) for op in self._stats}
        # Calls served from memory: workflow tracking, which writes beside the checkpoints in
        # PostgreSQL, is not told of them, or a recovery check would miss their checkpoints.
        memory = cast(Dispatcher, inner).memory if dispatches(type(inner)) else None
        self._volatile = frozenset(
            id(stats) for stats in self._served.get(type(memory), {}).values()
        )
        self._last_error: ErrorRecord | None = None
        # LangGraph calls get_next_version for every channel of every step: bind the inner
        # saver's method on the instance, so calls skip a frame while the class attribute
        # (what capability checks look at) stays the proxy's own.
        for name in FORWARDED:
            if name in type(self).__dict__:
                setattr(self, name, getattr(inner, name))
        self.backend = None
        self.tracker = None
        self.cohorts = None

    @property
    def inner(self) -> BaseCheckpointSaver[Any]:
        """The wrapped saver, for its own API (``setup()``, ``conn``, ...)."""
        return self._inner

    @property
    def saver_name(self) -> str:
        """The wrapped saver's class name: the ``saver`` label of its calls, unless it is a
        dispatcher, whose calls are labelled with the saver serving each. A dispatcher over
        one store (shards of one database) is named for that store's savers."""
        return self._name

    @property
    def last_error(self) -> ErrorRecord | None:
        return self._last_error

    @property
    def serde(self) -> SerializerProtocol:
        return self._inner.serde

    @serde.setter
    def serde(self, value: SerializerProtocol) -> None:
        self._inner.serde = measure_serde(value)

    @property
    def config_specs(self) -> list[Any]:
        return self._inner.config_specs

    def with_allowlist(
        self, extra_allowlist: Collection[tuple[str, ...]]
    ) -> BaseCheckpointSaver[Any]:
        """Apply the allowlist to the inner saver and wrap its clone the same way.

        The base implementation would swap the serializer on a copy of this proxy,
        leaving the inner saver non-strict: resumed state would come back as dicts.
        """
        clone = self._inner.with_allowlist(extra_allowlist)
        if clone is self._inner:
            return self
        proxy = wrap_saver(clone, self._metrics, self._observer, self.backend, self.tracker)
        proxy.cohorts = self.cohorts
        return proxy

    def __getattr__(self, name: str) -> Any:
        # Private names are never forwarded: copy.copy probes them on a bare instance.
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._inner, name)

    def __repr__(self) -> str:
        return f"<instrumented {self._inner!r}>"

    def _serving(self, operation: str, saver: BaseCheckpointSaver[Any] | None) -> OperationStats:
        """The stats of ``operation`` on the saver a dispatcher named (None: its own)."""
        served = self._served.get(type(saver)) if saver is not None else None
        return self._stats[operation] if served is None else served[operation]

    def _placed(self, call: Call, saver: BaseCheckpointSaver[Any] | None) -> None:
        stats = self._serving(call.stats.operation, saver)
        if stats is not call.stats:
            call.serve(stats)

    def _finish(self, call: Call) -> None:
        stats, exc = call.stats, call.error
        error = None if exc is None else type(exc).__name__
        lock_wait = call.lock_wait if call.locked else None
        stats.record(call.spent, lock_wait, call.payload, error, call.args, call.kwargs, call.ended)
        if exc is not None:
            message = redact(str(exc))[:500]
            self._last_error = ErrorRecord(stats.operation, error or "", message, datetime.now(UTC))
        if self._observer is not None:
            self._observer(
                Observation(stats.operation, call.spent, call.lock_wait, call.payload, error)
            )
        if self.tracker is not None and id(stats) not in self._volatile:
            self.tracker.observe(stats.operation, call.args, call.kwargs, error)


def _name(inner: BaseCheckpointSaver[Any]) -> str:
    if dispatches(type(inner)):
        stores = cast(Dispatcher, inner).stores
        if len(stores) == 1:
            return type(stores[0]).__name__
    return type(inner).__name__


_FACTORIES: Final[Mapping[Kind, Callable[..., Callable[..., Any]]]] = {
    Kind.SYNC: timed_sync,
    Kind.ASYNC: timed_async,
    Kind.ITERATOR: timed_iterator,
    Kind.ASYNC_ITERATOR: timed_async_iterator,
}
_SERVED_FACTORIES: Final[Mapping[Kind, Callable[..., Callable[..., Any]]]] = {
    Kind.SYNC: served_sync,
    Kind.ASYNC: served_async,
    Kind.ITERATOR: functools.partial(timed_iterator, served=True),
    Kind.ASYNC_ITERATOR: functools.partial(timed_async_iterator, served=True),
}


def overrides(cls: type[Any], name: str) -> bool:
    """Whether ``cls`` replaces ``BaseCheckpointSaver``'s own ``name``."""
    return getattr(cls, name, None) is not getattr(BaseCheckpointSaver, name, None)


_classes: dict[type[Any], type[InstrumentedSaver[Any]]] = {}
_classes_lock = threading.Lock()


def instrumented_class(inner_type: type[BaseCheckpointSaver[Any]]) -> type[InstrumentedSaver[Any]]:
    """The proxy class for ``inner_type``, built once and cached."""
    with _classes_lock:
        cls = _classes.get(inner_type)
        if cls is not None:
            return cls
        namespace: dict[str, Any] = {"__module__": __name__}
        factories = _SERVED_FACTORIES if dispatches(inner_type) else _FACTORIES
        for name, (operation, kind) in TIMED.items():
            if overrides(inner_type, name):
                namespace[name] = factories[kind](name, operation, getattr(inner_type, name))
        for name in FORWARDED:
            if overrides(inner_type, name):
                namespace[name] = forwarded(name, getattr(inner_type, name))
        namespace.update(context_manager_methods(inner_type))
        cls = type(f"Instrumented{inner_type.__name__}", (InstrumentedSaver,), namespace)
        _classes[inner_type] = cls
        return cls


def wrap_saver(
    inner: BaseCheckpointSaver[Any],
    metrics: SaverMetrics,
    observer: Observer | None,
    backend: Backend | None,
    tracker: L | None = None,
) -> InstrumentedSaver[L]:
    """Instrument ``inner`` into ``metrics``: the one place the proxy is assembled."""
    inner.serde = measure_serde(inner.serde)
    time_lock(inner, metrics)
    proxy = instrumented_class(type(inner))(inner, metrics, observer)
    proxy.backend = backend
    proxy.tracker = tracker
    return proxy


def instrument(
    saver: BaseCheckpointSaver[Any],
    registry: CollectorRegistry | None = None,
    *,
    observer: Observer | None = None,
) -> InstrumentedSaver[Any]:
    """Wrap ``saver`` so every operation is timed and counted in ``registry``.

    The result is itself a ``BaseCheckpointSaver`` for ``StateGraph.compile``.
    Instrumenting replaces the saver's lock and serializer with measuring
    equivalents, so do it before the saver is first used. An already
    instrumented saver is returned as it is.
    """
    if isinstance(saver, InstrumentedSaver):
        return saver
    return wrap_saver(saver, saver_metrics(registry), observer, None)
