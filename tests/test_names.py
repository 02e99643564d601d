"""No dangling names: every metric the rules and dashboards read is one a real sidecar exports."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml

from exporter.settings import Settings
from tests.dashboards import dashboard_expressions, substitute
from tests.exposition import exposable_names, exposition_after_workload

ALERTS = Path(__file__).resolve().parent.parent / "alerts"
OURS = "langgraph_checkpointer_"
# Series Prometheus itself makes, which no exporter exports.
PROMETHEUS_SERIES = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})


def rule_expressions() -> list[tuple[str, str]]:
    """(where, expression) for every rule in alerts/*.rules.yml; where names file and rule."""
    found = []
    for path in sorted(ALERTS.glob("*.rules.yml")):
        document: dict[str, Any] = yaml.safe_load(path.read_text())
        for group in document["groups"]:
            for rule in group["rules"]:
                kind = "alert" if "alert" in rule else "record"
                found.append((f"{path.name}: {kind} {rule[kind]}", str(rule["expr"])))
    return found


def recorded_names() -> set[str]:
    """The series the recording rules make."""
    return {where.split("record ", 1)[1] for where, _ in rule_expressions() if " record " in where}


def panel_expressions() -> list[tuple[str, str]]:
    """(where, expression) for every dashboard query, Grafana's variables substituted."""
    return [
        (f"dashboards/{board}: panel {title!r}", substitute(expr))
        for board, title, expr in dashboard_expressions()
    ]


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects."""
    names: set[str] = set()

    def visit(node: promql_parser.Expr) -> bool:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)
        return True

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def dangling(
    uses: Iterable[tuple[str, str]], exported: Mapping[str, str], recorded: set[str]
) -> dict[str, list[str]]:
    """Each name read but neither exported nor recorded, with the rules and panels reading it."""
    missing: dict[str, list[str]] = {}
    for where, expr in uses:
        for name in sorted(metric_names(expr)):
            known = name in exported if name.startswith(OURS) else name in recorded
            if not known and name not in PROMETHEUS_SERIES:
                missing.setdefault(name, []).append(where)
    return missing


@pytest.fixture
async def exported(statements_dsn: str, settings: Settings) -> dict[str, str]:
    """Every series name a real sidecar's /metrics carries after a real workload."""
    settings = settings.replace(postgres_connection_string=statements_dsn)
    return exposable_names(await exposition_after_workload(settings))


def test_rules_and_dashboards_read_something() -> None:
    """Both sources are found and parsed: an empty list would prove nothing below."""
    rules, panels = rule_expressions(), panel_expressions()
    assert any(" alert " in where for where, _ in rules)
    assert recorded_names()
    assert len(panels) >= 50
    names = set().union(*(metric_names(expr) for _, expr in rules + panels))
    assert len({name for name in names if name.startswith(OURS)}) >= 50


async def test_every_name_read_is_exported_or_recorded(exported: dict[str, str]) -> None:
    """A metric removed or renamed in code fails here, naming each rule and panel using it."""
    assert dangling(rule_expressions() + panel_expressions(), exported, recorded_names()) == {}


def test_a_missing_metric_is_reported_with_its_users() -> None:
    """The check itself: a name the exposition lacks is listed with the rule that reads it."""
    uses = [
        ("rules: alert A", "rate(langgraph_checkpointer_gone_total[5m]) > 0"),
        ("rules: record r", "sum(langgraph_checkpointer_up)"),
        ("panel 'p'", "job:unrecorded:ratio_rate5m > up"),
    ]
    exported = {"langgraph_checkpointer_up": "gauge"}
    assert dangling(uses, exported, recorded={"job:other"}) == {
        "langgraph_checkpointer_gone_total": ["rules: alert A"],
        "job:unrecorded:ratio_rate5m": ["panel 'p'"],
    }
