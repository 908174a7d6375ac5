"""The fast reader checked against the full one (tests of specs.yaml_plain and the loader fuzz)."""

from __future__ import annotations

from specs.document import parse_fully


def typed(value: object) -> object:
    """`value` with the type of every part spelled out (True, 1 and 1.0 are equal in Python)."""
    if isinstance(value, dict):
        return {typed(key): typed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [typed(item) for item in value]
    return (type(value).__name__, value)


def assert_read_as_fully(plain: object, text: str) -> None:
    """What the fast reader gave for `text` is exactly what the full reader gives."""
    assert typed(plain) == typed(parse_fully(text, "stack.yaml").data), text
