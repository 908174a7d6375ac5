"""The common case of a stack file, read fast: plain mappings, lists and scalars, parsed by
libyaml (ruamel's C parser, `ruamel.yaml.clib`) and resolved by YAML 1.2 as the full reader
resolves them. Anything less common (anchors and aliases, tags, directives, block scalars, a
duplicate key, a value that is neither text, null, a boolean nor a plain decimal number, a
tab, YAML 1.1's extra line breaks, any parse error) is not this module's to judge: it answers None and
the full reader (`specs.document`) parses the file, with its own errors at file:line:col.

Why: ruamel's pure-Python round-trip parser takes ~0.1 s for a 50-container file (2.6 s for
1000), most of a no-op run's work; libyaml takes ~10 ms. Positions are not recorded here: a
file read this way is parsed again by the full reader only if an error has to point into it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TypeVar

from ruamel.yaml.events import (
    AliasEvent,
    CollectionEndEvent,
    CollectionStartEvent,
    DocumentEndEvent,
    DocumentStartEvent,
    Event,
    MappingStartEvent,
    ScalarEvent,
    SequenceStartEvent,
    StreamEndEvent,
    StreamStartEvent,
)
from ruamel.yaml.resolver import VersionedResolver

E = TypeVar("E", bound=Event)

try:
    from ruamel.yaml.cyaml import CParser  # ruamel.yaml.clib's libyaml
except ImportError:  # no wheel for this platform: every file takes the full reader
    CParser = None

_NOT_READ_HERE = ("\x85", "\u2028", "\u2029", "\t", "\ufeff")
"""Line breaks in YAML 1.1 (libyaml's) that are text in 1.2; tabs, which ruamel refuses in
places libyaml takes them; a byte order mark past the start, which ruamel drops and libyaml
keeps: a file holding one is left to the full reader."""

_DECIMAL_INT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)")
_DECIMAL_FLOAT = re.compile(r"[-+]?[0-9]+\.[0-9]+")
_TAG = "tag:yaml.org,2002:"
_IMPLICIT: dict[str | None, list[tuple[str, re.Pattern[str]]]] = VersionedResolver(version=(1, 2)).versioned_resolver
"""YAML 1.2's implicit tags of plain scalars, by first character, as ruamel's resolver holds
them; looked up here directly: its `resolve` finds the version and builds a Tag per scalar
(~60% of reading a 1000-container file)."""


class _Unusual(Exception):
    """Something the full reader must judge."""


def read_plain(text: str, max_depth: int) -> object | None:
    """The plain value of a common stack file, exactly as the full reader would give it; None
    when the file is not plain (or not valid YAML), for the full reader to decide."""
    if CParser is None or any(mark in text for mark in _NOT_READ_HERE):
        return None
    try:
        return _Reader(CParser(text), max_depth).document()
    except Exception:  # noqa: BLE001 - _Unusual, or libyaml's own error: the full reader's to report
        return None


class _Reader:
    def __init__(self, parser: CParser, max_depth: int):
        self._parser = parser
        self._max_depth = max_depth

    def _next(self) -> Event:
        event = self._parser.get_event()
        if event is None:
            raise _Unusual
        return event

    def document(self) -> object:
        self._expect(StreamStartEvent)
        start = self._expect(DocumentStartEvent)
        if start.version is not None or start.tags:
            raise _Unusual  # a %YAML or %TAG directive
        value = self._value(self._next(), 1)
        if self._expect(DocumentEndEvent).explicit:
            raise _Unusual  # `...`: what may follow it differs between YAML 1.1 and 1.2
        self._expect(StreamEndEvent)  # a second document is the full reader's error
        return value

    def _expect(self, kind: type[E]) -> E:
        event = self._next()
        if not isinstance(event, kind):
            raise _Unusual
        return event

    def _value(self, event: Event, depth: int, in_flow_sequence: bool = False) -> object:
        if isinstance(event, AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _Unusual
        if isinstance(event, ScalarEvent):
            return _scalar(event)
        if depth > self._max_depth or not isinstance(event, CollectionStartEvent) or event.tag is not None:
            raise _Unusual
        if in_flow_sequence and isinstance(event, MappingStartEvent):
            raise _Unusual  # `["a":b]`: libyaml reads a pair where ruamel finds a syntax error
        if isinstance(event, SequenceStartEvent):
            return self._sequence(depth, bool(event.flow_style))
        if isinstance(event, MappingStartEvent):
            return self._mapping(depth)
        raise _Unusual

    def _until_end(self) -> Iterator[Event]:
        while not isinstance(event := self._next(), CollectionEndEvent):
            yield event

    def _sequence(self, depth: int, flow: bool) -> list[object]:
        return [self._value(event, depth + 1, flow) for event in self._until_end()]

    def _mapping(self, depth: int) -> dict[object, object]:
        result: dict[object, object] = {}
        for key_event in self._until_end():
            if not isinstance(key_event, ScalarEvent):
                raise _Unusual  # a key that is a list or mapping: refused with its place there
            key = self._value(key_event, depth + 1)
            if key in result or key == "<<":
                raise _Unusual  # a duplicate key (named with both places there), or a merge
            result[key] = self._value(self._next(), depth + 1)
        return result


def _scalar(event: ScalarEvent) -> object:
    if event.tag is not None:
        raise _Unusual
    value: str = event.value
    value.encode("utf-8")  # a lone surrogate from an escape: UnicodeEncodeError, the full reader's
    if event.style not in ("", None):
        if event.style in ("|", ">"):
            raise _Unusual  # block scalars: left to the full reader's exact rules
        return value  # quoted: text
    tag = _implicit_tag(value)
    if tag == "str":
        return value
    if tag == "null":
        return None
    if tag == "bool":
        return value.lower() == "true"
    if tag == "int" and _DECIMAL_INT.fullmatch(value):
        return int(value)
    if tag == "float" and _DECIMAL_FLOAT.fullmatch(value):
        return float(value)
    raise _Unusual  # octal, hex, 1_000, .inf, dates, `=`: the full reader's to construct


def _implicit_tag(value: str) -> str:
    """The tag ruamel's resolver gives a plain scalar ("str", "int", ...): the first of its
    patterns for the value's first character that matches."""
    for tag, pattern in (*_IMPLICIT.get(value[:1], ()), *_IMPLICIT.get(None, ())):
        if pattern.match(value):
            return tag.removeprefix(_TAG)
    return "str"
