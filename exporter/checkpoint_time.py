"""When a LangGraph checkpoint was taken, read from its id or its ``ts``: no query needed."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Final

# LangGraph's checkpoint ids: UUIDv6, whose text sorts by time (60-bit count of 100 ns).
UUID6_PATTERN: Final = "^[0-9a-f]{8}-[0-9a-f]{4}-6[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$"
_UUID6 = re.compile(UUID6_PATTERN)
_UUID_EPOCH_TICKS: Final = 0x01B21DD213814000  # 100 ns ticks from 1582-10-15 to 1970-01-01


def uuid6_epoch(checkpoint_id: str) -> float | None:
    """Unix time encoded in a UUIDv6 checkpoint id, or None for any other id."""
    if not _UUID6.match(checkpoint_id):
        return None
    digits = checkpoint_id.replace("-", "")
    ticks = (int(digits[:12], 16) << 12) | int(digits[13:16], 16)
    return (ticks - _UUID_EPOCH_TICKS) / 10_000_000


def iso_epoch(ts: str) -> float | None:
    """Unix time of a checkpoint's ISO 8601 ``ts`` (naive means UTC), or None if malformed."""
    try:
        moment = datetime.fromisoformat(ts)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def checkpoint_epoch(checkpoint_id: str | None, ts: str | None) -> float | None:
    """When a checkpoint was taken: from its UUIDv6 id, else from its ``ts``."""
    if checkpoint_id is not None and (epoch := uuid6_epoch(checkpoint_id)) is not None:
        return epoch
    return iso_epoch(ts) if ts is not None else None
