"""A child process's JSON log, read as it is written: tests wait on what it says, not the clock.

``serve`` listens on port 0 and logs ``sidecar_started`` with the address it bound, so a
test starting it as a process learns its port from the log instead of choosing a free port
beforehand (a port closed and reused may be taken meanwhile).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import IO, Any


class LogStream:
    """Every line ``stream`` gives, kept as read on a thread of its own until it ends.

    Reading continuously also keeps the child from blocking on a full pipe; the stream is
    closed at its end (:meth:`output` waits for that).
    """

    def __init__(self, stream: IO[bytes]) -> None:
        self._lines: list[bytes] = []
        self._ended = False
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[bytes]) -> None:
        try:
            for line in stream:
                with self._changed:
                    self._lines.append(line)
                    self._changed.notify_all()
        finally:
            stream.close()
            with self._changed:
                self._ended = True
                self._changed.notify_all()

    def entries(self) -> list[dict[str, Any]]:
        """The JSON entries read so far (other lines skipped)."""
        with self._changed:
            lines = list(self._lines)
        return [entry for entry in map(_entry, lines) if entry is not None]

    def mark(self) -> int:
        """Where the output is now: ``wait_for(..., after=mark)`` sees only what follows."""
        with self._changed:
            return len(self._lines)

    def wait_for(self, event: str, seconds: float, after: int = 0) -> dict[str, Any]:
        """The first entry logging ``event`` past line ``after``, once written."""
        return self.wait_until(
            lambda entry: entry.get("event") == event, repr(event), seconds, after
        )

    def wait_until(
        self, matches: Callable[[dict[str, Any]], bool], what: str, seconds: float, after: int = 0
    ) -> dict[str, Any]:
        """The first entry past line ``after`` that ``matches``, once written; fails if the
        stream ends first, or after ``seconds`` (a cap for a wedged child, not a guess at
        how long it takes)."""
        deadline = time.monotonic() + seconds
        seen = after
        with self._changed:
            while True:
                for line in self._lines[seen:]:
                    entry = _entry(line)
                    if entry is not None and matches(entry):
                        return entry
                seen = len(self._lines)
                assert not self._ended, f"the output ended without {what}:\n{self.text()}"
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"no {what} within {seconds:g} s:\n{self.text()}"
                self._changed.wait(remaining)

    def text(self) -> str:
        with self._changed:
            return b"".join(self._lines).decode("utf-8", "replace")

    def output(self, timeout: float = 30) -> bytes:
        """Everything the stream gave, once it has ended (the child has exited)."""
        self._reader.join(timeout)
        assert not self._reader.is_alive(), "the output did not end"
        return b"".join(self._lines)


def _entry(line: bytes) -> dict[str, Any] | None:
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) else None


def started_url(log: LogStream, seconds: float = 120) -> str:
    """The base URL a ``serve`` process bound, from its ``sidecar_started`` entry."""
    return str(log.wait_for("sidecar_started", seconds)["url"])
