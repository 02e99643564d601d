"""The Grafana dashboards and their provisioning: schema, lint rules, and queries that parse."""

from __future__ import annotations

import copy
import json
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from jsonschema import Draft7Validator

from tests.dashboards import (
    BUILTIN_VALUES,
    DASHBOARDS,
    dashboard_expressions,
    dashboard_files,
    load_dashboard,
    panels,
    substitute,
)
from tests.tools import require_tool

SCHEMA = Path(__file__).resolve().parent / "schemas" / "grafana" / "dashboard.schema.json"
PROVISIONING = DASHBOARDS / "provisioning"
# Where the compose stack mounts ./dashboards and ./dashboards/provisioning in Grafana.
DASHBOARDS_MOUNT = "/var/lib/grafana/dashboards/checkpoint-exporter"
PROVISIONING_MOUNT = "/etc/grafana/provisioning"
DATASOURCE_UID = "prometheus"

EXPECTED_UIDS = {
    "overview.json": "ckpt-overview",
    "operations.json": "ckpt-operations",
    "pool-and-connections.json": "ckpt-pool-connections",
    "storage.json": "ckpt-storage",
    "workflows.json": "ckpt-workflows",
    "rollout.json": "ckpt-rollout",
}
PANEL_DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
SCOPE = {"job": "$job", "instance": "$instance"}
RATE_FUNCTIONS = {"rate", "increase", "irate"}
# A duration no dashboard writes by hand, standing for $__rate_interval in the lint.
RATE_INTERVAL_MARK = timedelta(seconds=4321)
# Fixed windows a rate may use instead of $__rate_interval: the SLO period and the time range.
RANGE_MARK = timedelta(seconds=8765)
FIXED_WINDOWS = {timedelta(days=30), RANGE_MARK}
LINT_BUILTINS = {"__rate_interval": "4321s", "__range": "8765s", "__interval": "15s"}


def dashboard_ids() -> list[str]:
    return [path.name for path in dashboard_files()]


@pytest.fixture(scope="module")
def validator() -> Draft7Validator:
    """A validator for Grafana's dashboard schema (tests/schemas/grafana/README.md)."""
    schema = json.loads(SCHEMA.read_text())
    Draft7Validator.check_schema(schema)
    return Draft7Validator(schema)


def schema_errors(validator: Draft7Validator, document: Any) -> list[str]:
    return [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(document)
    ]


def test_the_six_dashboards_exist_with_stable_uids() -> None:
    """The six dashboards are there, each with its fixed uid, schemaVersion 39 and a title."""
    found = {path.name: load_dashboard(path) for path in dashboard_files()}
    assert {name: board["uid"] for name, board in found.items()} == EXPECTED_UIDS
    for board in found.values():
        assert board["schemaVersion"] == 39
        assert board["title"].startswith("Checkpoint exporter / ")
    assert len({board["title"] for board in found.values()}) == len(found)


@pytest.mark.parametrize("name", dashboard_ids())
def test_dashboard_validates_against_grafana_schema(name: str, validator: Draft7Validator) -> None:
    """The dashboard is valid against the schema generated from Grafana's own dashboard types."""
    assert schema_errors(validator, load_dashboard(DASHBOARDS / name)) == []


def test_schema_rejects_a_misspelt_panel_field(validator: Draft7Validator) -> None:
    """The schema is strict enough to catch a typo: a panel field Grafana does not know fails."""
    board = copy.deepcopy(load_dashboard(DASHBOARDS / "overview.json"))
    panel = next(p for p in board["panels"] if p["type"] != "row")
    panel["fieldconfig"] = panel.pop("fieldConfig")
    assert any("fieldconfig" in error for error in schema_errors(validator, board))


@pytest.mark.parametrize("name", dashboard_ids())
def test_templating_variables(name: str) -> None:
    """datasource, job and instance variables exist, in that order, as the panels expect."""
    variables = {v["name"]: v for v in load_dashboard(DASHBOARDS / name)["templating"]["list"]}
    assert list(variables) == ["datasource", "job", "instance"]
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    job, instance = variables["job"], variables["instance"]
    assert job["query"] == "label_values(langgraph_checkpointer_up, job)"
    assert instance["query"] == 'label_values(langgraph_checkpointer_up{job=~"$job"}, instance)'
    for variable in (job, instance):
        assert variable["type"] == "query"
        assert variable["datasource"] == PANEL_DATASOURCE
        assert variable["multi"] is True
        assert variable["includeAll"] is True


@pytest.mark.parametrize("name", dashboard_ids())
def test_panels_have_title_unit_unique_id_and_the_datasource_variable(name: str) -> None:
    """Every panel has a title, a unit, an id of its own, and queries ${datasource}."""
    ids = []
    for panel in panels(load_dashboard(DASHBOARDS / name)):
        ids.append(panel["id"])
        assert panel.get("title"), f"panel {panel['id']} has no title"
        if panel["type"] == "row":
            continue
        where = f"{name}: {panel['title']!r}"
        assert panel["fieldConfig"]["defaults"].get("unit"), f"{where} has no unit"
        assert panel["datasource"] == PANEL_DATASOURCE, where
        assert panel["targets"], f"{where} has no query"
        for target in panel["targets"]:
            assert target["datasource"] == PANEL_DATASOURCE, where
            assert target["expr"].strip(), where
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), f"{where} repeats a refId"
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    assert duplicates == [], f"{name}: duplicate panel ids {duplicates}"


