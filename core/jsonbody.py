"""Request bodies are JSON: a value is accepted only when its JSON type is the one the schema states.

pydantic's lax mode turns `"1"` or `1` into `True`, `"5"` into `5`, `true` into `1` and a bare number into a date
(seconds since 1970). Each is a request the published OpenAPI schema calls invalid, and a helpdesk that sends one by
mistake gets a silently different ticket. Strict mode cannot be used instead: FastAPI validates the parsed body as
Python objects, where strict mode also refuses ISO date strings. `JsonBody` keeps lax parsing of the right JSON type
and refuses the coercions across types, with a message that names the expected type.
"""

from __future__ import annotations

import functools
import re
import types
import typing
from datetime import date, datetime
from typing import Any, Union

from pydantic import BaseModel, model_validator

_NUMBER = re.compile(r"\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*")

_SCALARS = (bool, int, float, datetime, date)


def _scalar(annotation: Any) -> tuple[type | None, bool]:
    """(the one scalar type the field holds, whether it is a list of it); (None, False) when it is not that simple."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        kinds = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _scalar(kinds[0]) if len(kinds) == 1 else (None, False)
    if origin in (list, set, frozenset, tuple):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        if len(args) == 1:
            kind, nested = _scalar(args[0])
            return (kind, True) if kind is not None and not nested else (None, False)
        return None, False
    if isinstance(annotation, type) and issubclass(annotation, _SCALARS):
        for kind in _SCALARS:  # bool before int: bool is an int subclass
            if issubclass(annotation, kind):
                return kind, False
    return None, False


def wrong_json_type(kind: type, value: Any) -> str | None:
    """Why `value` (parsed JSON) is not of the JSON type that `kind` is published as; None when it is."""
    if value is None:
        return None  # whether null is allowed is the field's own rule
    if kind is bool:
        return None if isinstance(value, bool) else "must be true or false"
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "must be a whole number"
        return None  # 5.0 is an integer in JSON Schema; pydantic refuses 5.5 itself
    if kind is float:
        return None if isinstance(value, (int, float)) and not isinstance(value, bool) else "must be a number"
    if kind in (datetime, date):
        if isinstance(value, (datetime, date)):
            return None
        if not isinstance(value, str) or _NUMBER.fullmatch(value):
            what = "date-time such as 2026-12-06T10:00:00Z" if kind is datetime else "date such as 2026-12-06"
            return f"must be an ISO 8601 {what}, not a number"
    return None


@functools.cache
def _checked_fields(model: type[BaseModel]) -> tuple[tuple[str, str, type, bool], ...]:
    """(name, input key, scalar type, is a list) of each of a model's fields with one scalar JSON type (once per
    class: the validator runs on every request body)."""
    out = []
    for name, field in model.model_fields.items():
        key = field.validation_alias if isinstance(field.validation_alias, str) else (field.alias or name)
        kind, many = _scalar(field.annotation)
        if kind is not None:
            out.append((name, key, kind, many))
    return tuple(out)


class JsonBody(BaseModel):
    """Mix into a request model: each scalar field's value must arrive with the JSON type the schema states."""

    @model_validator(mode="before")
    @classmethod
    def _json_types(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        problems: list[str] = []
        for name, key, kind, many in _checked_fields(cls):
            if key not in data and name not in data:
                continue
            value = data[key] if key in data else data[name]
            values = value if many and isinstance(value, list) else [value]
            for item in values:
                why = wrong_json_type(kind, item)
                if why:
                    problems.append(f"{key} {why}" + (" (each item)" if many else "") + f", got {item!r:.60}")
                    break
        if problems:
            raise ValueError("; ".join(problems))
        return data
