"""The sidecar's contract with what reads it, as files shipped in the package.

``health.schema.json`` is the JSON Schema (draft 2020-12) of ``/api/health/checkpointer``,
derived from the types in :mod:`exporter.health`; ``metrics.json`` lists every metric family
``/metrics`` can carry, and the README's metrics reference is generated from it. Both are
regenerated with ``python -m exporter.contract`` and held to a real sidecar by
tests/test_contract.py.
"""
