"""What each method of a routing saver does: send the call to the saver of its thread.

The router's class is assembled per combination of saver types from this table
(:data:`METHODS`), keeping only the methods every one of them overrides; the router itself
only decides where a thread lives. These functions see it through :class:`Router`, so they
need nothing of how it decides.
"""

from __future__ import annotations

import heapq
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, Final, Protocol

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver, CheckpointTuple

Saver = BaseCheckpointSaver[Any]


class Router(Protocol):
    """What the routed methods need of the router: the saver of a thread, and every store."""

    @property
    def stores(self) -> Sequence[Saver]:
        """Each store once (the shards share one database)."""
        ...

    def route(self, thread_id: str, config: RunnableConfig | None = None) -> Saver: ...

    async def aroute(self, thread_id: str, config: RunnableConfig | None = None) -> Saver: ...

    def forget(self, thread_id: str) -> None: ...


def _thread(config: RunnableConfig | None) -> str | None:
    if config is None:
        return None
    value = config.get("configurable", {}).get("thread_id")
    return None if value is None else str(value)


def _newest_first(item: CheckpointTuple) -> tuple[str, ...]:
    # heapq.merge takes ascending keys: invert each character of the checkpoint id.
    return tuple(chr(0x10FFFF - ord(c)) for c in item.config["configurable"]["checkpoint_id"])


def _routed(name: str) -> Callable[..., Any]:
    """A method whose first argument (or ``config=``) names the thread."""

    def method(self: Router, config: RunnableConfig, *args: Any, **kwargs: Any) -> Any:
        saver = self.route(_required(config), config)
        return getattr(saver, name)(config, *args, **kwargs)

    return method


def _arouted(name: str) -> Callable[..., Any]:
    async def method(self: Router, config: RunnableConfig, *args: Any, **kwargs: Any) -> Any:
        saver = await self.aroute(_required(config), config)
        return await getattr(saver, name)(config, *args, **kwargs)

    return method


def _required(config: RunnableConfig) -> str:
    thread = _thread(config)
    if thread is None:
        raise ValueError("the config names no thread_id (configurable.thread_id)")
    return thread


def _delta(self: Router, *, config: RunnableConfig, channels: Sequence[str]) -> Any:
    saver = self.route(_required(config), config)
    return saver.get_delta_channel_history(config=config, channels=channels)


async def _adelta(self: Router, *, config: RunnableConfig, channels: Sequence[str]) -> Any:
    saver = await self.aroute(_required(config), config)
    return await saver.aget_delta_channel_history(config=config, channels=channels)


def _list(
    self: Router,
    config: RunnableConfig | None,
    *,
    filter: dict[str, Any] | None = None,
    before: RunnableConfig | None = None,
    limit: int | None = None,
) -> Iterator[CheckpointTuple]:
    options: dict[str, Any] = {"filter": filter, "before": before, "limit": limit}
    thread = _thread(config)
    if thread is not None:
        yield from self.route(thread, config).list(config, **options)
        return
    if len(self.stores) == 1:
        yield from self.stores[0].list(config, **options)
        return
    streams = [sorted(s.list(config, **options), key=_newest_first) for s in self.stores]
    merged = heapq.merge(*streams, key=_newest_first)
    for count, item in enumerate(merged):
        if limit is not None and count >= limit:
            return
        yield item


async def _alist(
    self: Router,
    config: RunnableConfig | None,
    *,
    filter: dict[str, Any] | None = None,
    before: RunnableConfig | None = None,
    limit: int | None = None,
) -> AsyncIterator[CheckpointTuple]:
    options: dict[str, Any] = {"filter": filter, "before": before, "limit": limit}
    thread = _thread(config)
    if thread is not None:
        saver = await self.aroute(thread, config)
        async for item in saver.alist(config, **options):
            yield item
        return
    if len(self.stores) == 1:
        async for item in self.stores[0].alist(config, **options):
            yield item
        return
    streams = [
        sorted([item async for item in s.alist(config, **options)], key=_newest_first)
        for s in self.stores
    ]
    for count, item in enumerate(heapq.merge(*streams, key=_newest_first)):
        if limit is not None and count >= limit:
            return
        yield item


def _delete_thread(self: Router, thread_id: str) -> None:
    self.route(str(thread_id)).delete_thread(thread_id)
    self.forget(str(thread_id))


async def _adelete_thread(self: Router, thread_id: str) -> None:
    await (await self.aroute(str(thread_id))).adelete_thread(thread_id)
    self.forget(str(thread_id))


def _by_saver(pairs: Sequence[tuple[Saver, str]]) -> dict[int, tuple[Saver, list[str]]]:
    grouped: dict[int, tuple[Saver, list[str]]] = {}
    for saver, thread in pairs:
        grouped.setdefault(id(saver), (saver, []))[1].append(thread)
    return grouped


def _prune(self: Router, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
    pairs = [(self.route(str(t)), t) for t in thread_ids]
    for saver, threads in _by_saver(pairs).values():
        saver.prune(threads, strategy=strategy)


async def _aprune(
    self: Router, thread_ids: Sequence[str], *, strategy: str = "keep_latest"
) -> None:
    pairs = [(await self.aroute(str(t)), t) for t in thread_ids]
    for saver, threads in _by_saver(pairs).values():
        await saver.aprune(threads, strategy=strategy)


def _copy_thread(self: Router, source_thread_id: str, target_thread_id: str) -> None:
    source = self.route(str(source_thread_id))
    if self.route(str(target_thread_id)) is not source:
        raise NotImplementedError("copying a thread between two savers is not supported")
    source.copy_thread(source_thread_id, target_thread_id)


async def _acopy_thread(self: Router, source_thread_id: str, target_thread_id: str) -> None:
    source = await self.aroute(str(source_thread_id))
    if await self.aroute(str(target_thread_id)) is not source:
        raise NotImplementedError("copying a thread between two savers is not supported")
    await source.acopy_thread(source_thread_id, target_thread_id)


def _delete_for_runs(self: Router, run_ids: Sequence[str]) -> None:
    for saver in self.stores:
        saver.delete_for_runs(run_ids)


async def _adelete_for_runs(self: Router, run_ids: Sequence[str]) -> None:
    for saver in self.stores:
        await saver.adelete_for_runs(run_ids)


def _get_next_version(self: Router, current: Any, channel: None) -> Any:
    # Every saver of LangGraph numbers versions alike; a thread's stay on one saver.
    return self.stores[-1].get_next_version(current, channel)


METHODS: Final[dict[str, Callable[..., Any]]] = {
    "get": _routed("get"),
    "get_tuple": _routed("get_tuple"),
    "put": _routed("put"),
    "put_writes": _routed("put_writes"),
    "aget": _arouted("aget"),
    "aget_tuple": _arouted("aget_tuple"),
    "aput": _arouted("aput"),
    "aput_writes": _arouted("aput_writes"),
    "get_delta_channel_history": _delta,
    "aget_delta_channel_history": _adelta,
    "list": _list,
    "alist": _alist,
    "delete_thread": _delete_thread,
    "adelete_thread": _adelete_thread,
    "prune": _prune,
    "aprune": _aprune,
    "copy_thread": _copy_thread,
    "acopy_thread": _acopy_thread,
    "delete_for_runs": _delete_for_runs,
    "adelete_for_runs": _adelete_for_runs,
    "get_next_version": _get_next_version,
}
