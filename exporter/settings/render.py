"""The settings table as people read it: ``--help`` and the README's configuration table.

``python -m exporter.settings [README.md]`` rewrites the README's table from
:data:`~exporter.settings.SPECS`; tests/test_docs.py fails while the two differ.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from exporter.settings.spec import Spec
from exporter.settings.table import SPECS

BEGIN = "<!-- Generated from exporter/settings/table.py (python -m exporter.settings). -->"
END = "<!-- End of the generated table. -->"


def help_line(spec: Spec) -> str:
    """A setting as ``--help`` shows it: what it means, its variable and its default."""
    return f"{spec.help} Env: {spec.env}. Default: {spec.default}."


def flag_help(spec: Spec) -> str:
    """:func:`help_line` for argparse, which formats help with %: a literal one is doubled."""
    return help_line(spec).replace("%", "%%")


def help_epilog() -> str:
    """The end of ``--help``: the settings no flag sets, so that it lists every setting."""
    unflagged = " ".join(help_line(spec) for spec in SPECS if spec.flag is None)
    return f"Set only in the environment: {unflagged}"


def configuration_table() -> str:
    """The README's configuration table: one row per setting, in the order of the fields."""
    lines = ["| Variable | Flag | Default | Meaning |", "| --- | --- | --- | --- |"]
    for spec in SPECS:
        flag = f"`{spec.flag}`" if spec.flag else "—"
        lines.append(f"| `{spec.env}` | {flag} | `{spec.default}` | {spec.help} |")
    return "\n".join(lines) + "\n"


def with_configuration_table(readme: str) -> str:
    """``readme`` with the text between the :data:`BEGIN` and :data:`END` markers replaced."""
    head, begin, rest = readme.partition(BEGIN + "\n")
    _, end, tail = rest.partition(END)
    if not begin or not end:
        raise ValueError(f"the README lacks the markers {BEGIN!r} and {END!r}")
    return f"{head}{begin}\n{configuration_table()}\n{end}{tail}"


def main(argv: Sequence[str] = ()) -> int:
    """Rewrite the configuration table of the README named in ``argv`` (README.md if none)."""
    path = Path(argv[0] if argv else "README.md")
    try:
        path.write_text(
            with_configuration_table(path.read_text(encoding="utf-8")), encoding="utf-8"
        )
    except (OSError, ValueError) as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return 1
    return 0
