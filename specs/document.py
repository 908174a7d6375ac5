"""Reading one stack file: bytes -> text -> YAML -> plain Python values, plus the position of
every node, so that problems found later (by pydantic, by cross checks) name file:line:col.

Every way a file can be unusable (unreadable, too big, not UTF-8, bad YAML, duplicate keys,
alias bombs, exotic tags) ends here as SpecErrors: the parser's own exceptions never escape.
"""

from __future__ import annotations

import codecs
import os
import re
import stat
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.composer import MaxDepthExceededError
from ruamel.yaml.constructor import ConstructorError, DuplicateKeyError, RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.reader import ReaderError
from ruamel.yaml.scalarbool import ScalarBoolean
from ruamel.yaml.scanner import RoundTripScanner, ScannerError
from ruamel.yaml.tokens import DirectiveToken

from specs.errors import Loc, SpecError, SpecErrors, quoted
from specs.yaml_plain import read_plain

Position = tuple[int, int]
"""1-based line and column."""

MAX_FILE_BYTES = 1024 * 1024
"""A stack file is a few KiB; a bigger one is a mistake (or hostile), and ruamel is slow on it."""

MAX_ALIAS_EXPANSION = 10_000
"""Nodes that aliases may add on top of what is written out: room for any sane use of anchors,
while "billion laughs" (nested aliases multiplying a few lines into billions of nodes) stops."""

MAX_DEPTH = 64
"""No stack file nests deeper than about 6; deep nesting only exhausts the Python stack."""

YAML_VERSION = (1, 2)

_STANDARD_TAG_PREFIX = "tag:yaml.org,2002:"
_IMPLICIT_TYPES = {"int": "an integer", "float": "a number", "timestamp": "a date", "bool": "a boolean"}
"""What YAML read an unquoted scalar as, by its resolved tag."""

_LINE_BREAK_RE = re.compile(r"\r\n|\r|\n")
"""YAML 1.2's line breaks (U+0085 and U+2028 are not)."""

_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")

_SYNTAX_HINTS = {
    "found character '\\t' that cannot start any token": "indent with spaces, not tabs",
    "expected <block end>, but found '<block mapping start>'": "check the indentation of this line",
    "mapping values are not allowed here": "put a nested mapping on its own lines, or quote a "
                                           "value that contains ': '",
    "but found another document": "a stack file holds one document: put each stack in its own file",
}
"""The parser's wording of a common mistake (by how its message starts or ends) -> what to do."""


class Positions:
    """Where each node of a document is: by field path, the value (or, for a value that starts
    on a later line than its key, such as a block mapping, the key naming it); and each key.
    Given `parse` instead of tables, they are filled from it on first use: a file read on the
    fast path is parsed again, by the full reader, only when an error needs a place in it."""

    def __init__(self, values: Mapping[Loc, Position] | None = None, keys: Mapping[Loc, Position] | None = None,
                 parse: Callable[[], Positions] | None = None):
        self._values: Mapping[Loc, Position] = values or {}
        self._keys: Mapping[Loc, Position] = keys or {}
        self._parse = parse

    def _tables(self) -> tuple[Mapping[Loc, Position], Mapping[Loc, Position]]:
        if self._parse is not None:
            parsed, self._parse = self._parse(), None
            self._values, self._keys = parsed._tables()
        return self._values, self._keys

    def locate(self, loc: Loc) -> Position:
        """The deepest node on `loc` that exists in the file (for a missing key, its mapping)."""
        values = self._tables()[0]
        for end in range(len(loc), -1, -1):
            position = values.get(loc[:end])
            if position is not None:
                return position
        return (1, 1)

    def locate_key(self, loc: Loc) -> Position:
        """The key that ends `loc` (an unknown or misspelled field), else as `locate`."""
        return self._tables()[1].get(loc) or self.locate(loc)


@dataclass(frozen=True)
class Document:
    data: object
    """Plain dicts, lists and scalars (str, int, float, bool, None, date, bytes)."""
    positions: Positions


