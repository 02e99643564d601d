"""Every setting the exporter reads: its variable, flag, default and validation.

The fields of :class:`Settings` (in :mod:`exporter.settings.table`) are the single source for
the defaults, the environment variables, the CLI flags, the checks on settings built in code,
``--help`` and the README's configuration table.
"""

from exporter.settings.parsers import (
    Boolean,
    Choice,
    DurationIn,
    IntegerIn,
    IntegerOrNone,
    NumberIn,
    Parser,
    duration_in,
    integer_in,
)
from exporter.settings.spec import Computed, SettingsError, Spec, setting
from exporter.settings.table import (
    DEFAULT_PORT,
    DEFAULT_SCHEMA,
    PREFIX,
    RESERVED_PATHS,
    SPECS,
    Settings,
    spec_for,
)
from exporter.settings.values import (
    COLLECTORS,
    ListenAddress,
    LiteralPath,
    register_environment_secrets,
)

__all__ = [
    "COLLECTORS",
    "DEFAULT_PORT",
    "DEFAULT_SCHEMA",
    "PREFIX",
    "RESERVED_PATHS",
    "SPECS",
    "Boolean",
    "Choice",
    "Computed",
    "DurationIn",
    "IntegerIn",
    "IntegerOrNone",
    "ListenAddress",
    "LiteralPath",
    "NumberIn",
    "Parser",
    "Settings",
    "SettingsError",
    "Spec",
    "duration_in",
    "integer_in",
    "register_environment_secrets",
    "setting",
    "spec_for",
]
