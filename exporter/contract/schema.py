"""JSON Schema (draft 2020-12) derived from TypedDicts, so a schema cannot drift from its type.

The health document is typed in :mod:`exporter.health`; :func:`json_schema` turns that type
into the schema checked in beside this module, and a test keeps the two equal. What a Python
type cannot say (a string's format, the values it takes) rides on ``Annotated`` as
:class:`Format` and :class:`Enumerated`.
"""

from __future__ import annotations

import json
import types
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.resources import files
from typing import (
    Annotated,
    Any,
    Final,
    Literal,
    NotRequired,
    Union,
    get_args,
    get_origin,
    get_type_hints,
    is_typeddict,
)

DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
HEALTH_SCHEMA: Final = "health.schema.json"

_PRIMITIVES: Final[Mapping[object, str]] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


@dataclass(frozen=True, slots=True)
class Format:
    """``format`` of a string (``date-time``: RFC 3339, as ``datetime.isoformat`` writes it)."""

    name: str


@dataclass(frozen=True, slots=True)
class Enumerated:
    """The only values a string takes; built from the code's own constants so both move."""

    values: tuple[str, ...]


def json_schema(document: type[Any], title: str) -> dict[str, Any]:
    """The schema of ``document`` (a TypedDict); nested TypedDicts become ``$defs``.

    Objects forbid unknown keys, so a document validating against the schema proves
    the type lists every key the code writes.
    """
    defs: dict[str, Any] = {}
    root = _object(document, defs)
    return {"$schema": DIALECT, "title": title, **root, "$defs": dict(sorted(defs.items()))}


def load_health_schema() -> dict[str, Any]:
    """The health document's schema as shipped in the package."""
    text = files(__package__).joinpath(HEALTH_SCHEMA).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def dump(document: Mapping[str, Any]) -> str:
    """The one text form of a contract file, so regenerating it leaves no diff."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def _object(typed: type[Any], defs: dict[str, Any]) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    required: list[str] = []
    # include_extras keeps NotRequired: Python 3.11 misses it in __required_keys__ when
    # annotations are postponed, so the hint itself says whether a key is required.
    for key, hint in get_type_hints(typed, include_extras=True).items():
        if get_origin(hint) is NotRequired:
            (hint,) = get_args(hint)
        else:
            required.append(key)
        properties[key] = _schema(hint, defs)
    described = {"description": " ".join(typed.__doc__.split())} if typed.__doc__ else {}
    return described | {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


def _schema(hint: Any, defs: dict[str, Any]) -> dict[str, Any]:
    origin = get_origin(hint)
    if hint in _PRIMITIVES:
        return {"type": _PRIMITIVES[hint]}
    if is_typeddict(hint):
        if hint.__name__ not in defs:
            defs[hint.__name__] = {}  # reserved first: a type may refer to itself
            defs[hint.__name__] = _object(hint, defs)
        return {"$ref": f"#/$defs/{hint.__name__}"}
    if origin is Literal:
        values = get_args(hint)
        return {"type": _PRIMITIVES[type(values[0])], "enum": list(values)}
    if origin in (Union, types.UnionType):
        members = [arg for arg in get_args(hint) if arg is not type(None)]
        if len(members) == 1:
            return _nullable(_schema(members[0], defs))
        raise TypeError(f"no JSON Schema for the union {hint!r}")
    if origin is list:
        return {"type": "array", "items": _schema(get_args(hint)[0], defs)}
    if origin in (dict, Mapping):
        key, value = get_args(hint)
        if key is not str:
            raise TypeError(f"JSON object keys are strings, not {key!r}")
        return {"type": "object", "additionalProperties": _schema(value, defs)}
    if origin is Annotated:
        schema = _schema(get_args(hint)[0], defs)
        for item in hint.__metadata__:
            if isinstance(item, Format):
                schema["format"] = item.name
            elif isinstance(item, Enumerated):
                schema["enum"] = list(item.values)
        return schema
    raise TypeError(f"no JSON Schema for {hint!r}")


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` or null: a reference goes into ``anyOf``, a plain type gains ``null``."""
    if "$ref" in schema:
        return {"anyOf": [schema, {"type": "null"}]}
    nullable = dict(schema, type=[schema["type"], "null"])
    if "enum" in schema:
        nullable["enum"] = [*schema["enum"], None]
    return nullable
