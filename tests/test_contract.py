"""The contract files stay true: the health schema to the documents a sidecar serves, the metric
catalog to what a real scrape exposes, the README's metrics reference to the catalog."""

from __future__ import annotations

import asyncio
import copy
import itertools
import re
import sys
import tomllib
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from fnmatch import fnmatch
from pathlib import Path
from time import monotonic
from typing import Any

import aiohttp
import pytest
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import best_match
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from exporter import Sidecar, build_checkpointer
from exporter.checkpointer.backend import MEMORY, Backend
from exporter.checkpointer.instrumented import ErrorRecord
from exporter.contract.catalog import (
    BEGIN,
    END,
    Catalog,
    MetricFamily,
    load_catalog,
    metrics_table,
    with_metrics_table,
)
from exporter.contract.generated import health_schema, main
from exporter.contract.schema import HEALTH_SCHEMA, json_schema, load_health_schema
from exporter.database import Ping
from exporter.health import (
    CANARY_UNHEALTHY_AFTER,
    DEGRADED,
    HEALTHY,
    UNHEALTHY,
    HealthInputs,
    build_document,
    health_document,
)
from exporter.settings import Settings
from exporter.workflows.canary import ERROR, SUCCESS, TIMEOUT
from exporter.workflows.recovery import RecoveryReport
from exporter.workload import compile_workflow, initial_state
from tests.exposition import exposition_after_workload, integrity_step
from tests.ports import refused_port
from tests.test_health import BACKEND, NOW, UP, Integrity, canary, recovery

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
CONTRACT = ROOT / "exporter" / "contract"
PASSWORD = "development_password"
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?([+-]\d\d:\d\d|Z)")

# Only the format the schema uses, checked here: jsonschema's own date-time check needs a
# package this project does not install, and would otherwise pass anything silently.
FORMATS = FormatChecker(formats=())


@FORMATS.checks("date-time", raises=ValueError)
def _date_time(value: object) -> bool:
    """RFC 3339 as datetime.isoformat writes an aware time; a day that does not exist raises."""
    if not isinstance(value, str):
        return True
    datetime.fromisoformat(value)
    return RFC3339.fullmatch(value) is not None


VALIDATOR = Draft202012Validator(load_health_schema(), format_checker=FORMATS)


def violations(document: Any) -> list[str]:
    """Where and why ``document`` breaks the shipped schema (empty: it validates)."""
    # best_match descends into anyOf (a section or null) to the branch that came closest.
    errors = (best_match([error]) for error in VALIDATOR.iter_errors(document))
    return sorted(
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in errors
        if error is not None
    )


# The health schema


def test_the_shipped_schema_is_the_one_the_types_make() -> None:
    """health.schema.json is what exporter.health's TypedDicts derive, in draft 2020-12."""
    Draft202012Validator.check_schema(load_health_schema())
    assert load_health_schema() == health_schema()


POOL = {"pool_size": 2, "pool_min": 1, "pool_max": 10, "pool_available": 1, "requests_waiting": 0}
EXHAUSTED = {**POOL, "pool_size": 10, "pool_available": 0, "requests_waiting": 3}
UNSUPPORTED = replace(
    canary(None),
    active=False,
    unsupported="schema at migration 4 lacks checkpoint_writes.task_path",
)
# What the store's sections (postgres, pool, fallback, lastError) are built from.
STORE: dict[str, tuple[Any, ...]] = {
    "backend": (
        BACKEND,
        Backend(MEMORY, "workflow_checkpoints"),
        replace(BACKEND, fallback_reason="OperationalError: connection refused"),
    ),
    "ping": (
        None,
        UP,
        Ping(False, 0.2, error="OperationalError: connection failed", cause="connection_refused"),
        Ping(False, 0.75, cause="timeout"),
    ),
    "pool_stats": (None, POOL, EXHAUSTED),
    "last_error": (None, ErrorRecord("put", "OperationalError", "OperationalError: gone", NOW)),
}
# What the canary, the recovery check and the integrity checks found.
FINDINGS: dict[str, tuple[Any, ...]] = {
    "canary": (
        None,
        canary(None),
        canary(SUCCESS),
        canary(TIMEOUT, 1),
        canary(ERROR, CANARY_UNHEALTHY_AFTER),
        canary(ERROR, 5, active=False),
        UNSUPPORTED,
    ),
    "recovery": (
        None,
        recovery(0),
        recovery(2),
        RecoveryReport(0, 0, (), NOW.timestamp(), 0.1, error="OperationalError: refused"),
        RecoveryReport(0, 0, (), NOW.timestamp(), 0.01, table_exists=False),
    ),
    "integrity": (None, Integrity(), Integrity({"orphan_writes": 3}, NOW.timestamp())),
}


