"""Hard deadlines for database work on the request path: the answer comes on time.

``asyncio.timeout`` alone does not bound a psycopg query. psycopg answers the
cancellation of a running query by asking the server to cancel it and then
waiting for the query to end, up to 5 seconds each; over a slow or dying
network a collector with a 1 s deadline held a scrape for 5 s. :func:`within`
stops waiting at the deadline and leaves that clean-up to finish in the
background.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

# Work given up at its deadline, still cleaning up; kept so it is not garbage-collected.
_DETACHED: set[asyncio.Future[Any]] = set()


async def within(deadline: float, work: Coroutine[Any, Any, T]) -> T:
    """The result of ``work`` if it ends within ``deadline`` seconds, else ``TimeoutError``.

    Either way the caller resumes by the deadline: unfinished work is cancelled
    and finishes its clean-up (closing or cancelling a query) on its own. Its
    exceptions are those of ``work``; cancelling the caller cancels the work too.
    """
    task = asyncio.ensure_future(work)
    await settle(deadline, (task,))
    if not task.done():  # detached: its cancellation is still under way
        raise TimeoutError(f"no answer within {deadline:g}s")
    return task.result()


async def settle(deadline: float, tasks: Sequence[asyncio.Future[Any]]) -> None:
    """Wait up to ``deadline`` seconds for ``tasks``; cancel and detach those not done by then.

    One wait for many tasks, each as :func:`within` would bound it alone; the
    caller reads the done ones' results. Cancelling the caller cancels them all.
    """
    if not tasks:
        return
    try:
        await asyncio.wait(tasks, timeout=deadline)
    except asyncio.CancelledError:
        for task in tasks:
            _detach(task)
        raise
    for task in tasks:
        if not task.done():
            _detach(task)


def _detach(task: asyncio.Future[Any]) -> None:
    task.cancel()
    _DETACHED.add(task)
    task.add_done_callback(_forget)


def _forget(task: asyncio.Future[Any]) -> None:
    _DETACHED.discard(task)
    if not task.cancelled():
        task.exception()  # Retrieved: an error after the deadline was already reported.
