"""The README's configuration table and metrics reference stay true to the code."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.collectors import ALL, Collector
from exporter.settings import COLLECTORS, SPECS, Settings, render
from tests.exposition import exposition_after_workload

README = Path(__file__).resolve().parent.parent / "README.md"
ROW = re.compile(r"^\| `(?P<first>[^`]+)` \|(?P<rest>.*)\|$")


def table_rows(prefix: str) -> list[list[str]]:
    """Cells of README table rows whose first cell is a code span starting with ``prefix``."""
    rows = []
    for line in README.read_text().splitlines():
        match = ROW.match(line)
        if match and match["first"].startswith(prefix):
            rest = [cell.strip() for cell in match["rest"].split("|")]
            rows.append([match["first"], *rest])
    return rows


def test_configuration_table_matches_the_settings() -> None:
    """Every setting appears once, in order, with its variable, flag, default and help."""
    documented = [row for row in table_rows("") if row[0] in {s.env for s in SPECS}]
    expected = [[s.env, f"`{s.flag}`" if s.flag else "—", f"`{s.default}`", s.help] for s in SPECS]
    assert documented == expected


def test_configuration_table_is_the_generated_one() -> None:
    """The README holds, between its markers, exactly the table the settings generate."""
    text = README.read_text()
    assert render.with_configuration_table(text) == text, "run: python -m exporter.settings"


def test_generator_rewrites_a_stale_table(tmp_path: Path) -> None:
    """python -m exporter.settings replaces a stale table and leaves the text around it alone."""
    begin, end, table = render.BEGIN, render.END, render.configuration_table()
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n\n{begin}\n\n| stale |\n\n{end}\n\nafter\n")
    assert render.main([str(readme)]) == 0
    assert readme.read_text() == f"before\n\n{begin}\n\n{table}\n{end}\n\nafter\n"
    readme.write_text("no markers\n")
    assert render.main([str(readme)]) == 1
    assert readme.read_text() == "no markers\n"


def exposed_name(family: Any) -> str:
    suffix = {"counter": "_total", "info": "_info"}.get(family.type, "")
    return str(family.name) + suffix


@pytest.fixture
async def exposed(statements_dsn: str, settings: Settings) -> dict[str, tuple[str, set[str]]]:
    """Every family a real in-process sidecar exposes after a workload, with type and labels."""
    settings = settings.replace(postgres_connection_string=statements_dsn)
    text = await exposition_after_workload(settings)
    families = {}
    for family in text_string_to_metric_families(text):
        if family.name.endswith("_created"):
            continue
        labels = {k for s in family.samples for k in s.labels if k not in {"le"}}
        families[exposed_name(family)] = (family.type, labels)
    return families


async def test_metrics_reference_matches_a_real_scrape(
    exposed: dict[str, tuple[str, set[str]]],
) -> None:
    """The README lists exactly the metrics a real scrape exposes, with types and labels."""
    documented = {
        row[0]: (row[1], {label.strip() for label in row[2].split(",") if label.strip()})
        for row in table_rows("langgraph_checkpointer_")
    }
    assert set(documented) == set(exposed)
    for name, (kind, labels) in exposed.items():
        documented_kind, documented_labels = documented[name]
        assert documented_kind == ("gauge" if kind == "info" else kind), name
        if labels:  # a family with no samples yet (a table never vacuumed) shows no labels
            assert documented_labels == labels, name


@pytest.mark.parametrize("collector", ALL, ids=lambda c: c.name)
def test_collector_docstrings_show_what_the_readme_lists(collector: type[Collector]) -> None:
    """Each collector's module docstring shows every metric of its subsystem, and only those."""
    prefix = f"langgraph_checkpointer_{collector.name}_"
    doc = sys.modules[collector.__module__].__doc__ or ""
    histograms = {row[0] for row in table_rows(prefix) if row[1] == "histogram"}
    shown = set()
    for name in re.findall(rf"^\s+({prefix}\w+)[{{ ]", doc, re.M):
        base = re.sub(r"_(bucket|count|sum)$", "", name)
        shown.add(base if base in histograms else name)
    assert shown == {row[0] for row in table_rows(prefix)}


def test_the_collector_tuple_matches_the_setting() -> None:
    """ALL holds exactly the collectors the --collectors setting knows, once each."""
    assert [c.name for c in ALL] == list(COLLECTORS)


def test_the_changelog_keeps_a_changelog_and_names_the_packaged_version() -> None:
    """Unreleased on top, then releases newest first, the newest being pyproject's version."""
    root = README.parent
    version = tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"]
    headings = re.findall(
        r"^## \[([^\]]+)\](?: - (\d{4}-\d\d-\d\d))?$", (root / "CHANGELOG.md").read_text(), re.M
    )
    assert headings[0] == ("Unreleased", "")
    releases = headings[1:]
    assert releases
    assert releases[0][0] == version
    assert all(date for _, date in releases)
    keyed = [tuple(int(part) for part in name.split(".")) for name, _ in releases]
    assert keyed == sorted(keyed, reverse=True)