def read_document(path: Path, name: str) -> Document:
    """Parse one file; `name` is how errors call it (the path as the user gave it)."""
    text = _read_text(path, name)
    plain = read_plain(text, MAX_DEPTH)
    if plain is None:
        return parse_fully(text, name)
    return Document(plain, Positions(parse=lambda: parse_fully(text, name).positions))


def parse_fully(text: str, name: str) -> Document:
    """The full reader (ruamel's round-trip parser): every node's position, and the errors of
    any text at file:line:col; the reference the fast path must agree with."""
    return _Flattener(name).document(_parse_yaml(text, name))


def _fail(name: str, position: Position, loc: Loc, message: str) -> SpecErrors:
    return SpecErrors([SpecError(name, position[0], position[1], loc, message)])


def _read_text(path: Path, name: str) -> str:
    try:
        return read_small_text(path, "a stack file is a few KiB of YAML")
    except UnreadableText as exc:
        raise _fail(name, exc.position, (), exc.message) from None


class UnreadableText(Exception):
    """Why a file cannot be read as text, and where in it ((0, 0): the file as a whole)."""

    def __init__(self, message: str, position: Position = (0, 0), missing: bool = False):
        super().__init__(message)
        self.message = message
        self.position = position
        self.missing = missing
        """The file does not exist (an optional file may be left out)."""


def read_small_text(path: Path | str, size_hint: str) -> str:
    """A file of UTF-8 text of at most MAX_FILE_BYTES (stack files, and the files Compose files
    name: `.env`, env_file); `size_hint` says why a bigger one is a mistake."""
    try:
        # Refuse FIFOs and devices before opening: reading one could block forever (a FIFO)
        # or never end (/dev/zero).
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise UnreadableText("not a regular file")
        with open(path, "rb") as stream:
            raw = stream.read(MAX_FILE_BYTES + 1)
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise UnreadableText(f"cannot read the file: {getattr(exc, 'strerror', None) or exc}",
                             missing=isinstance(exc, FileNotFoundError)) from None
    if len(raw) > MAX_FILE_BYTES:
        raise UnreadableText(f"file is larger than 1 MiB: {size_hint}")
    body = raw.removeprefix(codecs.BOM_UTF8)  # editors' UTF-8 signature: no part of the text
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        if body.startswith(_UTF16_BOMS):  # Windows editors' "Unicode"
            raise UnreadableText("not UTF-8 text: this file is UTF-16 (it starts with a UTF-16 byte order "
                                 "mark): save it as UTF-8", (1, 1)) from None
        before = body[:exc.start].decode("utf-8", "replace")
        raise UnreadableText(f"not UTF-8 text: invalid byte 0x{body[exc.start]:02x}",
                             _text_position(before, len(before))) from None


class _Version12Scanner(RoundTripScanner):
    """Stack files are YAML 1.2. A `%YAML 1.1` directive would quietly turn `restart: no` into
    false and `0755` into 493, and ruamel fails an assert (no position) on other versions."""

    def scan_directive(self) -> DirectiveToken:
        token = super().scan_directive()
        if token.name == "YAML" and token.value != YAML_VERSION:
            version = ".".join(map(str, token.value))
            raise ScannerError(None, None, f"stack files are YAML 1.2: remove the '%YAML {version}' "
                                           "directive", token.start_mark)
        return token


