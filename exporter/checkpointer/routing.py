"""A saver that sends each thread to one of several savers: the rollout, and the shards.

Two uses of one mechanism. The rollout sends a share of new threads to PostgreSQL and the rest
to memory (:class:`~exporter.checkpointer.placement.Placement`). The shards are several
``AsyncPostgresSaver`` instances over one pool: each holds its own lock around every query, so
threads on different shards no longer queue behind one another.

A thread is served by one saver for as long as it lives, so its calls stay ordered as on a
single saver. Where it goes is decided once per process, the first time it is seen: a thread
with checkpoints in memory stays in memory, one with checkpoints in PostgreSQL stays there
(whatever the percent now says, so changing it never moves a live thread, and going back to
0 % leaves every PostgreSQL thread readable and resumable); only a new thread is placed by the
rollout. Below 100 %, finding a thread costs one indexed query the first time a process sees
it. Its shard is a hash of its id.

Like the instrumented proxy, the class is built per combination of saver types and defines
only the methods every one of them overrides: what LangGraph and the conformance suite detect
as capabilities is what every thread can be given.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Collection, Coroutine, Mapping, Sequence
from typing import Any, Final

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.serde.base import SerializerProtocol

from exporter.checkpointer.cohorts import MEMORY, POSTGRES
from exporter.checkpointer.instrumented import TIMED, overrides
from exporter.checkpointer.placement import Placement, shard
from exporter.checkpointer.routed_methods import METHODS, Saver

# Threads whose saver is remembered; one forgotten is found again where its checkpoints are.
REMEMBERED: Final = 65_536


# The argument naming the thread, where it is not the config.
_THREAD_ARGUMENTS: Final = {
    "delete_thread": "thread_id",
    "copy_thread": "source_thread_id",
    "prune": "thread_ids",
}


# Methods whose first argument, when given positionally, is the call's config.
_CONFIG_FIRST: Final = frozenset(
    name
    for name, (operation, _) in TIMED.items()
    if operation in ("get", "get_tuple", "put", "put_writes", "list")
)


def _threads_of(
    method: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> list[tuple[str, RunnableConfig | None]] | None:
    """The threads (with the call's config) a call of ``method`` concerns, or None when it
    concerns every store (``delete_for_runs``, a list across threads). Never raises: a call
    whose arguments are wrong names no thread here, and fails on its own."""
    operation = TIMED[method][0] if method in TIMED else method
    if operation == "delete_for_runs":
        return None
    if operation in _THREAD_ARGUMENTS:
        value = args[0] if args else kwargs.get(_THREAD_ARGUMENTS[operation])
        if operation != "prune":
            return [] if value is None else [(str(value), None)]
        if not isinstance(value, list | tuple):  # an iterator would be used up here
            return []
        return [(str(thread), None) for thread in value]
    config = args[0] if args else kwargs.get("config")
    configurable = config.get("configurable") if isinstance(config, Mapping) else None
    thread = configurable.get("thread_id") if isinstance(configurable, Mapping) else None
    if thread is None:
        return None if operation == "list" else []
    return [(str(thread), config)]


class RoutingSaver(BaseCheckpointSaver[Any]):
    """Base of the per-types routers made by :func:`routing_saver`; never instantiated directly.

    ``in_postgres(thread_id)`` answers whether PostgreSQL holds checkpoints of a thread (on
    the shards' event loop); ``in_memory(thread_id)`` the same of the memory saver.
    """

    def __init__(
        self,
        *,
        shards: Sequence[Saver],
        memory: Saver | None,
        placement: Placement,
        in_postgres: Callable[[str], Coroutine[Any, Any, bool]] | None,
        in_memory: Callable[[str], bool] | None,
        remembered: int = REMEMBERED,
    ) -> None:
        # BaseCheckpointSaver.__init__ is not called: each saver keeps its own serializer.
        if not shards and memory is None:
            raise ValueError("a routing saver needs at least one saver")
        self.shards = tuple(shards)
        self.memory = memory
        self.placement = placement
        self._in_postgres = in_postgres
        self._in_memory = in_memory
        self._remembered = remembered
        self._known: dict[str, Saver] = {}
        self._counts = {POSTGRES: 0, MEMORY: 0}  # self._known's values, counted
        self._lock = threading.Lock()
        # Each store once: the shards share one database.
        self.stores: tuple[Saver, ...] = tuple(
            saver for saver in (memory, self.shards[0] if self.shards else None) if saver
        )

    @property
    def serde(self) -> SerializerProtocol:
        return self.stores[-1].serde

    @serde.setter
    def serde(self, value: SerializerProtocol) -> None:
        for saver in (*self.shards, *([self.memory] if self.memory else [])):
            saver.serde = value

    @property
    def config_specs(self) -> list[Any]:
        return self.stores[-1].config_specs

    def with_allowlist(self, extra_allowlist: Collection[tuple[str, ...]]) -> Saver:
        shards = [saver.with_allowlist(extra_allowlist) for saver in self.shards]
        memory = self.memory.with_allowlist(extra_allowlist) if self.memory else None
        return routing_saver(
            shards=shards,
            memory=memory,
            placement=self.placement,
            in_postgres=self._in_postgres,
            in_memory=self._in_memory,
        )

    def saver_for(self, thread_id: str) -> Saver | None:
        """The saver this process serves ``thread_id`` with, if it has decided."""
        known = self._known.get(thread_id)
        if known is None and self.memory is None:
            return self._shard(thread_id)
        return known

    def _shard(self, thread_id: str) -> Saver:
        return self.shards[shard(thread_id, len(self.shards))]

    def _remember(self, thread_id: str, saver: Saver) -> Saver:
        with self._lock:
            known = self._known.get(thread_id)
            if known is None:
                known = self._known[thread_id] = saver
                self._counts[self._backend(saver)] += 1
            while len(self._known) > self._remembered:
                oldest = self._known.pop(next(iter(self._known)))
                self._counts[self._backend(oldest)] -= 1
        return known

    def _backend(self, saver: Saver) -> str:
        return MEMORY if saver is self.memory else POSTGRES

    def forget(self, thread_id: str) -> None:
        with self._lock:
            known = self._known.pop(thread_id, None)
            if known is not None:
                self._counts[self._backend(known)] -= 1

    def placed(self) -> dict[str, int]:
        """Threads placed and remembered (the latest ``REMEMBERED``), by backend: ``postgres``
        (any shard) and ``memory``. Both zero without a memory saver, which places nothing."""
        with self._lock:
            return dict(self._counts)

    def served_by(
        self, method: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> Saver | None:
        """The saver serving this call of ``method``, when known without a query: the saver of
        the thread it names. None while that thread is not placed (:meth:`place` decides), and
        for a call no one saver serves (``delete_for_runs`` or a list across both stores, a
        prune over threads on different savers). The instrumented proxy labels each call
        with it, on every call: the usual one, a config naming its thread, takes a short path."""
        if args and method in _CONFIG_FIRST:
            config = args[0]
            configurable = config.get("configurable") if type(config) is dict else None
            thread = configurable.get("thread_id") if type(configurable) is dict else None
            if thread is not None:
                return self.saver_for(str(thread))
        threads = _threads_of(method, args, kwargs)
        if threads is None:
            return self.stores[0] if len(self.stores) == 1 else None
        return _one([self.saver_for(thread) for thread, _ in threads])

    def place(self, method: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Saver | None:
        """:meth:`served_by`, placing the threads of the call first, as the call itself would."""
        threads = _threads_of(method, args, kwargs)
        if threads is None:
            return self.served_by(method, args, kwargs)
        return _one([self.route(thread, config) for thread, config in threads])

    async def aplace(
        self, method: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> Saver | None:
        """Async twin of :meth:`place`."""
        threads = _threads_of(method, args, kwargs)
        if threads is None:
            return self.served_by(method, args, kwargs)
        return _one([await self.aroute(thread, config) for thread, config in threads])

    def _settled(self, thread_id: str) -> Saver | None:
        """The saver decided without asking PostgreSQL, if one can be."""
        known = self._known.get(thread_id)
        if known is not None:
            return known
        if self.memory is None:
            return self._shard(thread_id)
        if not self.shards:
            return self.memory
        if self._in_memory is not None and self._in_memory(thread_id):
            return self._remember(thread_id, self.memory)
        return None

    def _placed(self, thread_id: str, config: RunnableConfig | None, in_postgres: bool) -> Saver:
        assert self.memory is not None
        postgres = in_postgres or self.placement.wants_postgres(thread_id, config)
        return self._remember(thread_id, self._shard(thread_id) if postgres else self.memory)

    async def aroute(self, thread_id: str, config: RunnableConfig | None = None) -> Saver:
        settled = self._settled(thread_id)
        if settled is not None:
            return settled
        found = self._in_postgres is not None and await self._in_postgres(thread_id)
        return self._placed(thread_id, config, found)

    def route(self, thread_id: str, config: RunnableConfig | None = None) -> Saver:
        settled = self._settled(thread_id)
        if settled is not None:
            return settled
        found = False
        if self._in_postgres is not None:
            loop = getattr(self.shards[0], "loop", None)
            if loop is None:
                raise RuntimeError("the PostgreSQL savers run on no event loop")
            try:
                running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop:
                raise asyncio.InvalidStateError(
                    "Synchronous calls to a routing saver over AsyncPostgresSaver are only "
                    "allowed from a different thread than its event loop's"
                )
            found = asyncio.run_coroutine_threadsafe(self._in_postgres(thread_id), loop).result()
        return self._placed(thread_id, config, found)

    def __repr__(self) -> str:
        return f"<routing {len(self.shards)} PostgreSQL savers, memory={self.memory is not None}>"


def _one(savers: Sequence[Saver | None]) -> Saver | None:
    """The one saver all of ``savers`` are, or None."""
    first = savers[0] if savers else None
    return first if all(saver is first for saver in savers) else None


_classes: dict[tuple[type[Any], ...], type[RoutingSaver]] = {}
_classes_lock = threading.Lock()


def _inner_type(saver: Saver) -> type[Any]:
    inner = getattr(saver, "inner", None)  # an instrumented proxy: its class mirrors the inner
    return type(saver) if inner is None else type(inner)


def routing_class(types: Sequence[type[Any]]) -> type[RoutingSaver]:
    """The router class for savers of ``types``: the methods all of them override."""
    key = tuple(sorted(set(types), key=lambda t: (t.__module__, t.__qualname__)))
    with _classes_lock:
        cls = _classes.get(key)
        if cls is None:
            namespace = {
                name: functools.wraps(getattr(BaseCheckpointSaver, name))(method)
                for name, method in METHODS.items()
                if all(overrides(t, name) for t in key)
            }
            name = "Routing" + "".join(t.__name__ for t in key)
            cls = type(name, (RoutingSaver,), namespace)
            _classes[key] = cls
        return cls


def routing_saver(
    *,
    shards: Sequence[Saver],
    memory: Saver | None,
    placement: Placement,
    in_postgres: Callable[[str], Coroutine[Any, Any, bool]] | None,
    in_memory: Callable[[str], bool] | None,
) -> RoutingSaver:
    """A router over ``shards`` (PostgreSQL savers of one database) and ``memory``."""
    types = [_inner_type(s) for s in (*shards, *([memory] if memory is not None else []))]
    return routing_class(types)(
        shards=shards,
        memory=memory,
        placement=placement,
        in_postgres=in_postgres,
        in_memory=in_memory,
    )
