"""The ``/metrics`` body: prometheus_client's encoders, each family's text kept while unchanged.

Between two scrapes most families are identical: table sizes, schema versions,
histograms from a cached sample, the canary's last probe. prometheus_client
spends several microseconds validating and formatting each sample, while
comparing a family with its previous self is a comparison of tuples. So a
family equal to the one encoded last time is served from the bytes encoded
then. The body is byte for byte what the chosen encoder makes of the whole
view (a test holds it to that), for every format prometheus_client negotiates.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric

OPENMETRICS = "application/openmetrics-text"
OPENMETRICS_EOF = b"# EOF\n"

# A version parameter prometheus_client can compare: dotted whole numbers.
_VERSION = re.compile(r"[0-9]{1,9}(?:\.[0-9]{1,9})*")


class Families:
    """Some metric families, as a collector."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def exposition(registry: CollectorRegistry, families: Iterable[Metric]) -> CollectorRegistry:
    """One scrape's view: the long-lived registry plus the families collected just now.

    Built per request, so concurrent scrapes never see each other's results.
    Both are registered without names, which prometheus_client's ``name[]``
    filtering then narrows family by family.
    """
    view = CollectorRegistry(support_collectors_without_names=True)
    view.register(registry)
    view.register(Families(families))
    return view


def negotiable(accept: str) -> str:
    """``accept`` without the entries whose ``version`` parameter is not dotted numbers.

    prometheus_client compares that parameter part by part with integers and raises on
    anything else (``version=latest`` answered 500). An entry naming a version nobody
    can serve is dropped, as an unknown media type would be; with none left, the
    default text format is served.
    """
    kept = []
    for entry in accept.split(","):
        version = None
        for token in entry.split(";"):
            key, sep, value = token.strip().partition("=")
            if sep and key == "version":  # the first one counts, as in prometheus_client
                version = value
                break
        if not version or _VERSION.fullmatch(version):
            kept.append(entry)
    return ",".join(kept)


# What one encoding of one view looked like last time: each family and its bytes, by name.
_Encoded = dict[str, tuple[Metric, bytes]]


class Renderer:
    """Encodes scrapes of one registry, reusing the text of families that did not change.

    It remembers the last scrape of at most ``variants`` distinct encodings
    (format, version, escaping and ``name[]`` selection); Prometheus asks for
    the same one every time.
    """

    def __init__(self, registry: CollectorRegistry, variants: int = 4) -> None:
        self.registry = registry
        self._variants = variants
        self._last: OrderedDict[tuple[str, tuple[str, ...]], _Encoded] = OrderedDict()

    def render(
        self, families: Iterable[Metric], accept: str = "", names: Sequence[str] = ()
    ) -> tuple[bytes, str]:
        """The body for ``accept`` and its content type; ``names`` narrows it as ``name[]``."""
        encoder, content_type = choose_encoder(negotiable(accept))
        view = exposition(self.registry, families)
        collector = view.restricted_registry(names) if names else view
        key = (content_type, tuple(names))
        last = self._last.pop(key, {})
        openmetrics = content_type.startswith(OPENMETRICS)
        encoded: _Encoded = {}
        parts = []
        for family in collector.collect():
            previous = last.get(family.name)
            if previous is not None and (previous[0] is family or previous[0] == family):
                text = previous[1]
            else:
                text = encoder(Families([family]))
                if openmetrics:
                    text = text.removesuffix(OPENMETRICS_EOF)
            encoded[family.name] = (family, text)
            parts.append(text)
        if openmetrics:
            parts.append(OPENMETRICS_EOF)
        self._last[key] = encoded
        while len(self._last) > self._variants:
            self._last.popitem(last=False)
        return b"".join(parts), content_type