class _PlacedConstructor(RoundTripConstructor):
    """Errors ruamel raises without a place, or hides, made into errors at the node."""

    def construct_object(self, node: Node, deep: bool = False) -> object:
        """ruamel builds an alias inside its own anchor (`a: &a [*a]`) as null, which would
        surface later as a puzzling "got null"."""
        if node in self.recursive_objects:
            raise ConstructorError(None, None, "this value contains an alias to itself: recursive "
                                               "values are not supported", node.start_mark)
        return super().construct_object(node, deep)

    def check_mapping_key(self, node: Node, key_node: Node, mapping: object, key: object, value: object) -> bool:
        """ruamel builds `? {a: 1}` or `? [a]` as a key, and fails without a place on hashing
        one that holds a mapping: refuse any key that is not a scalar, at the key."""
        if not isinstance(key_node, ScalarNode):
            raise ConstructorError(None, None, "a mapping key must be a plain scalar, not a list or "
                                               "mapping", key_node.start_mark)
        return bool(super().check_mapping_key(node, key_node, mapping, key, value))

    def construct_non_recursive_object(self, node: Node, tag: str | None = None) -> object:
        """Scalar constructors raise bare Python errors, with neither a place nor words a user
        acts on (2024-13-45: "month must be in 1..12"; an integer of 5000 digits: "use
        sys.set_int_max_str_digits()"; `!!int` alone: "string index out of range")."""
        try:
            return super().construct_non_recursive_object(node, tag)
        except YAMLError:
            raise
        except Exception:  # noqa: BLE001 - whatever a constructor trips on in a scalar
            if not isinstance(node, ScalarNode):
                raise
            tag_name = _tag_name(str(node.tag))  # a node's tag is the resolved tag's text
            kind = _IMPLICIT_TYPES.get(tag_name.removeprefix("!!"), f"tag {tag_name}")
            raise ConstructorError(None, None, f"cannot read {quoted(node.value)} as {kind}: "
                                               "quote it if it is text", node.start_mark) from None


def _yaml() -> YAML:
    """The round-trip loader (it keeps line and column of every node); YAML 1.2, so `yes` and
    `no` stay strings. Nesting is capped while composing, before deep input can exhaust the
    Python stack; the cap matches the flattener's (composer depth 1 is the top level)."""
    yaml = YAML(typ="rt")
    yaml.Scanner = _Version12Scanner
    yaml.Constructor = _PlacedConstructor
    yaml.max_depth = MAX_DEPTH + 1
    return yaml


def _parse_yaml(text: str, name: str) -> object:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ruamel warns (to stderr) about reused anchors
            return _yaml().load(text)
    except DuplicateKeyError:
        raise SpecErrors(_duplicate_keys(text, name)) from None
    except MaxDepthExceededError as exc:
        raise _fail(name, _mark_position(exc), (), f"nested deeper than {MAX_DEPTH} levels") from None
    except MarkedYAMLError as exc:
        raise SpecErrors([_syntax_error(name, exc)]) from None
    except ReaderError as exc:  # a control character: its position is an offset in the text
        raise _fail(name, _text_position(text, exc.position), (),
                    f"invalid YAML: control character U+{exc.character:04X} is not allowed") from None
    except RecursionError:  # ruamel before 0.19.1 ignores max_depth
        raise _fail(name, (1, 1), (), f"nested deeper than {MAX_DEPTH} levels") from None
    except Exception as exc:  # noqa: BLE001 - the last line of defence: nothing of the parser's
        # escapes (the fuzz tests would report one that lands here, without a position)
        raise _fail(name, (0, 0), (), f"invalid YAML: {_one_line(str(exc))}") from None


def _one_line(text: str) -> str:
    """A parser's message, whitespace collapsed: an error is one line."""
    return " ".join(text.split())


def _text_position(text: str, offset: int) -> Position:
    """Counted as the parser and editors count: a line ends at CR LF, LF, or a lone CR."""
    breaks = list(_LINE_BREAK_RE.finditer(text, 0, offset))
    line_start = breaks[-1].end() if breaks else 0
    return len(breaks) + 1, offset - line_start + 1


def _mark_position(exc: MarkedYAMLError) -> Position:
    mark = exc.problem_mark or exc.context_mark
    return (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)