def every_input() -> Iterator[HealthInputs]:
    """Every combination of the store's state and, beside them in turn, every combination of
    the findings: each section present and absent, in each state, under every rule."""
    stores = list(itertools.product(*STORE.values()))
    findings = list(itertools.product(*FINDINGS.values()))
    cases = zip(itertools.cycle(stores), itertools.cycle(findings), strict=False)
    for store, found in itertools.islice(cases, max(len(stores), len(findings))):
        yield HealthInputs(
            saver="AsyncPostgresSaver",
            **dict(zip(STORE, store, strict=True)),
            **dict(zip(FINDINGS, found, strict=True)),
        )


def test_every_document_the_rules_can_build_validates() -> None:
    """Whatever the sidecar knows, the document it builds validates, for every status."""
    statuses = set()
    for inputs in every_input():
        document, code = build_document(inputs, NOW)
        assert violations(document) == [], inputs
        assert health_document(inputs, NOW) == (document, code)
        statuses.add((document["status"], code))
    assert statuses == {(HEALTHY, 200), (DEGRADED, 200), (UNHEALTHY, 503)}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


async def served(sidecar: Sidecar, http: aiohttp.ClientSession) -> tuple[int, Any]:
    """The health endpoint's status and document, over HTTP."""
    async with http.get(sidecar.url + "/api/health/checkpointer") as response:
        return response.status, await response.json()


async def test_a_standalone_and_an_in_memory_sidecar_serve_valid_documents(
    settings: Settings, memory_settings: Settings, http: aiohttp.ClientSession
) -> None:
    """Healthy on PostgreSQL and healthy in memory: both documents validate."""
    for each in (settings, memory_settings):
        async with Sidecar(each, registry=CollectorRegistry()) as sidecar:
            code, document = await served(sidecar, http)
        assert (code, document["status"]) == (200, HEALTHY)
        assert violations(document) == []
    assert document["checkpointer"] == MEMORY


async def test_a_busy_in_process_sidecar_serves_a_valid_document(
    settings: Settings, http: aiohttp.ClientSession
) -> None:
    """After a workload, an error, a recovery check, an integrity pass and a canary probe,
    every section of the document is filled in, and it validates."""
    settings = settings.replace(
        tracking_flush_interval=0.05, canary_interval=0.1, leader_election=False
    )
    registry = CollectorRegistry()
    async with (
        build_checkpointer(settings, registry=registry) as saver,
        Sidecar(settings, checkpointer=saver, registry=registry) as sidecar,
    ):
        assert saver.tracker is not None
        graph = compile_workflow(saver, think_time=0, state_kb=1)
        async with saver.tracker.run("contract"):
            await graph.ainvoke(initial_state("contract"), {"configurable": {"thread_id": "c"}})
        with pytest.raises(KeyError):  # an error, so lastError is the saver's
            await saver.aput_writes({"configurable": {"thread_id": "x"}}, [("a", 1)], "task")
        await sidecar.check_recovery()
        await sidecar.scrape()
        await integrity_step(sidecar)
        deadline = monotonic() + 10
        code, document = await served(sidecar, http)
        while document["canary"]["lastProbeAt"] is None and monotonic() < deadline:
            await asyncio.sleep(0.02)
            code, document = await served(sidecar, http)
    assert code == 200
    empty = [key for key, value in document.items() if value is None]
    assert empty == []
    assert document["lastError"]["operation"] == "put_writes"
    assert violations(document) == []


