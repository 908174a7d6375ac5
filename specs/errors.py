"""Spec errors that name the place: `stack.yaml:12:5: containers.web.resources: message`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

Loc = tuple[str | int, ...]
"""A path into the stack document, e.g. ("containers", "web", "ports", 0)."""


MAX_QUOTED = 40


def quoted(text: str) -> str:
    """User text inside an error message: repr-quoted, so a newline or a control character
    cannot break the one-line format, and cut short, so a huge value cannot flood it."""
    return repr(text if len(text) <= MAX_QUOTED else text[:MAX_QUOTED - 3] + "...")


def format_loc(loc: Loc) -> str:
    """`containers.web.ports[0]`: the field path as users read it. A key that is not printable
    (a newline in an invalid key) is quoted, so an error stays on one line."""
    out = ""
    for part in loc:
        text = part if isinstance(part, int) or part.isprintable() else quoted(part)
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


class SpecErrors(Exception):
    """Every error of a load or validation pass, reported together; nothing was touched."""

    def __init__(self, errors: Sequence[SpecError]):
        self.errors = sorted(errors, key=lambda e: (e.file, e.line, e.col, e.message))
        super().__init__("\n".join(str(e) for e in self.errors))
