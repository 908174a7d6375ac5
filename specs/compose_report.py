"""What the Compose mapping collects while it builds a native stack: where every native field
came from, and the errors and warnings it found, each at a Compose field path."""

from __future__ import annotations

import difflib
from collections.abc import Collection
from dataclasses import dataclass, field

from specs.errors import Loc, quoted


@dataclass(frozen=True)
class Finding:
    """A problem (or a warning) at a Compose field. `key`: the path of the mapping key to point
    at (an unknown or unsupported key), else the value at `loc` is pointed at."""

    loc: Loc
    message: str
    key: Loc | None = None


class ComposeInvalid(Exception):
    """The Compose file cannot become a stack: every error found, with the warnings so far."""

    def __init__(self, errors: list[Finding], warnings: list[Finding]):
        super().__init__("; ".join(f.message for f in errors))
        self.errors = errors
        self.warnings = warnings


@dataclass
class Collector:
    origins: dict[Loc, Loc] = field(default_factory=dict)
    errors: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)
    published_ports: int = 0
    """Host ports the file's services publish so far (capped: compose_values.MAX_PUBLISHED_PORTS)."""

    def put(self, target: dict[str, object], native: Loc, value: object, source: Loc) -> None:
        """`target[native[-1]] = value`, the native field `native` coming from `source`."""
        target[str(native[-1])] = value
        self.origins[native] = source

    def passthrough(self, native: Loc, source: Loc, value: object) -> object:
        """A value the native stack reads as Compose writes it: every node below keeps its own
        place, so an error deep inside it (an unknown key) points at that node."""
        self.origins[native] = source
        if isinstance(value, dict):
            for key, item in value.items():
                self.passthrough(native + (str(key),), source + (str(key),), item)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                self.passthrough(native + (index,), source + (index,), item)
        return value

    def error(self, loc: Loc, message: str) -> None:
        self.errors.append(Finding(loc, message))

    def warn(self, loc: Loc, message: str) -> None:
        self.warnings.append(Finding(loc, message))

    def key_error(self, loc: Loc, message: str) -> None:
        """An error about the key ending `loc` (a key that cannot be honoured)."""
        self.errors.append(Finding(loc, message, key=loc))

    def key_warning(self, loc: Loc, message: str) -> None:
        self.warnings.append(Finding(loc, message, key=loc))

    def unknown(self, loc: Loc, known: Collection[str]) -> None:
        """An unknown key, at the key, with the closest known one as a suggestion."""
        name = str(loc[-1])
        close = difflib.get_close_matches(name, list(known), n=1)
        hint = f" (did you mean {quoted(close[0])}?)" if close else ""
        self.errors.append(Finding(loc[:-1], f"unknown field {quoted(name)}{hint}", key=loc))