async def test_an_unreachable_database_and_a_fallback_serve_valid_documents(
    settings: Settings, http: aiohttp.ClientSession
) -> None:
    """Database down (unhealthy, 503, lastError from the health check) and the fallback to
    memory (degraded) both validate."""
    url = f"postgresql://claude:{PASSWORD}@127.0.0.1:{refused_port()}/claude_studio"
    down = settings.replace(postgres_connection_string=url, collector_timeout=1.0)
    async with Sidecar(down, registry=CollectorRegistry()) as sidecar:
        code, document = await served(sidecar, http)
    assert (code, document["status"]) == (503, UNHEALTHY)
    assert document["lastError"]["operation"] == "database_check"
    assert violations(document) == []

    fallback = down.replace(fallback_to_memory=True)
    registry = CollectorRegistry()
    async with (
        build_checkpointer(fallback, registry=registry) as saver,
        Sidecar(fallback, checkpointer=saver, registry=registry) as sidecar,
    ):
        code, document = await served(sidecar, http)
    assert (code, document["status"]) == (200, DEGRADED)
    assert document["fallback"]["active"] is True
    assert violations(document) == []


# Keys a served document may leave out: the health check's figures before any check, and the
# canary's reason while it is unsupported.
OPTIONAL = {
    ("postgres", "serverVersion"),
    ("postgres", "latencyMs"),
    ("postgres", "error"),
    ("postgres", "cause"),
    ("canary", "unsupportedReason"),
}


def full_document() -> dict[str, Any]:
    """A document with every section and every optional key present."""
    inputs = HealthInputs(
        backend=BACKEND,
        saver="AsyncPostgresSaver",
        ping=UP,
        pool_stats=POOL,
        last_error=ErrorRecord("put", "OperationalError", "OperationalError: gone", NOW),
        canary=UNSUPPORTED,
        recovery=recovery(1),
        integrity=Integrity({"orphan_writes": 1}, NOW.timestamp()),
    )
    document, _ = health_document(inputs, NOW)
    return document


