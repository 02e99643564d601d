"""Parsers for the plain kinds of value: booleans, choices, whole numbers, numbers, durations.

A parser reads a setting's text (from the environment or a flag), holds a value built in code
to the same rules (:meth:`Parser.validate`), and shows a value as text that parses back to it,
which is how the defaults reach ``--help`` and the README.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Protocol, TypeVar

T = TypeVar("T")

_INTEGER = re.compile(r"^[+-]?[0-9]+$")
# A sign is accepted so that a negative duration is reported as out of range.
_DURATION = re.compile(r"^(?P<number>[+-]?\d+(?:\.\d+)?)(?P<unit>ms|s|m|h|d)?$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0, None: 1.0}


class Parser(Protocol[T]):
    """Text to value and back; each raises ValueError with the reason, never the setting's name."""

    def __call__(self, raw: str) -> T:
        """The value ``raw`` stands for."""
        ...

    def validate(self, value: object) -> T:
        """``value`` itself, if text could have produced it."""
        ...

    def show(self, value: T) -> str:
        """Text that parses back to ``value``."""
        ...


@dataclass(frozen=True, slots=True)
class Boolean:
    """``true``/``false``, ``1``/``0``, ``yes``/``no`` or ``on``/``off``, in any case."""

    def __call__(self, raw: str) -> bool:
        value = raw.strip().lower()
        if value in {"1", "true", "yes", "on"}:
            return True
        if value in {"0", "false", "no", "off"}:
            return False
        raise ValueError(f"expected true or false, got {raw!r}")

    def validate(self, value: object) -> bool:
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {value!r}")
        return value

    def show(self, value: bool) -> str:
        return "true" if value else "false"


@dataclass(frozen=True, slots=True)
class Choice:
    """One of ``choices``, in any case; an alias is read as the choice it names."""

    choices: tuple[str, ...]
    aliases: tuple[tuple[str, str], ...] = ()

    def __call__(self, raw: str) -> str:
        value = raw.strip().lower()
        if value not in self.choices:
            raise ValueError(f"expected one of {', '.join(self.choices)}, got {raw!r}")
        return dict(self.aliases).get(value, value)

    def validate(self, value: object) -> str:
        # Code gets no case folding and no aliases: only what parsing can return.
        aliases = dict(self.aliases)
        if not isinstance(value, str) or value not in self.choices or value in aliases:
            raise ValueError(f"expected one of {', '.join(self.choices)}, got {value!r}")
        return value

    def show(self, value: str) -> str:
        return value


@dataclass(frozen=True, slots=True)
class IntegerIn:
    """A whole number from ``low`` to ``high``."""

    low: int
    high: int

    def __call__(self, raw: str) -> int:
        if not _INTEGER.match(raw.strip()):
            raise ValueError(f"expected a whole number, got {raw!r}")
        return self.validate(int(raw.strip()))

    def validate(self, value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected a whole number, got {value!r}")
        if not self.low <= value <= self.high:
            raise ValueError(f"must be between {self.low} and {self.high}, got {value}")
        return value

    def show(self, value: int) -> str:
        return str(value)


@dataclass(frozen=True, slots=True)
class IntegerOrNone:
    """A whole number from ``low`` to ``high``, or one of the words ``none`` (read as None).

    The first word is how None is shown.
    """

    low: int
    high: int
    none: tuple[str, ...]

    def __call__(self, raw: str) -> int | None:
        if raw.strip().lower() in self.none:
            return None
        return IntegerIn(self.low, self.high)(raw)

    def validate(self, value: object) -> int | None:
        return None if value is None else IntegerIn(self.low, self.high).validate(value)

    def show(self, value: int | None) -> str:
        return self.none[0] if value is None else str(value)


@dataclass(frozen=True, slots=True)
class NumberIn:
    """A number from ``low`` to ``high``, fractions allowed."""

    low: float
    high: float

    def __call__(self, raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"expected a number, got {raw!r}") from None
        if not (self.low <= value <= self.high) or math.isnan(value):
            raise ValueError(f"must be between {self.low:g} and {self.high:g}, got {raw}")
        return value

    def validate(self, value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a number, got {value!r}")
        if not self.low <= value <= self.high:
            raise ValueError(f"must be between {self.low:g} and {self.high:g}, got {value:g}")
        return float(value)

    def show(self, value: float) -> str:
        return f"{value:g}"


@dataclass(frozen=True, slots=True)
class DurationIn:
    """A duration from ``low`` to ``high`` seconds: ``250ms``, ``5s``, ``1m``, ``1h``, ``1d``
    or plain seconds; the value is in seconds."""

    low: float
    high: float

    def __call__(self, raw: str) -> float:
        match = _DURATION.match(raw.strip())
        if match is None:
            raise ValueError(f"expected a duration such as 5, 5s or 250ms, got {raw!r}")
        seconds = float(match["number"]) * _UNIT_SECONDS[match["unit"]]
        if not self.low <= seconds <= self.high:
            raise ValueError(f"must be between {self.low:g}s and {self.high:g}s, got {raw.strip()}")
        return seconds

    def validate(self, value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected seconds as a number, got {value!r}")
        if not self.low <= value <= self.high:
            raise ValueError(f"must be between {self.low:g}s and {self.high:g}s, got {value:g}s")
        return float(value)

    def show(self, value: float) -> str:
        """In the largest unit that holds it whole: ``750ms``, ``30s``, ``2m``."""
        for unit in ("d", "h", "m", "s", "ms"):
            count = value / _UNIT_SECONDS[unit]
            if count >= 1 and math.isclose(count, round(count)):
                return f"{round(count)}{unit}"
        return f"{value:g}s"


def integer_in(low: int, high: int) -> IntegerIn:
    return IntegerIn(low, high)


def duration_in(low: float, high: float) -> DurationIn:
    return DurationIn(low, high)
