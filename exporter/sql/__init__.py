"""Every statement the exporter runs, one module per table family, and the one place that quotes.

As LangGraph keeps its statements in ``langgraph.checkpoint.postgres.base``, each module
holds named constants and the builders that fill them in, and does no I/O: it imports
nothing but :mod:`psycopg.sql`, to compose. The modules that run them (collectors, jobs,
the tracker) keep what they build for the values they are given.

- :mod:`exporter.sql.checkpoints`: LangGraph's tables (``checkpoints``,
  ``checkpoint_blobs``, ``checkpoint_writes``, ``checkpoint_migrations``).
- :mod:`exporter.sql.workflow_metadata`: the project's own tables and their migrations.
- :mod:`exporter.sql.server`: the server and its catalog (version, schemas, which tables
  exist, ``pg_stat_activity``, ``pg_stat_statements``).
- :mod:`exporter.sql.locks`: the advisory locks sidecars and applications take.

A schema reaches the server in one of three forms, each made here: as an identifier
(:func:`identifier`, :func:`table`, :func:`schema_query`) in statements composed in the
client; as a literal (:func:`bound`) where the server quotes it (``format('%I.%I')``,
catalog lookups); and as the ``search_path`` setting of a connection whose SQL names
tables unqualified (:func:`search_path`).
"""

from __future__ import annotations

from typing import Any

from psycopg import sql


def identifier(name: str) -> sql.Identifier:
    """``name`` (a schema, or any name not qualified by one) quoted as an identifier."""
    return sql.Identifier(name)


def table(schema: str, name: str) -> sql.Identifier:
    """Table ``name`` in ``schema``, quoted as a qualified identifier."""
    return sql.Identifier(schema, name)


def schema_query(template: sql.SQL, schema: str) -> sql.Composed:
    """``template`` with ``{schema}`` bound as a quoted identifier."""
    return template.format(schema=identifier(schema))


def search_path(schema: str) -> str:
    """The setting, for libpq's ``options``, that puts ``schema`` on the ``search_path``.

    For LangGraph's savers, whose SQL names tables unqualified. The name goes as it is:
    the settings admit only lowercase identifiers, which need no quotes. A name they
    refuse is not made to fit: one with a space splits the options, and the server
    refuses the connection rather than reading the rest as anything.
    """
    return f"search_path={schema}"


def bound(template: str, **values: Any) -> bytes:
    """``template`` with each ``{name}`` filled from ``values``: a
    :class:`psycopg.sql.Composable` (an identifier) as it is, anything else as a
    quoted literal (a tuple as an array).

    For the statements a scrape runs, whose values are fixed for the process (a
    schema, a setting): built once per value (callers cache it) and executed with
    no parameters, so nothing is adapted per scrape and the server plans the
    prepared statement once.
    """
    filled = {
        name: value if isinstance(value, sql.Composable) else sql.Literal(_sql_value(value))
        for name, value in values.items()
    }
    return sql.SQL(template).format(**filled).as_bytes()


def _sql_value(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