def _syntax_error(name: str, exc: MarkedYAMLError) -> SpecError:
    """At the problem; an unclosed quote or bracket is found at the end of the file, so the
    place where it was opened (the context mark) is named too."""
    line, col = _mark_position(exc)
    problem, context = _one_line(exc.problem or ""), _one_line(exc.context or "")
    if context.startswith("while"):
        opened = exc.context_mark
        if opened is not None and opened.line + 1 != line:
            context += f" started at line {opened.line + 1}, column {opened.column + 1}"
        message = f"{problem} ({context})"
    else:  # "expected a single document in the stream" + "but found another document"
        message = ", ".join(part for part in (context, problem) if part)
    hint = next((hint for wording, hint in _SYNTAX_HINTS.items()
                 if problem.startswith(wording) or problem.endswith(wording)), None)
    return SpecError(name, line, col, (), f"invalid YAML: {message}" + (f": {hint}" if hint else ""))


def _tag_name(tag: str) -> str:
    """`!!python/object` as written, rather than `tag:yaml.org,2002:python/object`."""
    return "!!" + tag.removeprefix(_STANDARD_TAG_PREFIX) if tag.startswith(_STANDARD_TAG_PREFIX) else tag


def _duplicate_keys(text: str, name: str) -> list[SpecError]:
    """Every duplicate key of the file, at the repeated key, naming the first one. ruamel
    stops at the first duplicate and has no path; its node tree (composed again, which only
    fails where loading already failed) has both."""
    root = _yaml().compose(text)
    errors: list[SpecError] = []
    visited: set[int] = set()
    pending: list[tuple[Loc, Node]] = [((), root)]
    while pending:
        loc, node = pending.pop()
        if id(node) in visited:
            continue
        visited.add(id(node))
        if isinstance(node, SequenceNode):
            pending += [(loc + (index,), item) for index, item in enumerate(node.value)]
        if not isinstance(node, MappingNode):
            continue
        first_keys: dict[str, Node] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                continue
            first = first_keys.setdefault(key_node.value, key_node)
            if first is key_node:
                pending.append((loc + (key_node.value,), value_node))
                continue
            errors.append(SpecError(
                name, key_node.start_mark.line + 1, key_node.start_mark.column + 1, loc,
                f"duplicate key {quoted(key_node.value)} (first defined at line "
                f"{first.start_mark.line + 1}, column {first.start_mark.column + 1})"))
    return errors


def _lc_data(node: object) -> Mapping[object, list[int]]:
    line_col = getattr(node, "lc", None)
    return getattr(line_col, "data", None) or {}


def _entry_positions(node: object, key: object, fallback: Position) -> tuple[Position, Position]:
    """(key, value) position of a mapping entry; keys pulled in by a merge (`<<: *base`) have
    none of their own and get the mapping's."""
    entry = _lc_data(node).get(key)
    if entry is None:
        return fallback, fallback
    key_position = (entry[0] + 1, entry[1] + 1)
    if entry[2] != entry[0]:
        return key_position, key_position
    return key_position, (entry[2] + 1, entry[3] + 1)


def _item_position(node: object, index: int, fallback: Position) -> Position:
    entry = _lc_data(node).get(index)
    return (entry[0] + 1, entry[1] + 1) if entry is not None else fallback


def _loc_part(key: object) -> str | int:
    """A mapping key as pydantic names it in an error path: ints as ints (true as 1), other
    non-strings by repr."""
    if isinstance(key, (str, int)):
        return int(key) if isinstance(key, bool) else key
    return repr(key)


def _root_position(tree: object) -> Position:
    line_col = getattr(tree, "lc", None)
    if line_col is None or line_col.line is None:
        return (1, 1)
    return line_col.line + 1, line_col.col + 1


