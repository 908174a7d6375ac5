"""pydantic's validation errors, in words a user acts on, at the place in the file they concern.

pydantic says "Input should be a valid string"; we say "expected a string, got an integer
(8080): quote it ("8080")". Its error paths can hold parts that are not in the file (union
tags like 'list[str]', validator names like 'function-after[...]'), and '[key]' for a problem
with a mapping key rather than its value: these become what the file shows.
"""

from __future__ import annotations

import difflib
import re
import types
from dataclasses import dataclass
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import ErrorDetails

from specs.errors import Loc, quoted
from specs.fields import SubfieldError, describe_value, quote_hint
from specs.model import Stack

_INTERNAL_PART_RE = re.compile(r"[a-z][a-z0-9_-]*\[.*\]")
_KEY_MARKER = "[key]"

_EXPECTED: dict[str, str] = {
    "string_type": "a string",
    "bool_type": "true or false",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "list_type": "a list",
}

_BOUNDS: dict[str, str] = {
    "greater_than_equal": "must be at least {ge}",
    "greater_than": "must be greater than {gt}",
    "less_than_equal": "must be at most {le}",
    "less_than": "must be less than {lt}",
}


@dataclass(frozen=True)
class Explained:
    """One error as the user sees it: the field path printed, where in the file, what."""

    loc: Loc
    anchor: Loc
    """The path whose node the position is taken from."""
    at_key: bool
    """Point at the key ending `anchor` (an unknown field) rather than at its value."""
    message: str


def explain(error: ErrorDetails, document: object) -> Explained:
    loc, names_key = _file_loc(error["loc"], document)
    kind = error["type"]
    if kind == "missing":
        return Explained(loc[:-1], loc[:-1], False, f"missing required field '{loc[-1]}'")
    if kind == "extra_forbidden":
        return Explained(loc[:-1], loc, True, _unknown_field(loc))
    if kind == "invalid_key":  # a model's field names: YAML read `false:` or `1:` as non-text
        return Explained(loc[:-1], loc, True, f"field names are strings, got {describe_value(error['input'])}")
    exc = (error.get("ctx") or {}).get("error")
    if isinstance(exc, SubfieldError):
        loc += exc.loc
    return Explained(loc, loc, names_key, _message(error))


def _file_loc(error_loc: tuple[int | str, ...], document: object) -> tuple[Loc, bool]:
    """The error's path with pydantic's internal parts removed, and whether it names a key.
    A part absent from the file is kept when it is a real field the model added (a port
    string becomes {host, container}), and dropped when it is an internal tag."""
    node: object = document
    loc: list[int | str] = []
    for index, part in enumerate(error_loc):
        if part == _KEY_MARKER and not (isinstance(node, dict) and part in node):  # a key named "[key]"
            return tuple(loc), True
        is_last = index == len(error_loc) - 1
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        elif isinstance(part, str) and not is_last and _INTERNAL_PART_RE.fullmatch(part):
            continue
        else:
            node = None
        loc.append(part)
    return tuple(loc), False


def _unknown_field(loc: Loc) -> str:
    name = loc[-1]
    message = f"unknown field {quoted(str(name))}"
    close = difflib.get_close_matches(str(name), _field_names_at(loc[:-1]), n=1)
    return f"{message} (did you mean '{close[0]}'?)" if close else message


def _field_names_at(loc: Loc) -> list[str]:
    """The fields of the model that `loc` leads to in Stack, following the type annotations
    through models, dicts (one part: the key) and lists (one part: the index)."""
    annotation: Any = Stack
    for part in loc:
        annotation = _unwrap(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(str(part))
            annotation = field.annotation if field else None
        elif get_origin(annotation) in (dict, list):
            annotation = get_args(annotation)[-1]
        else:
            return []
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return list(annotation.model_fields)
    return []


def _unwrap(annotation: Any) -> Any:
    """Annotated[X, ...] -> X; X | None -> X."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            annotation = next(arg for arg in get_args(annotation) if arg is not type(None))
        else:
            return annotation


def _message(error: ErrorDetails) -> str:
    kind = error["type"]
    value = error["input"]
    context = error.get("ctx") or {}
    if kind in ("value_error", "assertion_error") and "error" in context:
        return str(context["error"])
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {describe_value(value)}{_hint(kind, value)}"
    if kind in _BOUNDS:
        bounds = {name: _number(bound) for name, bound in context.items()}
        return f"{_BOUNDS[kind].format(**bounds)}, got {_number(value)}"
    if kind == "literal_error":
        return f"expected {context['expected']}, got {describe_value(value)}"
    if kind == "too_short":
        return "must not be empty"
    if kind == "finite_number":
        return f"must be a finite number, got {value}"
    return str(error["msg"])


def _number(value: object) -> object:
    """0.0 as 0: pydantic turns the bounds of float fields into floats."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _hint(kind: str, value: object) -> str:
    """The usual cause of a type error in YAML: an unquoted number where text is meant, or
    quotes around a number."""
    if kind == "string_type":
        return quote_hint(value)
    if kind in ("int_type", "float_type") and isinstance(value, str) and value.strip().isdigit():
        return ": remove the quotes"
    return ""
