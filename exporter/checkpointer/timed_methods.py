"""The methods of an instrumented proxy: a factory per kind of timed method, and the forwarded.

Each factory makes the proxy's method for one method of the inner saver: it forwards the
call and times it, recording under the saver that served it where the inner saver is a
dispatcher. They see the proxy through :class:`Proxy`, so this module needs nothing of how
the proxy class is built.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any, Final, Protocol

from langgraph.checkpoint.base import BaseCheckpointSaver

from exporter.checkpointer.call import Call, CallOwner
from exporter.checkpointer.metrics import OperationStats

# What an exhausted iterator's next() returns here, which no item can be.
_DONE: Final = object()


class Proxy(CallOwner, Protocol):
    """What the methods need of the proxy: the inner saver, and the stats to record under."""

    @property
    def _inner(self) -> BaseCheckpointSaver[Any]: ...

    @property
    def _stats(self) -> Mapping[str, OperationStats]: ...

    def _serving(
        self, operation: str, saver: BaseCheckpointSaver[Any] | None
    ) -> OperationStats: ...

    def _placed(self, call: Call, saver: BaseCheckpointSaver[Any] | None) -> None: ...


def timed_sync(name: str, operation: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def method(self: Proxy, *args: Any, **kwargs: Any) -> Any:
        with Call(self, self._stats[operation], args, kwargs):
            return getattr(self._inner, name)(*args, **kwargs)

    return method


def timed_async(name: str, operation: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def method(self: Proxy, *args: Any, **kwargs: Any) -> Any:
        with Call(self, self._stats[operation], args, kwargs):
            return await getattr(self._inner, name)(*args, **kwargs)

    return method


def timed_iterator(
    name: str, operation: str, fn: Callable[..., Any], *, served: bool = False
) -> Callable[..., Any]:
    """Time only the inner iterator's own steps; record when iteration ends, however it ends.

    ``served``: for a dispatcher, recorded under the saver that serves the call, placing
    the thread inside the first step's timing when it has no saver yet.
    """

    @functools.wraps(fn)
    def method(self: Proxy, *args: Any, **kwargs: Any) -> Iterator[Any]:
        inner: Any = self._inner
        stats = self._stats[operation]
        if served:
            stats = self._serving(operation, inner.served_by(name, args, kwargs))
        timing = Call(self, stats, args, kwargs, once=False)
        iterator: Iterator[Any] | None = None
        try:
            while True:
                with timing:
                    if iterator is None:
                        if served and stats is self._stats[operation]:
                            self._placed(timing, inner.place(name, args, kwargs))
                        iterator = iter(getattr(inner, name)(*args, **kwargs))
                    item = next(iterator, _DONE)
                if item is _DONE:
                    return
                yield item
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()
            timing.finish()

    return method


def timed_async_iterator(
    name: str, operation: str, fn: Callable[..., Any], *, served: bool = False
) -> Callable[..., Any]:
    """Async twin of :func:`timed_iterator`. Closing it closes the inner generator at once,
    which releases the saver's lock that generator holds while it yields."""

    @functools.wraps(fn)
    async def method(self: Proxy, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        inner: Any = self._inner
        stats = self._stats[operation]
        if served:
            stats = self._serving(operation, inner.served_by(name, args, kwargs))
        timing = Call(self, stats, args, kwargs, once=False)
        iterator: AsyncIterator[Any] | None = None
        try:
            while True:
                with timing:
                    if iterator is None:
                        if served and stats is self._stats[operation]:
                            self._placed(timing, await inner.aplace(name, args, kwargs))
                        iterator = aiter(getattr(inner, name)(*args, **kwargs))
                    item = await anext(iterator, _DONE)
                if item is _DONE:
                    return
                yield item
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                await aclose()
            timing.finish()

    return method


def served_sync(name: str, operation: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """:func:`timed_sync` for a dispatcher: recorded under the saver that serves the call."""

    @functools.wraps(fn)
    def method(self: Proxy, *args: Any, **kwargs: Any) -> Any:
        inner: Any = self._inner
        stats = self._serving(operation, inner.served_by(name, args, kwargs))
        with Call(self, stats, args, kwargs) as call:
            if stats is self._stats[operation]:
                self._placed(call, inner.place(name, args, kwargs))
            return getattr(inner, name)(*args, **kwargs)

    return method


def served_async(name: str, operation: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def method(self: Proxy, *args: Any, **kwargs: Any) -> Any:
        inner: Any = self._inner
        stats = self._serving(operation, inner.served_by(name, args, kwargs))
        with Call(self, stats, args, kwargs) as call:
            if stats is self._stats[operation]:
                self._placed(call, await inner.aplace(name, args, kwargs))
            return await getattr(inner, name)(*args, **kwargs)

    return method


def forwarded(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def method(self: Proxy, *args: Any, **kwargs: Any) -> Any:
        return getattr(self._inner, name)(*args, **kwargs)

    return method


def context_manager_methods(inner_type: type[Any]) -> dict[str, Callable[..., Any]]:
    """Forward ``with``/``async with`` when the inner saver supports them."""
    methods: dict[str, Callable[..., Any]] = {}
    if hasattr(inner_type, "__enter__"):

        def __enter__(self: Proxy) -> Any:
            entered = self._inner.__enter__()  # type: ignore[attr-defined]
            return self if entered is self._inner else entered

        def __exit__(self: Proxy, *exc_info: Any) -> Any:
            return self._inner.__exit__(*exc_info)  # type: ignore[attr-defined]

        methods.update(__enter__=__enter__, __exit__=__exit__)
    if hasattr(inner_type, "__aenter__"):

        async def __aenter__(self: Proxy) -> Any:
            entered = await self._inner.__aenter__()  # type: ignore[attr-defined]
            return self if entered is self._inner else entered

        async def __aexit__(self: Proxy, *exc_info: Any) -> Any:
            return await self._inner.__aexit__(*exc_info)  # type: ignore[attr-defined]

        methods.update(__aenter__=__aenter__, __aexit__=__aexit__)
    return methods
