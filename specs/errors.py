"""Spec errors that name the place: `stack.yaml:12:5: containers.web.resources: message`."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

Loc = tuple[str | int, ...]
"""A path into the stack document, e.g. ("containers", "web", "ports", 0)."""


MAX_QUOTED = 40


def quoted(text: str, ascii_only: bool = False) -> str:
    """User text inside an error message: repr-quoted, so a newline or a control character
    cannot break the one-line format, and cut short, so a huge value cannot flood it;
    `ascii_only` also escapes every non-ASCII character, where only ASCII is allowed."""
    short = text if len(text) <= MAX_QUOTED else text[:MAX_QUOTED - 3] + "..."
    return ascii(short) if ascii_only else repr(short)


_PLAIN_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")


def format_loc(loc: Loc) -> str:
    """`containers.web.ports[0]`: the field path as users read it. A key that is not a plain
    word is quoted (`containers.'../x'`, `networks.'1.5'`), so its dots cannot pass for the
    path's and a newline in it cannot break the one-line format."""
    out = ""
    for part in loc:
        text = part if isinstance(part, int) or _PLAIN_KEY_RE.fullmatch(part) else quoted(part)
        out += f"[{text}]" if isinstance(part, int) else (f".{text}" if out else str(text))
    return out


@dataclass(frozen=True)
class SpecError:
    """One problem in one stack file, located to line and column (1-based)."""

    file: str
    line: int  # 0: no position (the file cannot be read, or a stack known only by name)
    col: int
    loc: Loc
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.col}" if self.line > 0 else self.file
        return f"{where}: {format_loc(self.loc)}: {self.message}" if self.loc else f"{where}: {self.message}"

    def to_json(self) -> dict[str, object]:
        return {"file": self.file, "line": self.line, "column": self.col,
                "field": format_loc(self.loc), "message": self.message}


@dataclass(frozen=True)
class Issue:
    """A problem found outside the loader (cross-file, or against the live host), not yet located:
    the stack name and field path are mapped to file:line:col by the stack's positions."""

    stack: str
    loc: Loc
    message: str
    other: tuple[str, Loc] | None = None
    """The field the problem is with, (stack, path), where the message names it by its path
    (`format_loc`): renamed when located, as the file holding it reads it (a Compose file's
    `services.web.ports[0]` for `containers.web.ports[0]`)."""


class SpecErrors(Exception):
    """Every error of a load or validation pass, reported together; nothing was touched."""

    def __init__(self, errors: Sequence[SpecError]):
        self.errors = sorted(errors, key=lambda e: (e.file, e.line, e.col, e.message))
        super().__init__("\n".join(str(e) for e in self.errors))