@pytest.mark.parametrize("name", dashboard_ids())
def test_panels_fit_the_grid_without_overlapping(name: str) -> None:
    """Every panel lies within Grafana's 24 columns and no two panels share a cell."""
    taken: dict[tuple[int, int], str] = {}
    for panel in panels(load_dashboard(DASHBOARDS / name)):
        grid = panel["gridPos"]
        assert grid["x"] >= 0
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in taken, f"{panel['title']!r} overlaps {taken[x, y]!r}"
                taken[x, y] = panel["title"]


def lint(expr: str) -> list[str]:
    """What is wrong with a dashboard query: unscoped selectors, rates not on $__rate_interval."""
    problems: list[str] = []

    def visit(node: promql_parser.Expr) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            matchers = {(m.name, str(m.op), m.value) for m in node.matchers.matchers}
            for label, variable in SCOPE.items():
                if (label, str(promql_parser.MatchOp.Re), variable) not in matchers:
                    problems.append(f'{node.name} lacks {label}=~"{variable}"')
        elif isinstance(node, promql_parser.Call) and node.func.name in RATE_FUNCTIONS:
            window = node.args[0]
            if isinstance(window, promql_parser.MatrixSelector) and (
                window.range != RATE_INTERVAL_MARK and window.range not in FIXED_WINDOWS
            ):
                problems.append(f"{node.func.name} over {window.range}, not $__rate_interval")
        return True

    parsed = promql_parser.parse(substitute(expr, "$job", "$instance", LINT_BUILTINS))
    promql_parser.walk(parsed, visit)
    return problems


def test_lint_finds_unscoped_selectors_and_fixed_rate_windows() -> None:
    """The lint itself: it flags a missing job or instance matcher and a hand-picked window."""
    scoped = 'rate(a_total{job=~"$job", instance=~"$instance"}[$__rate_interval])'
    assert lint(scoped) == []
    assert lint(f"{scoped} / b") == ['b lacks job=~"$job"', 'b lacks instance=~"$instance"']
    assert lint('sum(c{job=~"$job", instance="x"})') == ['c lacks instance=~"$instance"']
    assert lint(scoped.replace("$__rate_interval", "5m")) == [
        "rate over 0:05:00, not $__rate_interval"
    ]


@pytest.mark.parametrize("name", dashboard_ids())
def test_every_query_reads_only_the_selected_job_and_instance(name: str) -> None:
    """Each metric a query reads is filtered by $job and $instance; rates use $__rate_interval."""
    found = {
        f"{title}: {expr}": lint(expr)
        for board, title, expr in dashboard_expressions()
        if board == name
    }
    assert found
    assert {query: problems for query, problems in found.items() if problems} == {}


def test_every_query_parses_with_promtool(tmp_path: Path) -> None:
    """promtool parses every query once Grafana's variables are substituted."""
    promtool = require_tool("promtool")
    expressions = dashboard_expressions()
    rules = {
        "groups": [
            {
                "name": "dashboards",
                "rules": [
                    {"record": f"dashboard:query_{index}:parsed", "expr": substitute(expr)}
                    for index, (_, _, expr) in enumerate(expressions)
                ],
            }
        ]
    }
    path = tmp_path / "dashboards.rules.yml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    done = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(expressions)} rules found" in done.stdout


def test_substitution_leaves_no_grafana_variable() -> None:
    """Substitution replaces every variable the dashboards use, and rejects unknown ones."""
    for _, _, expr in dashboard_expressions():
        assert "$" not in substitute(expr)
    assert (
        substitute("rate(x[$__rate_interval])") == f"rate(x[{BUILTIN_VALUES['__rate_interval']}])"
    )
    with pytest.raises(ValueError, match=r"\$cluster"):
        substitute('up{cluster=~"$cluster"}')


def header_comment(path: Path) -> str:
    return "".join(line for line in path.read_text().splitlines(True) if line.startswith("#"))


def test_dashboard_provider_points_at_the_mounted_dashboards() -> None:
    """The file provider loads the dashboards from where the compose stack mounts them."""
    path = PROVISIONING / "dashboards" / "checkpoint-exporter.yml"
    document = yaml.safe_load(path.read_text())
    assert document["apiVersion"] == 1
    [provider] = document["providers"]
    assert provider["type"] == "file"
    assert provider["name"]
    assert provider["folder"]
    assert provider["options"]["path"] == DASHBOARDS_MOUNT
    assert DASHBOARDS_MOUNT in header_comment(path)
    assert PROVISIONING_MOUNT in header_comment(path)


def test_datasource_is_the_compose_prometheus_with_a_fixed_uid() -> None:
    """The provisioned Prometheus data source has a fixed uid, the compose URL and is default."""
    path = PROVISIONING / "datasources" / "prometheus.yml"
    document = yaml.safe_load(path.read_text())
    assert document["apiVersion"] == 1
    [source] = document["datasources"]
    assert source["type"] == "prometheus"
    assert source["uid"] == DATASOURCE_UID
    assert source["url"] == "http://prometheus:9090"
    assert source["access"] == "proxy"
    assert source["isDefault"] is True
    assert DASHBOARDS_MOUNT in header_comment(path)
    assert PROVISIONING_MOUNT in header_comment(path)
