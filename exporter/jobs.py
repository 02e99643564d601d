"""Background jobs: work a sidecar runs between scrapes, and the statuses collectors report.

A job (the canary, the start-up recovery check) is started once with the
sidecar and runs until cancelled, asking ``leading()`` when its work must happen
on one sidecar per database only. Collectors and the health document never hold
a job: they read its last status from :class:`Statuses`, by a typed key. Adding
a job is one class with ``key``, ``work``, ``status`` and ``close``, and one
line where the sidecar lists its jobs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, cast

S = TypeVar("S")


@dataclass(frozen=True, slots=True)
class JobKey(Generic[S]):
    """A job's name, typed by the status it publishes."""

    name: str


class Job(Protocol[S]):
    """Work the sidecar starts with itself and cancels, then closes, when it stops."""

    @property
    def key(self) -> JobKey[S]: ...

    async def work(self, leading: Callable[[], bool]) -> None:
        """Run until cancelled; ``leading()`` says whether this sidecar leads right now."""
        ...

    def status(self) -> S | None:
        """The latest status to report; None before there is one."""
        ...

    async def close(self) -> None:
        """Release what the job holds; safe to call twice."""
        ...


class Statuses:
    """The jobs' statuses at one moment, read by typed key."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[JobKey[Any], object] | None = None) -> None:
        self._values = dict(values or {})

    @classmethod
    def of(cls, jobs: Iterable[Job[Any]]) -> Statuses:
        return cls({job.key: job.status() for job in jobs})

    def get(self, key: JobKey[S]) -> S | None:
        return cast("S | None", self._values.get(key))