class _Flattener:
    """ruamel's round-trip tree to plain values, recording the position of every node.

    An alias is the same object at a second place in ruamel's tree; copying it out is where a
    few hundred bytes can become billions of nodes, so what aliases add has a budget. (The
    constructor refuses an alias inside its own anchor; were one ever to come through as a
    real cycle, the depth limit would stop it.)"""

    def __init__(self, name: str):
        self._name = name
        self._values: dict[Loc, Position] = {}
        self._keys: dict[Loc, Position] = {}
        self._seen: set[int] = set()
        self._expanded = 0

    def document(self, tree: object) -> Document:
        data = self._convert(tree, (), _root_position(tree), alias=None)
        return Document(data, Positions(self._values, self._keys))

    def _fail(self, position: Position, loc: Loc, message: str) -> SpecErrors:
        return _fail(self._name, position, loc, message)

    def _convert(self, node: object, loc: Loc, position: Position, alias: Position | None) -> object:
        """`alias`: where the alias being copied out is used, None outside of one."""
        self._values.setdefault(loc, position)
        if isinstance(node, (dict, list)) and alias is None and id(node) in self._seen:
            alias = position
        if len(loc) > MAX_DEPTH:  # the composer refuses deeper text: aliases nested in aliases
            # At the alias, not deep inside its anchor; the path, 65 parts long, would drown the line.
            raise self._fail(alias or position, (), f"nested deeper than {MAX_DEPTH} levels"
                                                    + (" once aliases are expanded" if alias else ""))
        self._count(alias)
        if not isinstance(node, (dict, list)):
            return self._scalar(node, loc, position)
        self._seen.add(id(node))
        tag = getattr(getattr(node, "tag", None), "value", None)
        if tag is not None:  # `!!python/object/apply:os.system [...]` is not a list of strings
            raise self._unsupported(position, loc, f"tag {_tag_name(tag)}")
        if isinstance(node, dict):
            return self._mapping(node, loc, position, alias)
        return self._sequence(node, loc, position, alias)

    def _count(self, alias: Position | None) -> None:
        if alias is None:
            return
        self._expanded += 1
        if self._expanded > MAX_ALIAS_EXPANSION:
            raise self._fail(alias, (), f"aliases expand to more than {MAX_ALIAS_EXPANSION} "
                                        "nodes: refusing what looks like an alias bomb")

    def _mapping(self, node: dict[object, object], loc: Loc, position: Position,
                 alias: Position | None) -> dict[object, object]:
        result: dict[object, object] = {}
        for key, value in node.items():
            key_position, value_position = _entry_positions(node, key, position)
            plain_key = self._scalar(key, loc, key_position)
            child = loc + (_loc_part(plain_key),)
            self._keys.setdefault(child, key_position)
            result[plain_key] = self._convert(value, child, value_position, alias)
        return result

    def _sequence(self, node: list[object], loc: Loc, position: Position,
                  alias: Position | None) -> list[object]:
        items: list[object] = []
        for index, item in enumerate(node):
            item_position = _item_position(node, index, position)
            plain = self._convert(item, loc + (index,), item_position, alias)
            if isinstance(plain, str):
                # The model turns `networks: [front]` into a mapping keyed by 'front': an error
                # about that key finds the list item by its value.
                self._values.setdefault(loc + (plain,), item_position)
            items.append(plain)
        return items

    def _text(self, node: str, loc: Loc, position: Position) -> str:
        """A "\\ud800" escape gives a lone surrogate: not text, and nothing can encode it."""
        try:
            node.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise self._fail(position, loc, f"invalid character U+{ord(node[exc.start]):04X} "
                                            "(a lone UTF-16 surrogate)") from None
        return str(node)

    def _scalar(self, node: object, loc: Loc, position: Position) -> object:
        if node is None or isinstance(node, bool):
            return node
        if isinstance(node, ScalarBoolean):  # ruamel's bool with an anchor is an int subclass
            return bool(node)
        if isinstance(node, str):
            return self._text(node, loc, position)
        for plain_type in (int, float):
            if isinstance(node, plain_type):
                return plain_type(node)
        if isinstance(node, (date, bytes)):
            return node
        tag = getattr(getattr(node, "tag", None), "value", None)
        raise self._unsupported(position, loc, f"tag {_tag_name(tag)}" if tag else
                                type(node).__name__.removeprefix("Commented").lower())

    def _unsupported(self, position: Position, loc: Loc, what: str) -> SpecErrors:
        return self._fail(position, loc, f"unsupported YAML value ({what}): use strings, numbers, "
                                         "booleans, lists and mappings")
