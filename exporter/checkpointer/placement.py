"""Where a new thread goes: PostgreSQL or memory, and which of the PostgreSQL savers.

Pure and stable across processes and restarts: a thread's share bucket and shard come from
a hash of its id alone, so every replica (and the same replica after a restart) sends a new
thread the same way. Threads that already have checkpoints somewhere are not decided here:
the routing saver finds them where they are.
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

# Buckets of the rollout share: 10,000 give percentages to two decimals.
BUCKETS: Final = 10_000


def _digest(thread_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(thread_id.encode(), digest_size=8).digest(), "big")


def bucket(thread_id: str) -> float:
    """The thread's place in [0, 100): it goes to PostgreSQL when below the rollout percent."""
    return (_digest(thread_id) % BUCKETS) * 100 / BUCKETS


def shard(thread_id: str, shards: int) -> int:
    """Which of ``shards`` PostgreSQL savers serves the thread (independent of its bucket)."""
    return (_digest(thread_id) // BUCKETS) % shards


@dataclass(frozen=True, slots=True)
class Placement:
    """The rollout: ``percent`` of new threads to PostgreSQL, plus those the include list names.

    ``include`` holds shell patterns of thread ids (``internal-*``); ``include_key`` names a
    key of the run's ``configurable`` or metadata whose truthy value sends the thread to
    PostgreSQL whatever the percent (internal testing first).
    """

    percent: float = 100.0
    include: Sequence[str] = ()
    include_key: str | None = None

    def wants_postgres(self, thread_id: str, config: Mapping[str, Any] | None = None) -> bool:
        if any(fnmatch.fnmatchcase(thread_id, pattern) for pattern in self.include):
            return True
        if (
            self.include_key is not None
            and config is not None
            and _flagged(config, self.include_key)
        ):
            return True
        return bucket(thread_id) < self.percent


def _flagged(config: Mapping[str, Any], key: str) -> bool:
    for section in ("configurable", "metadata"):
        values = config.get(section)
        if isinstance(values, Mapping) and values.get(key):
            return True
    return False
