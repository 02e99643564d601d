"""How checkpoints are decoded when the application's serializer is not at hand."""

from __future__ import annotations

from typing import Any, Final

from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer


def _check_extension(code: int, data: bytes) -> Any:
    # Every extension payload is itself msgpack: decoding it checks its bytes
    # without importing the module it names or calling anything in it.
    return STRUCTURAL_SERDE.loads_typed(("msgpack", data))


# LangGraph's serializer, reading extension types (application classes) as
# their payloads: it loads exactly what the saver loads, fails where it fails,
# and never runs application code or warns about unregistered types.
STRUCTURAL_SERDE: Final = JsonPlusSerializer(__unpack_ext_hook__=_check_extension)
