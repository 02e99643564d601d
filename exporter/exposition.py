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
from prometheus_client.openmetrics import exposition as openmetrics

OPENMETRICS = "application/openmetrics-text"
OPENMETRICS_EOF = b"# EOF\n"
GZIP = "gzip"

# A version parameter prometheus_client can compare: dotted whole numbers.
_VERSION = re.compile(r"[0-9]{1,9}(?:\.[0-9]{1,9})*")
# A quality value (RFC 9110, section 12.4.2): 0 to 1, at most three decimals.
_QUALITY = re.compile(r"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?")


def _written_versions() -> frozenset[str]:
    """The OpenMetrics versions prometheus_client writes, from the content types it names."""
    content_types = (
        value
        for name, value in vars(openmetrics).items()
        if name.startswith("CONTENT_TYPE_LATEST") and isinstance(value, str)
    )
    return frozenset(
        match["version"]
        for content_type in content_types
        if (match := re.search(r"version=(?P<version>[0-9.]+)", content_type))
    )


# prometheus_client answers any OpenMetrics version from 1.0.0 up, repeating the one asked
# for; only these are the formats it actually writes.
OPENMETRICS_VERSIONS = _written_versions()


def _parameters(entry: str) -> tuple[str, dict[str, str]]:
    """An Accept or Accept-Encoding entry's value (lowercase) and its parameters (first wins)."""
    value, *tokens = entry.split(";")
    parameters: dict[str, str] = {}
    for token in tokens:
        key, sep, text = token.strip().partition("=")
        if sep:
            parameters.setdefault(key.strip().lower(), text.strip())
    return value.strip().lower(), parameters


def _quality(parameters: dict[str, str]) -> float | None:
    """The entry's q (1 when absent), or None when it is not a quality value."""
    text = parameters.get("q", "1")
    return float(text) if _QUALITY.fullmatch(text) else None


def choose_encoding(accept_encoding: str) -> str | None:
    """``gzip`` when ``Accept-Encoding`` accepts it, else None (identity).

    By the quality values: ``q=0`` means not acceptable, and ``*`` stands for gzip when
    gzip is not named. gzip is the one compression served, whatever else is accepted
    and however much preferred: it is what Prometheus asks for.
    """
    named: float | None = None
    wildcard: float | None = None
    for entry in accept_encoding.split(","):
        coding, parameters = _parameters(entry)
        quality = _quality(parameters)
        if quality is None:
            continue  # not a quality value: the entry is ignored
        if coding in (GZIP, "x-gzip"):
            named = quality if named is None else max(named, quality)
        elif coding == "*":
            wildcard = quality
    accepted = named if named is not None else wildcard
    return GZIP if accepted else None


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
    """``accept`` as prometheus_client's ``choose_encoder`` should read it.

    That function takes the first entry it knows, whatever its quality, so the entries
    are put in order of quality, and those with ``q=0`` (not acceptable) or a malformed
    q are dropped. So are entries whose ``version`` is not dotted numbers, which it
    compares part by part with integers and raises on (``version=latest`` answered 500),
    and OpenMetrics entries naming a version it does not write, which it would echo back
    as the version served. With none left, the default text format (0.0.4) is served.
    """
    ranked = []
    for position, entry in enumerate(accept.split(",")):
        media_type, parameters = _parameters(entry)
        quality = _quality(parameters)
        version = _first_version(entry)
        if not quality:
            continue
        if version and not _VERSION.fullmatch(version):
            continue
        if media_type == OPENMETRICS and version and version not in OPENMETRICS_VERSIONS:
            continue
        ranked.append((-quality, position, entry))
    return ",".join(entry for *_, entry in sorted(ranked))


def _first_version(entry: str) -> str | None:
    # The first version parameter counts, as in prometheus_client, which reads it case-sensitively.
    for token in entry.split(";")[1:]:
        key, sep, value = token.strip().partition("=")
        if sep and key == "version":
            return value
    return None


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