def key_paths(node: Mapping[str, Any], at: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every key of the document's objects, nested ones too (not those of the problems map)."""
    for key, value in node.items():
        yield (*at, key)
        if isinstance(value, dict) and key != "problems":
            yield from key_paths(value, (*at, key))


def without(document: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    changed = copy.deepcopy(document)
    node = changed
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return changed


def test_the_schema_rejects_a_document_missing_a_required_field() -> None:
    """Leaving out any key but the optional few fails, naming the key; those few may go."""
    document = full_document()
    assert violations(document) == []
    paths = list(key_paths(document))
    assert len(paths) > 40
    assert set(paths) >= OPTIONAL
    for path in paths:
        errors = violations(without(document, path))
        if path in OPTIONAL:
            assert errors == [], path
        else:
            assert errors == [f"{'/'.join(path[:-1])}: '{path[-1]}' is a required property"]


def test_the_schema_rejects_unknown_keys_wrong_types_and_unknown_values() -> None:
    """The schema is closed: an extra key, a wrong type, a status or cause it does not know."""
    document = full_document()
    assert violations({**document, "uptime": 3}) == [
        ": Additional properties are not allowed ('uptime' was unexpected)"
    ]
    assert violations({**document, "checkedAt": None}) == [
        "checkedAt: None is not of type 'string'"
    ]
    assert violations({**document, "checkedAt": "yesterday"}) == [
        "checkedAt: 'yesterday' is not a 'date-time'"
    ]
    assert violations({**document, "status": "ok"}) == [
        "status: 'ok' is not one of ['healthy', 'degraded', 'unhealthy']"
    ]
    down = copy.deepcopy(document)
    down["postgres"]["cause"] = "gremlins"
    assert len(violations(down)) == 1
    assert violations(down)[0].startswith("postgres/cause: 'gremlins' is not one of")
    fewer = copy.deepcopy(document)
    fewer["pool"]["size"] = 1.5
    assert violations(fewer) == ["pool/size: 1.5 is not of type 'integer'"]


# The metric catalog


@dataclass(frozen=True)
class Exposed:
    """One family as a scrape shows it; labels are None where it has no sample to show them."""

    type: str
    help: str
    labels: frozenset[str] | None
    buckets: list[float] | None


def exposed_families(text: str) -> dict[str, Exposed]:
    """The families of an exposition, named as the catalog names them (counters with _total)."""
    families = {}
    for family in text_string_to_metric_families(text):
        bounds: list[float] = []
        for sample in family.samples:
            le = sample.labels.get("le", "+Inf")
            if sample.name.endswith("_bucket") and le != "+Inf" and float(le) not in bounds:
                bounds.append(float(le))
        labels = frozenset(k for s in family.samples for k in s.labels if k != "le")
        name = family.name + ("_total" if family.type == "counter" else "")
        families[name] = Exposed(
            type=family.type,
            help=family.documentation,
            labels=labels if family.samples else None,
            buckets=bounds if family.type == "histogram" and family.samples else None,
        )
    return families


def docstring_labels(name: str) -> frozenset[str] | None:
    """The label names an exposition line in the exporter's module docstrings shows for
    ``name`` (the collectors show every family they produce), or None if none shows it."""
    line = re.compile(rf"^\s+{name}(?:\{{(?P<labels>[^}}]*)\}})? ", re.M)
    for module in list(sys.modules.values()):
        if module.__name__.startswith("exporter") and (match := line.search(module.__doc__ or "")):
            pairs = match["labels"] or ""
            return frozenset(re.findall(r'(\w+)="', pairs))
    return None


def catalog_differences(families: list[MetricFamily], exposed: Mapping[str, Exposed]) -> list[str]:
    """How the catalog and a fully populated scrape disagree, both ways (empty: they agree).

    A family the scrape leaves out may be listed only with its condition; one without
    samples has its labels checked against the docstring that shows it.
    """
    listed = {family["name"]: family for family in families}
    problems = [f"{name}: exposed, not in the catalog" for name in exposed.keys() - listed.keys()]
    for name, family in listed.items():
        seen = exposed.get(name)
        if seen is None:
            if "condition" not in family:
                problems.append(f"{name}: never exposed, and no condition says when it is")
            continue
        labels = seen.labels if seen.labels is not None else docstring_labels(name)
        checks: dict[str, tuple[object, object]] = {
            "type": (family["type"], seen.type),
            "help": (family["help"], seen.help),
            "labels": (frozenset(family["labels"]), labels),
        }
        if seen.buckets is not None:
            checks["buckets"] = (family.get("buckets"), seen.buckets)
        for what, (catalogued, actual) in checks.items():
            if catalogued != actual:
                problems.append(f"{name}: {what} {catalogued!r} in the catalog, {actual!r} exposed")
    return sorted(problems)


@pytest.fixture
async def exposed(statements_dsn: str, settings: Settings) -> dict[str, Exposed]:
    """Every family a real in-process sidecar exposes after a workload, pg_stat_statements on."""
    settings = settings.replace(postgres_connection_string=statements_dsn)
    return exposed_families(await exposition_after_workload(settings))


async def test_the_catalog_is_what_a_real_scrape_exposes(exposed: dict[str, Exposed]) -> None:
    """Same families both ways, with the same types, HELP, labels and buckets."""
    assert len(exposed) >= 100
    assert catalog_differences(load_catalog()["families"], exposed) == []


def test_a_disagreement_is_reported_either_way() -> None:
    """The comparison itself: a family missing from either side, or differing, is named."""
    gauge: MetricFamily = {
        "name": "x_up",
        "type": "gauge",
        "help": "Up.",
        "labels": [],
        "description": "",
    }
    seen = Exposed("gauge", "Up.", frozenset(), None)
    assert catalog_differences([gauge], {"x_up": seen}) == []
    assert catalog_differences([], {"x_up": seen}) == ["x_up: exposed, not in the catalog"]
    assert catalog_differences([gauge], {}) == [
        "x_up: never exposed, and no condition says when it is"
    ]
    assert catalog_differences([{**gauge, "condition": "only when x"}], {}) == []
    histogram: MetricFamily = {**gauge, "type": "histogram", "buckets": [1.0, 2.0]}
    assert catalog_differences(
        [histogram], {"x_up": Exposed("histogram", "Up!", frozenset({"a"}), [1.0, 5.0])}
    ) == [
        "x_up: buckets [1.0, 2.0] in the catalog, [1.0, 5.0] exposed",
        "x_up: help 'Up.' in the catalog, 'Up!' exposed",
        "x_up: labels frozenset() in the catalog, frozenset({'a'}) exposed",
    ]


def test_the_catalog_is_well_formed() -> None:
    """The file has the shape its type claims; names are unique and namespaced; buckets rise
    and belong to histograms only, every histogram listing them."""
    catalog = load_catalog()
    schema = json_schema(Catalog, "Metric catalog")
    assert list(Draft202012Validator(schema).iter_errors(catalog)) == []
    names = [family["name"] for family in catalog["families"]]
    assert len(names) == len(set(names))
    assert all(name.startswith(catalog["namespace"] + "_") for name in names)
    for family in catalog["families"]:
        assert len(set(family["labels"])) == len(family["labels"]), family["name"]
        assert ("buckets" in family) == (family["type"] == "histogram"), family["name"]
        assert family.get("buckets", []) == sorted(set(family.get("buckets", []))), family["name"]


# The README and the generator


def test_the_readme_metrics_reference_is_generated_from_the_catalog() -> None:
    """The table between the markers is exactly what the catalog renders."""
    readme = README.read_text()
    assert with_metrics_table(readme, load_catalog()) == readme
    assert metrics_table(load_catalog()) in readme


def test_the_generator_finds_nothing_stale() -> None:
    """python -m exporter.contract --check passes on the files as checked in."""
    assert (
        main(["--check", "--readme", str(README), "--schema", str(CONTRACT / HEALTH_SCHEMA)]) == 0
    )


def test_the_generator_rewrites_stale_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A README row edited by hand and a schema out of date are named by --check, then
    rewritten to what the catalog and the types make."""
    readme, schema = tmp_path / "README.md", tmp_path / HEALTH_SCHEMA
    original = README.read_text()
    readme.write_text(original.replace("| Operations running now. |", "| Running. |"))
    schema.write_text("{}\n")
    args = ["--readme", str(readme), "--schema", str(schema)]
    assert main(["--check", *args]) == 1
    assert capsys.readouterr().err.count("is stale") == 2
    assert main(args) == 0
    assert readme.read_text() == original
    assert schema.read_text() == (CONTRACT / HEALTH_SCHEMA).read_text()
    assert main(["--check", *args]) == 0


def test_a_readme_without_the_markers_is_refused() -> None:
    """The generator never guesses where the table goes."""
    readme = README.read_text()
    assert BEGIN in readme
    assert END in readme
    with pytest.raises(ValueError, match="lacks the markers"):
        with_metrics_table(readme.replace(BEGIN, ""), load_catalog())


def test_the_contract_files_ship_in_the_package() -> None:
    """pyproject's package data takes both JSON files, so an installed exporter has them."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["exporter.contract"]
    shipped = sorted(
        p.name for p in CONTRACT.iterdir() if any(fnmatch(p.name, g) for g in patterns)
    )
    assert shipped == ["health.schema.json", "metrics.json"]
