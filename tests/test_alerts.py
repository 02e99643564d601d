"""The alert and recording rules, their promtool tests, the runbook and Alertmanager's config."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.ports import listening_port
from tests.tools import require_tool

ALERTS = Path(__file__).resolve().parent.parent / "alerts"
RULE_FILES = (ALERTS / "recording.rules.yml", ALERTS / "alerts.rules.yml")
UNIT_TESTS = sorted((ALERTS / "tests").glob("*.yml"))
ALERTMANAGER_CONFIG = ALERTS / "alertmanager.yml"
RUNBOOK = ALERTS / "RUNBOOK.md"
RUNBOOK_URL = (
    "https://github.com/checkpoint-exporter/checkpoint-exporter/blob/main/alerts/RUNBOOK.md#"
)
SEVERITIES = {"page", "ticket"}
ANNOTATIONS = {"summary", "description", "runbook_url"}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def alert_rules() -> dict[str, dict[str, Any]]:
    """Every alerting rule of alerts.rules.yml, by alert name."""
    rules: dict[str, dict[str, Any]] = {}
    for group in load_yaml(ALERTS / "alerts.rules.yml")["groups"]:
        for rule in group["rules"]:
            assert rule["alert"] not in rules, f"{rule['alert']} defined twice"
            rules[rule["alert"]] = rule
    return rules


def unit_test_cases() -> Iterator[tuple[str, str, list[dict[str, Any]]]]:
    """(file name, alert name, expected alerts) for every alert_rule_test in alerts/tests."""
    for path in UNIT_TESTS:
        for group in load_yaml(path)["tests"]:
            for case in group.get("alert_rule_test", []):
                yield path.name, case["alertname"], case.get("exp_alerts") or []


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lowercase, punctuation dropped, spaces to '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def runbook_anchors() -> list[str]:
    text = re.sub(r"^```.*?^```", "", RUNBOOK.read_text(), flags=re.M | re.S)
    return [github_anchor(match) for match in re.findall(r"^#{1,6} (.+)$", text, flags=re.M)]


def run(command: list[str], cwd: Path = ALERTS) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, check=False, timeout=120
    )


def test_rule_files_pass_promtool_check() -> None:
    """`promtool check rules` accepts both rule files, without a lint warning."""
    done = run([require_tool("promtool"), "check", "rules", *map(str, RULE_FILES)])
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("SUCCESS") == len(RULE_FILES), done.stdout
    assert "WARNING" not in done.stdout + done.stderr


def test_promtool_unit_tests_pass() -> None:
    """Every promtool unit test in alerts/tests passes against the shipped rules."""
    assert len(UNIT_TESTS) >= 5
    done = run([require_tool("promtool"), "test", "rules", *(path.name for path in UNIT_TESTS)],
               cwd=ALERTS / "tests")  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert output.count("SUCCESS") == len(UNIT_TESTS), output
    assert "FAILED" not in output


def test_every_alert_fires_in_one_case_and_stays_silent_in_another() -> None:
    """Each alert has a firing case with its exact labels and annotations, and a silent case."""
    rules = alert_rules()
    firing: set[str] = set()
    silent: dict[str, int] = {}
    for file, name, expected in unit_test_cases():
        assert name in rules, f"{file} tests {name}, which alerts.rules.yml lacks"
        if not expected:
            silent[name] = silent.get(name, 0) + 1
            continue
        firing.add(name)
        for alert in expected:
            labels, annotations = alert["exp_labels"], alert["exp_annotations"]
            assert labels["severity"] == rules[name]["labels"]["severity"], (file, name)
            assert "job" in labels, (file, name)
            assert set(annotations) == ANNOTATIONS, (file, name)
            assert annotations["runbook_url"] == RUNBOOK_URL + name.lower(), (file, name)
    assert sorted(set(rules) - firing) == []
    assert sorted(set(rules) - set(silent)) == []
    # Burn-rate alerts: just under the threshold, and each pair's long and short window alone.
    burns = [name for name in rules if name.endswith("Burn")]
    assert len(burns) == 6
    assert {name: silent[name] for name in burns if silent[name] < 3} == {}


def test_every_alert_has_a_severity_and_the_three_annotations() -> None:
    """severity is page or ticket; summary, description and runbook_url are all there."""
    for name, rule in alert_rules().items():
        assert rule["labels"]["severity"] in SEVERITIES, name
        assert set(rule["annotations"]) == ANNOTATIONS, name
        assert all(rule["annotations"][key].strip() for key in ANNOTATIONS), name


def test_every_runbook_url_points_at_a_runbook_heading() -> None:
    """Each alert links its own section of RUNBOOK.md, by the anchor GitHub makes."""
    anchors = runbook_anchors()
    assert len(anchors) == len(set(anchors)), "duplicate headings get numbered anchors"
    urls = {}
    for name, rule in alert_rules().items():
        url = rule["annotations"]["runbook_url"]
        assert url.startswith(RUNBOOK_URL), name
        urls[name] = url.removeprefix(RUNBOOK_URL)
    assert {name: anchor for name, anchor in urls.items() if anchor not in anchors} == {}
    assert len(set(urls.values())) == len(urls), "one section per alert"


def test_github_anchor_follows_githubs_rules() -> None:
    """The anchor rule itself: lowercase, punctuation dropped, spaces to hyphens."""
    assert github_anchor("CheckpointDatabaseDown") == "checkpointdatabasedown"
    assert github_anchor("Severities and labels") == "severities-and-labels"
    assert github_anchor("Runbook: checkpoint-exporter (v1.0)") == "runbook-checkpoint-exporter-v10"


def test_amtool_accepts_the_alertmanager_config() -> None:
    """`amtool check-config` accepts the example Alertmanager configuration."""
    done = run([require_tool("amtool"), "check-config", str(ALERTMANAGER_CONFIG)])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["severity=page", "alertname=CheckpointDatabaseDown"], "pager"),
        (["severity=ticket", "alertname=CheckpointSchemaBehind"], "ticket"),
        (["alertname=SomethingElse"], "ticket"),
    ],
)
def test_alertmanager_routes_by_severity(labels: list[str], receiver: str) -> None:
    """Pages reach the pager receiver; tickets, and anything unlabelled, the ticket receiver."""
    done = run([require_tool("amtool"), "config", "routes", "test",
                f"--config.file={ALERTMANAGER_CONFIG}", *labels])  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == receiver


def inhibited_names(matcher: str) -> list[str]:
    """The alert names an `alertname="X"` or `alertname=~"X|Y"` matcher selects."""
    match = re.fullmatch(r'alertname(=~?)"([\w|]+)"', matcher.strip())
    assert match is not None, f"{matcher!r}: only alertname matchers of plain names are expected"
    return match.group(2).split("|") if match.group(1) == "=~" else [match.group(2)]


def test_inhibition_rules_name_alerts_that_exist() -> None:
    """Every alert name in an inhibit rule is one alerts.rules.yml defines."""
    rules = alert_rules()
    config = load_yaml(ALERTMANAGER_CONFIG)
    named = []
    for rule in config["inhibit_rules"]:
        assert "job" in rule["equal"], rule
        for matcher in rule["source_matchers"] + rule["target_matchers"]:
            named += inhibited_names(matcher)
    assert "CheckpointDatabaseDown" in named
    assert sorted(set(named) - set(rules)) == []


def test_symptoms_of_an_outage_are_not_mistaken_for_it() -> None:
    """DatabaseDown silences symptoms only; corrupt data and the fallback still notify."""
    config = load_yaml(ALERTMANAGER_CONFIG)
    (outage,) = [
        rule
        for rule in config["inhibit_rules"]
        if rule["source_matchers"] == ['alertname="CheckpointDatabaseDown"']
    ]
    silenced = {name for m in outage["target_matchers"] for name in inhibited_names(m)}
    assert {"CheckpointErrorBudgetFastBurn", "CheckpointCanaryFailing"} <= silenced
    assert {"CheckpointDatabaseDown", "CheckpointCanaryMismatch", "CheckpointFallbackActive",
            "CheckpointExporterDown"}.isdisjoint(silenced)  # fmt: skip


def http(url: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        text = response.read().decode()
    return json.loads(text) if text.strip().startswith(("[", "{")) else text


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    """A real Alertmanager running the example config on port 0; yields its base URL."""
    binary = require_tool("prometheus-alertmanager")
    log = tmp_path / "alertmanager.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [binary, f"--config.file={ALERTMANAGER_CONFIG}", f"--storage.path={tmp_path}",
             "--web.listen-address=127.0.0.1:0", "--cluster.listen-address="],
            stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{listening_port(log, process)}"
        deadline = time.monotonic() + 60
        while True:  # listening comes before ready
            try:
                http(url + "/-/ready")
                break
            except OSError:
                assert time.monotonic() < deadline, f"Alertmanager not ready:\n{log.read_text()}"
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_a_real_alertmanager_inhibits_the_symptoms_of_an_outage(alertmanager: str) -> None:
    """DatabaseDown mutes its job's symptoms, a page its ticket; other jobs and pools notify."""
    sent = {
        "down": {"alertname": "CheckpointDatabaseDown", "severity": "page", "job": "a",
                 "instance": "a-1:9877"},
        "burn": {"alertname": "CheckpointErrorBudgetFastBurn", "severity": "page", "job": "a"},
        "slow": {"alertname": "CheckpointErrorBudgetSlowBurn", "severity": "ticket", "job": "a"},
        "mismatch": {"alertname": "CheckpointCanaryMismatch", "severity": "page", "job": "a",
                     "instance": "a-1:9877", "result": "mismatch"},
        "other_job": {"alertname": "CheckpointErrorBudgetFastBurn", "severity": "page",
                      "job": "b"},
        "exhausted": {"alertname": "CheckpointPoolExhausted", "severity": "page", "job": "b",
                      "instance": "b-1:9877", "pool": "exporter"},
        "waiting": {"alertname": "CheckpointPoolRequestsWaiting", "severity": "ticket",
                    "job": "b", "instance": "b-1:9877", "pool": "checkpointer"},
    }  # fmt: skip
    http(alertmanager + "/api/v2/alerts", [{"labels": labels} for labels in sent.values()])
    expected = {"down": "active", "burn": "suppressed", "slow": "suppressed", "mismatch": "active",
                "other_job": "active", "exhausted": "active", "waiting": "active"}  # fmt: skip
    deadline = time.monotonic() + 10
    while True:
        states = {}
        for alert in http(alertmanager + "/api/v2/alerts"):
            key = next(key for key, labels in sent.items() if labels == alert["labels"])
            states[key] = alert["status"]["state"]
        if states == expected or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert states == expected
