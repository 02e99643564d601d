"""Waiting on what a test can observe, not on the clock.

Background tasks (a canary loop, a tracker's flusher, a child process) offer no event to
await, so a test polls what they change. The deadline is a cap for a wedged component, not
a guess at how long the work takes: generous, since CI runs on a loaded two-core machine.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")

CAP = 60.0


@overload
async def eventually(
    check: Callable[[], Awaitable[T | None]],
    *,
    within: float = ...,
    what: str = ...,
    poll: float = ...,
) -> T: ...


@overload
async def eventually(
    check: Callable[[], T | None], *, within: float = ..., what: str = ..., poll: float = ...
) -> T: ...


async def eventually(
    check: Callable[[], Any],
    *,
    within: float = CAP,
    what: str = "the condition",
    poll: float = 0.02,
) -> Any:
    """The first truthy result of ``check`` (a function or a coroutine function)."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:g} s waiting for {what}")
        await asyncio.sleep(poll)
