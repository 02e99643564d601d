"""The renderer serves exactly what prometheus_client encodes, though it reuses unchanged text;
families built from unchanged state are handed back as they were."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric

from exporter import Sidecar, build_checkpointer
from exporter.collectors.base import Memo
from exporter.exposition import (
    OPENMETRICS_VERSIONS,
    Renderer,
    choose_encoding,
    exposition,
    negotiable,
)
from exporter.settings import Settings
from tests.graphs import config, review_graph
from tests.samples import parse_metrics

ACCEPTS = (
    "",
    "text/plain;version=0.0.4",
    "text/plain;version=1.0.0;escaping=allow-utf-8",
    "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
    "application/openmetrics-text",
)

SAVES = "langgraph_checkpointer_operations_total"


@pytest.mark.parametrize("accept", ACCEPTS)
async def test_each_scrape_is_encoded_as_prometheus_client_would_encode_it(
    settings: Settings, registry: CollectorRegistry, accept: str
) -> None:
    """Byte for byte, over scrapes where some families change and most do not."""
    renderer = Renderer(registry)
    encoder, content_type = choose_encoder(accept)
    bodies = []
    async with (
        build_checkpointer(settings, registry=registry) as saver,
        Sidecar(settings, checkpointer=saver, registry=registry) as sidecar,
    ):
        graph = review_graph(saver)
        for round_ in range(3):
            await graph.ainvoke({"text": "draft"}, config(f"render-{round_}"))
            families = await sidecar.scrape()
            body, served_type = renderer.render(families, accept)
            assert served_type == content_type
            assert body == encoder(exposition(registry, families))
            bodies.append(body)
    if not accept.startswith("application/openmetrics-text"):
        saves = [parse_metrics(body.decode()) for body in bodies]
        counts = [
            sum(
                v
                for (name, labels), v in s.items()
                if name == SAVES and ("operation", "put") in labels
            )
            for s in saves
        ]
        assert counts[0] < counts[1] < counts[2], counts


async def test_name_selection_is_encoded_apart_from_the_whole(
    settings: Settings, registry: CollectorRegistry
) -> None:
    """``name[]`` narrows one render; the next whole one is complete again."""
    renderer = Renderer(registry)
    async with Sidecar(settings, registry=registry) as sidecar:
        families = await sidecar.scrape()
        whole, _ = renderer.render(families)
        narrowed, _ = renderer.render(families, names=["langgraph_checkpointer_up"])
        again, _ = renderer.render(await sidecar.scrape())
    assert narrowed.decode().splitlines()[-1] == "langgraph_checkpointer_up 1.0"
    assert [line for line in narrowed.decode().splitlines() if not line.startswith("#")] == [
        "langgraph_checkpointer_up 1.0"
    ]
    assert len(whole) > 10 * len(narrowed)
    assert set(parse_metrics(again.decode())) == set(parse_metrics(whole.decode()))


def test_memoized_families_are_rebuilt_when_their_state_changes() -> None:
    """Equal state hands back the very families built before; other state builds anew."""
    built: list[float] = []

    def build(state: float) -> list[Metric]:
        built.append(state)
        return [GaugeMetricFamily("langgraph_checkpointer_memo", "A test family.", value=state)]

    memo = Memo(build)
    first = memo(1.0)
    assert memo(1.0) is first
    second = memo(2.0)
    assert [s.value for f in second for s in f.samples] == [2.0]
    assert memo(1.0) is not first
    assert built == [1.0, 2.0, 1.0]


@pytest.mark.parametrize(
    ("accept_encoding", "encoding"),
    [
        ("", None),
        ("gzip", "gzip"),
        ("GZIP", "gzip"),
        ("x-gzip", "gzip"),
        ("gzip;q=0", None),
        ("gzip; q=0.000", None),
        ("gzip;q=0.001", "gzip"),
        ("gzip, deflate, br", "gzip"),
        ("br;q=1, gzip;q=0.1", "gzip"),
        ("deflate, br, zstd", None),
        ("*", "gzip"),
        ("*;q=0", None),
        ("gzip;q=0, *", None),
        ("*;q=0, gzip", "gzip"),
        ("gzip;q=x", None),
        ("gzip;q=1.5", None),
        ("identity, gzip;q=0", None),
        (",;q=;,*;q=x", None),
    ],
)
def test_gzip_is_chosen_by_quality_values(accept_encoding: str, encoding: str | None) -> None:
    """gzip when acceptable by name or by *, never with q=0 or a malformed q."""
    assert choose_encoding(accept_encoding) == encoding


def test_openmetrics_versions_are_those_prometheus_client_writes() -> None:
    """1.0.0 is always among them; each one is named by one of prometheus_client's content types."""
    assert "1.0.0" in OPENMETRICS_VERSIONS
    assert "0.0.1" not in OPENMETRICS_VERSIONS  # choose_encoder serves text for it
    for version in OPENMETRICS_VERSIONS:
        _, content_type = choose_encoder(f"application/openmetrics-text; version={version}")
        assert content_type.startswith(f"application/openmetrics-text; version={version};")


@pytest.mark.parametrize(
    ("accept", "kept"),
    [
        ("application/openmetrics-text; version=999999999.0", ""),
        ("application/openmetrics-text; version=1.0.0",
         "application/openmetrics-text; version=1.0.0"),
        ("application/openmetrics-text", "application/openmetrics-text"),
        ("application/openmetrics-text;q=0, text/plain", " text/plain"),
        ("text/plain;q=0.2, application/openmetrics-text;q=0.5",
         " application/openmetrics-text;q=0.5,text/plain;q=0.2"),
        ("text/plain; version=abc", ""),
        ("text/plain;q=oops", ""),
    ],
)  # fmt: skip
def test_negotiable_orders_by_quality_and_drops_what_cannot_be_served(
    accept: str, kept: str
) -> None:
    """Refused, malformed and unwritten entries go; the rest follow their quality."""
    assert negotiable(accept) == kept
