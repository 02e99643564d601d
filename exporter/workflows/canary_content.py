"""What a canary checkpoint holds: derived from a seed, so any sidecar can rebuild it.

Pure: the canary job (exporter.workflows.canary) writes what :func:`new_canary`
makes, and checks what it loads with :func:`expected_content` and
:func:`differences`.
"""

from __future__ import annotations

import random
import string
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from langgraph.checkpoint.base import LATEST_VERSION, ChannelVersions, Checkpoint, CheckpointTuple
from langgraph.checkpoint.base.id import uuid6

from exporter.workflows.schema import CANARY_THREAD_ID

METADATA_KEY: Final = "checkpoint_exporter_canary"
# Recorded in the metadata; bumped if the content derived from a seed ever changes.
FORMAT: Final = 1
TASK_PATH: Final = "~canary"
_TEXT_ALPHABET: Final = string.ascii_letters + string.digits + " -_.:/äöüé€"


@dataclass(frozen=True, slots=True)
class CanaryContent:
    """Everything one canary checkpoint holds, as written and as it must load back."""

    checkpoint: Checkpoint
    metadata: dict[str, Any]
    task_id: str
    writes: tuple[tuple[str, Any], ...]

    @property
    def checkpoint_id(self) -> str:
        return self.checkpoint["id"]

    @property
    def pending_writes(self) -> list[tuple[str, str, Any]]:
        return [(self.task_id, channel, value) for channel, value in self.writes]


def canary_content(seed: str, checkpoint_id: str, ts: str) -> CanaryContent:
    """The canary for ``seed``: pure, so a reader can rebuild it from the metadata alone.

    ``payload`` and ``history`` are not primitives, so LangGraph stores them in
    ``checkpoint_blobs``; ``seed`` stays inline in the checkpoint row.
    """
    rng = random.Random(f"{FORMAT}:{seed}")
    payload = {
        "numbers": [rng.randrange(-(2**40), 2**40) for _ in range(16)],
        "ratio": rng.random(),
        "text": "".join(rng.choices(_TEXT_ALPHABET, k=64)),
        "raw": rng.randbytes(32),
        "nested": {"flags": [rng.random() < 0.5 for _ in range(8)], "nothing": None},
    }
    history = [{"step": step, "value": rng.random()} for step in range(4)]
    versions: ChannelVersions = {
        "payload": f"{1:032}.{seed}",
        "history": f"{2:032}.{seed}",
        "seed": f"{3:032}.{seed}",
    }
    checkpoint = Checkpoint(
        v=LATEST_VERSION,
        id=checkpoint_id,
        ts=ts,
        channel_values={"payload": payload, "history": history, "seed": seed},
        channel_versions=versions,
        versions_seen={"canary": dict(versions)},
        updated_channels=sorted(versions),
    )
    writes = (
        ("payload", {"delta": rng.randbytes(16), "count": rng.randrange(1_000_000)}),
        ("history", [{"step": 4, "value": rng.random()}]),
    )
    metadata = {
        "source": "update",
        "step": 0,
        "parents": {},
        METADATA_KEY: {"format": FORMAT, "seed": seed, "id": checkpoint_id, "ts": ts},
    }
    return CanaryContent(checkpoint, metadata, f"canary-{seed}", writes)


def new_canary() -> CanaryContent:
    """A canary with a fresh seed, a new checkpoint id and the current time."""
    seed = f"{random.getrandbits(64):016x}"
    return canary_content(seed, str(uuid6(clock_seq=-1)), datetime.now(UTC).isoformat())


def expected_content(metadata: Mapping[str, Any]) -> CanaryContent | None:
    """The content a stored canary must have, rebuilt from its metadata; None if unrecognised."""
    recorded = metadata.get(METADATA_KEY)
    if not isinstance(recorded, Mapping) or recorded.get("format") != FORMAT:
        return None
    seed, checkpoint_id, ts = recorded.get("seed"), recorded.get("id"), recorded.get("ts")
    if not all(isinstance(value, str) for value in (seed, checkpoint_id, ts)):
        return None
    return canary_content(str(seed), str(checkpoint_id), str(ts))


CHECKPOINT_FIELDS: Final = (
    "v",
    "ts",
    "channel_values",
    "channel_versions",
    "versions_seen",
    "updated_channels",
)


def differences(expected: CanaryContent, loaded: CheckpointTuple) -> list[str]:
    """The fields in which ``loaded`` differs from ``expected`` (empty: identical)."""
    configurable = loaded.config.get("configurable", {})
    found: list[str] = []
    if configurable.get("thread_id") != CANARY_THREAD_ID:
        found.append("thread_id")
    if {configurable.get("checkpoint_id"), loaded.checkpoint.get("id")} != {expected.checkpoint_id}:
        found.append("checkpoint_id")
    for name in CHECKPOINT_FIELDS:
        if loaded.checkpoint.get(name) != expected.checkpoint.get(name):
            found.append(name)
    if dict(loaded.metadata) != expected.metadata:
        found.append("metadata")
    if list(loaded.pending_writes or []) != expected.pending_writes:
        found.append("pending_writes")
    return found


class CanaryMismatchError(Exception):
    """What the store gave back is not what was written."""

    def __init__(self, fields: list[str]) -> None:
        super().__init__(f"differs in {', '.join(fields)}")
        self.fields = fields
