"""The metric catalog: every family ``/metrics`` can carry, and the README table made from it.

``metrics.json`` is written by hand when a metric is added or changed; the README's metrics
reference is generated from it, and tests/test_contract.py holds it equal to what a real,
fully populated sidecar exposes.
"""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Final, Literal, NotRequired, TypedDict

CATALOG: Final = "metrics.json"
BEGIN: Final = (
    "<!-- Generated from exporter/contract/metrics.json (python -m exporter.contract). -->"
)
END: Final = "<!-- End of the generated metrics table. -->"


class MetricFamily(TypedDict):
    """One family: name as in the text format's HELP and TYPE lines (a counter's ends in
    _total), its HELP under default settings, its label names (le aside), a histogram's
    finite bucket bounds, the README's description (Markdown), and, for a family a fully
    populated sidecar may leave out, the condition under which it is exposed."""

    name: str
    type: Literal["counter", "gauge", "histogram"]
    help: str
    labels: list[str]
    buckets: NotRequired[list[float]]
    description: str
    condition: NotRequired[str]


class Catalog(TypedDict):
    """The sidecar's metric families, in the README's order."""

    namespace: str
    families: list[MetricFamily]


def load_catalog() -> Catalog:
    """The catalog as shipped in the package."""
    catalog: Catalog = json.loads(files(__package__).joinpath(CATALOG).read_text(encoding="utf-8"))
    return catalog


def metrics_table(catalog: Catalog) -> str:
    """The README's metrics reference table, one row per family, in the catalog's order."""
    rows = [("Metric", "Type", "Labels", "Meaning"), ("---", "---", "---", "---")]
    rows += [
        (f"`{f['name']}`", f["type"], ", ".join(f["labels"]), f["description"])
        for f in catalog["families"]
    ]
    return "\n".join(
        "|" + "|".join(f" {cell} " if cell else " " for cell in row) + "|" for row in rows
    )


def with_metrics_table(readme: str, catalog: Catalog) -> str:
    """``readme`` with the text between the BEGIN and END markers replaced by the table."""
    head, begin, rest = readme.partition(BEGIN + "\n")
    _, end, tail = rest.partition(END)
    if not begin or not end:
        raise ValueError(f"the README lacks the markers {BEGIN!r} and {END!r}")
    return f"{head}{begin}\n{metrics_table(catalog)}\n\n{end}{tail}"
