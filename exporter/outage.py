"""A database outage in the log as three kinds of line, not a warning every second.

While PostgreSQL is down, psycopg_pool warns ``error connecting in 'pool'`` at
every reconnection attempt (each 1 to 4 s, per pool), and every health probe
fails again. An operator needs to know when the outage began, that it goes on,
and when and after how long it ended. :class:`OutageLog` turns the failures into
``database_unreachable`` once, ``database_still_unreachable`` at most every
``remind_every`` seconds (with the attempts folded into it), and
``database_reachable_again`` with the outage's length. :func:`collapse_pool_warnings`
feeds it psycopg_pool's warnings in place of logging them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from time import monotonic
from typing import Final

from exporter.causes import cause_of
from exporter.log import get_logger
from exporter.redact import describe_error

log = get_logger("database")

REMIND_EVERY: Final = 60.0
POOL_LOGGER: Final = "psycopg.pool"
# psycopg_pool's message templates (record.msg, before formatting) this module answers for.
POOL_CONNECT_FAILED: Final = "error connecting in %r: %s"
POOL_CONNECTION_ADDED: Final = "adding new connection to the pool"


@dataclass(slots=True)
class _Outage:
    started: float
    cause: str
    attempts: int
    reminded: float


class OutageLog:
    """Collapses the failures of one outage into a start, reminders and an end."""

    def __init__(
        self, remind_every: float = REMIND_EVERY, clock: Callable[[], float] = monotonic
    ) -> None:
        self._remind_every = remind_every
        self._clock = clock
        self._outage: _Outage | None = None

    @property
    def down(self) -> bool:
        """Whether an outage has begun and not yet ended."""
        return self._outage is not None

    def failed(self, source: str, cause: str, message: str) -> None:
        """The database could not be reached by ``source`` (a pool, the health check)."""
        now = self._clock()
        outage = self._outage
        if outage is None:
            self._outage = _Outage(now, cause, 1, now)
            log.warning("database_unreachable", source=source, cause=cause, message=message)
            return
        outage.attempts += 1
        if cause != outage.cause or now - outage.reminded >= self._remind_every:
            outage.cause, outage.reminded = cause, now
            log.warning(
                "database_still_unreachable",
                source=source,
                cause=cause,
                message=message,
                outage_seconds=round(now - outage.started, 3),
                failed_attempts=outage.attempts,
            )

    def answered(self, source: str) -> None:
        """The database answered ``source``: the outage, if one was on, is over."""
        outage, self._outage = self._outage, None
        if outage is not None:
            log.info(
                "database_reachable_again",
                source=source,
                outage_seconds=round(self._clock() - outage.started, 3),
                failed_attempts=outage.attempts,
                cause=outage.cause,
            )


class _PoolWarnings(logging.Filter):
    """Takes psycopg_pool's connection failures off the log and into an :class:`OutageLog`."""

    def __init__(self, outages: OutageLog) -> None:
        super().__init__()
        self.outages = outages

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        if record.msg == POOL_CONNECT_FAILED and len(args) == 2:
            name, error = args
            if isinstance(error, BaseException):
                self.outages.failed(f"pool {name}", cause_of(error), describe_error(error))
                return False
        elif record.msg == POOL_CONNECTION_ADDED:
            self.outages.answered("pool")
        return True


@contextmanager
def collapse_pool_warnings(outages: OutageLog) -> Iterator[None]:
    """For the duration, psycopg_pool's connection failures go to ``outages`` instead."""
    pool_log = logging.getLogger(POOL_LOGGER)
    pool_filter = _PoolWarnings(outages)
    pool_log.addFilter(pool_filter)
    try:
        yield
    finally:
        pool_log.removeFilter(pool_filter)
