"""The checkpoint store the sidecar watches, chosen once and handed to every component.

Components that open connections of their own (leader election, the reachability
check, the canary, the recovery check, the tracker) and those that read
checkpoints (recovery, integrity) take a :class:`Target` instead of ``Settings``:
one connection string with one set of connection arguments, one schema with its
quoted forms, one serializer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from langgraph.checkpoint.serde.base import SerializerProtocol
from psycopg import AsyncConnection, sql
from psycopg.rows import DictRow

from exporter import sql as quoting
from exporter.checkpointer.serde import STRUCTURAL_SERDE
from exporter.database import exporter_connect_kwargs, with_options
from exporter.settings import Settings


@dataclass(frozen=True, slots=True)
class Target:
    """A database, the schema holding the checkpoint tables, and the serializer that wrote them.

    ``serde`` is the application's serializer when the sidecar runs beside its saver,
    None standalone; :attr:`reader` is what checkpoints are decoded with either way.
    """

    conninfo: str = field(repr=False)
    schema: str
    connect_kwargs: Mapping[str, Any] = field(repr=False)
    serde: SerializerProtocol | None = None

    @classmethod
    def of(
        cls, conninfo: str, settings: Settings, serde: SerializerProtocol | None = None
    ) -> Target:
        """The target ``settings`` name on ``conninfo``, with the exporter's bounded connections."""
        kwargs = exporter_connect_kwargs(conninfo, settings)
        return cls(conninfo, settings.postgres_schema, kwargs, serde)

    @property
    def reader(self) -> SerializerProtocol:
        """The application's serializer, or LangGraph's reading application classes as data."""
        return self.serde if self.serde is not None else STRUCTURAL_SERDE

    @property
    def identifier(self) -> sql.Identifier:
        """The schema, quoted as an identifier."""
        return quoting.identifier(self.schema)

    def table(self, name: str) -> sql.Identifier:
        """``name`` in the schema, quoted as a qualified identifier."""
        return quoting.table(self.schema, name)

    async def connect(self, *, on_search_path: bool = False) -> AsyncConnection[DictRow]:
        """A connection of the caller's own, with the exporter's timeouts and name.

        ``on_search_path`` puts the schema first on the ``search_path``, for a
        LangGraph saver the exporter runs itself: its SQL names tables unqualified.
        """
        kwargs = dict(self.connect_kwargs)
        if on_search_path:
            kwargs["options"] = with_options(kwargs["options"], quoting.search_path(self.schema))
        return await AsyncConnection.connect(self.conninfo, **kwargs)
