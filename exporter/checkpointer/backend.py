"""What the factory built: which saver, on which pool, and whether it fell back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from psycopg_pool import AsyncConnectionPool

POSTGRES = "PostgresSaver"
MEMORY = "MemorySaver"


@dataclass(frozen=True, slots=True)
class Backend:
    """The checkpointer's storage as the health endpoint and collectors describe it.

    ``checkpointer`` uses the design note's names (``PostgresSaver`` or
    ``MemorySaver``); ``fallback_reason`` is set when PostgreSQL was requested
    but the in-memory saver runs instead.
    """

    checkpointer: str
    schema: str
    connection_string: str | None = field(default=None, repr=False)
    pool: AsyncConnectionPool[Any] | None = None
    fallback_reason: str | None = None

    @property
    def postgres_requested(self) -> bool:
        return self.connection_string is not None
