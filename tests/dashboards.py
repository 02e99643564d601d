"""The Grafana dashboards under ``dashboards/``, their queries, and Grafana's variable substitution.

Shared by the dashboard lint, the test that every name they use is exported, and
the end-to-end test that runs their queries against a real Prometheus.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

DASHBOARDS = Path(__file__).resolve().parent.parent / "dashboards"

# What Grafana puts in place of its built-in variables, as far as PromQL cares:
# durations in range selectors. The values only need to be valid.
BUILTIN_VALUES: Mapping[str, str] = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "1h",
}
VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


def dashboard_files() -> list[Path]:
    """The dashboard JSON files, sorted by name."""
    return sorted(DASHBOARDS.glob("*.json"))


def load_dashboard(path: Path) -> dict[str, Any]:
    """One dashboard, parsed."""
    document: dict[str, Any] = json.loads(path.read_text())
    return document


def panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel of ``dashboard``, rows included, and the panels inside collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def dashboard_expressions() -> list[tuple[str, str, str]]:
    """``(dashboard file name, panel title, expr)`` for every panel query, as written."""
    found = []
    for path in dashboard_files():
        for panel in panels(load_dashboard(path)):
            for target in panel.get("targets", []):
                if "expr" in target:
                    found.append((path.name, str(panel.get("title", "")), str(target["expr"])))
    return found


def substitute(
    expr: str,
    job: str = ".+",
    instance: str = ".+",
    builtins: Mapping[str, str] = BUILTIN_VALUES,
) -> str:
    """``expr`` with Grafana's variables replaced as Grafana would: a query Prometheus runs.

    ``job`` and ``instance`` stand for the dashboard's variables (regular
    expressions, as the selectors use ``=~``); ``builtins`` gives Grafana's own
    (``$__rate_interval``, ...). An unknown variable is an error,
    so a dashboard cannot use one this substitution does not know.
    """
    values = {**builtins, "job": job, "instance": instance}

    def replace(match: re.Match[str]) -> str:
        name = match[1] or match[2]
        if name not in values:
            raise ValueError(f"unknown Grafana variable ${name} in {expr!r}")
        return values[name]

    return VARIABLE.sub(replace, expr)
