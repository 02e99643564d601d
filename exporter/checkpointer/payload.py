"""Counts the bytes a saver's serializer produces and reads, without serializing twice.

The serializer keeps its own class (as a subclass made per serializer type),
so ``isinstance`` checks in LangGraph, such as the one that derives a strict
msgpack allowlist, behave exactly as before.
"""

from __future__ import annotations

import copy
from typing import Any

from langgraph.checkpoint.serde.base import SerializerProtocol

from exporter.checkpointer.call import current_call

_MARK = "__checkpoint_exporter_measured__"
_classes: dict[type[Any], type[Any]] = {}


def _measured_class(base: type[Any]) -> type[Any]:
    measured = _classes.get(base)
    if measured is not None:
        return measured
    base_dumps = base.dumps_typed
    base_loads = base.loads_typed
    current = current_call.get  # bound once: this runs for every value serialized

    def dumps_typed(self: Any, obj: Any) -> tuple[str, bytes]:
        result: tuple[str, bytes] = base_dumps(self, obj)
        call = current()
        if call is not None:
            call.payload += len(result[1])
        return result

    def loads_typed(self: Any, data: tuple[str, bytes]) -> Any:
        call = current()
        if call is not None:
            call.payload += len(data[1])
        return base_loads(self, data)

    measured = type(
        base.__name__,
        (base,),
        {
            _MARK: True,
            "dumps_typed": dumps_typed,
            "loads_typed": loads_typed,
            "__qualname__": base.__qualname__,
            "__module__": base.__module__,
        },
    )
    _classes[base] = measured
    return measured


def measure_serde(serde: SerializerProtocol) -> SerializerProtocol:
    """Return a measuring copy of ``serde`` (or ``serde`` itself if that is impossible)."""
    if getattr(type(serde), _MARK, False):
        return serde
    clone = copy.copy(serde)
    try:
        clone.__class__ = _measured_class(type(serde))
    except TypeError:
        # Extension types and __slots__ layouts cannot change class; sizes go unmeasured.
        return serde
    return clone
