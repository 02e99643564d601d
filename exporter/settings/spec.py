"""One row of the settings table: a field's parser, default, variable, flag and help."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from exporter.settings.parsers import Parser

T = TypeVar("T")


class SettingsError(ValueError):
    """A setting has a value the exporter cannot use; the message names it."""


@dataclass(frozen=True, slots=True)
class Computed(Generic[T]):
    """A default worked out at each construction, such as one that reads the environment."""

    make: Callable[[], T]


@dataclass(frozen=True, slots=True)
class Spec:
    """One setting: where it comes from, how it is parsed and checked, what it means."""

    field: str
    env: str
    flag: str | None
    parse: Parser[Any]
    fallback: Any
    help: str
    # What --help and the README show instead of the default: for an unset setting, a
    # description in parentheses, such as "(embedded)"; for a computed one, its usual value.
    shown: str | None = None

    @property
    def default(self) -> str:
        """The default as --help and the README show it."""
        return self.shown if self.shown is not None else self.parse.show(self.default_value())

    def default_value(self) -> Any:
        """The value a Settings built without this setting holds."""
        return self.fallback.make() if isinstance(self.fallback, Computed) else self.fallback

    def describe(self) -> str:
        """How errors name the setting: its variable, and its flag if it has one."""
        return f"{self.env} ({self.flag})" if self.flag else self.env

    def check(self, value: object) -> None:
        """Raise SettingsError, naming the setting, unless text could have produced ``value``."""
        try:
            self.parse.validate(value)
        except ValueError as exc:
            raise SettingsError(f"{self.describe()}: {exc}") from None


def setting(
    parse: Parser[T],
    default: T | Computed[T],
    *,
    env: str,
    flag: str | None,
    help: str,
    shown: str | None = None,
    repr: bool = True,
) -> T:
    """A dataclass field that carries its row of the settings table (read by :func:`specs`)."""
    spec = Spec("", env, flag, parse, default, help, shown)
    metadata = {"spec": spec}
    if isinstance(default, Computed):
        return dataclasses.field(default_factory=default.make, repr=repr, metadata=metadata)
    return dataclasses.field(default=default, repr=repr, metadata=metadata)


def specs(cls: type) -> tuple[Spec, ...]:
    """The rows of a dataclass built with :func:`setting`, in field order, each named."""
    return tuple(
        dataclasses.replace(field.metadata["spec"], field=field.name)
        for field in dataclasses.fields(cls)
    )


def read(
    table: tuple[Spec, ...],
    environ: Mapping[str, str],
    flags: Mapping[str, str | None],
) -> dict[str, Any]:
    """Parse each setting given by flag or, failing that, by variable; the rest keep defaults."""
    values: dict[str, Any] = {}
    for spec in table:
        raw = flags.get(spec.field)
        if raw is None:
            raw = environ.get(spec.env)
        if raw is None:
            continue
        try:
            values[spec.field] = spec.parse(raw)
        except ValueError as exc:
            raise SettingsError(f"{spec.describe()}: {exc}") from None
    return values
