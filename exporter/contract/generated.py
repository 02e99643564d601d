"""What the contract's generated files hold, and the command that rewrites them.

Run from the repository root after changing the health document's types or the catalog::

    python -m exporter.contract           # rewrite health.schema.json and the README table
    python -m exporter.contract --check   # write nothing; exit 1 naming each stale file
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from exporter.contract.catalog import load_catalog, with_metrics_table
from exporter.contract.schema import HEALTH_SCHEMA, dump, json_schema
from exporter.health import HealthDocument

HEALTH_TITLE = "Checkpointer health"


def health_schema() -> dict[str, Any]:
    """The health document's schema as the types in exporter.health make it today."""
    return json_schema(HealthDocument, HEALTH_TITLE)


def expected_files(readme: Path, schema: Path) -> dict[Path, str]:
    """Each generated file and the text it must hold."""
    return {
        schema: dump(health_schema()),
        readme: with_metrics_table(readme.read_text(encoding="utf-8"), load_catalog()),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Rewrite the stale files (or, with --check, only name them); 1 when --check finds any."""
    parser = argparse.ArgumentParser(
        prog="python -m exporter.contract",
        description="Regenerate the health schema and the README's metrics reference.",
    )
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if stale")
    parser.add_argument("--readme", type=Path, default=Path("README.md"))
    parser.add_argument("--schema", type=Path, default=Path(__file__).with_name(HEALTH_SCHEMA))
    args = parser.parse_args(argv)
    stale = {
        path: text
        for path, text in expected_files(args.readme, args.schema).items()
        if not path.exists() or path.read_text(encoding="utf-8") != text
    }
    for path, text in stale.items():
        if args.check:
            print(f"{path} is stale: run python -m exporter.contract", file=sys.stderr)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    return 1 if args.check and stale else 0
