"""Which file a stack comes from. A stack is applied from one file at a time: applying it from
another file while the file it was last applied from still declares it is refused (unless the
user takes it over), or two files would keep undoing each other's containers. A file that was
renamed or deleted gives its stack up: the next file to apply it owns it."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from specs.errors import SpecError, SpecErrors
from specs.loader import NamedFile, load_file
from state.store import StackRecord

TAKE_OVER = "edit that file, or move the stack to this one with --take-over"


def claimed_elsewhere(files: Sequence[NamedFile], records: Iterable[StackRecord],
                      remedy: str = TAKE_OVER) -> list[SpecError]:
    """An error at the `name` of every file whose stack was last applied from another file
    that still claims it, ending with what to do instead."""
    recorded = {record.name: Path(record.source) for record in records}
    errors: list[SpecError] = []
    for stack_file in files:
        name = stack_file.name
        owner = recorded.get(name)
        if owner is None or same_file(owner, stack_file.path):
            continue
        claim = _claim(owner, name)
        if claim is not None:
            errors.append(stack_file.error(("name",), f"stack '{name}' was applied from {owner}, which {claim}: "
                                                      + remedy.format(name=name)))
    return errors


def same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.absolute() == b.absolute()


def applied_from(source: Path, path: Path) -> bool:
    """Whether a stack applied from `source` came from `path`: that file, or a stack file of
    that directory (its files as the loader reads them: not those of its subdirectories)."""
    if path.is_dir():
        return same_file(source.parent, path)
    return same_file(source, path)


def _claim(path: Path, name: str) -> str | None:
    """How the file at `path` still claims stack `name`, or None when it no longer does."""
    if not path.is_file():
        return None
    try:
        declared = load_file(path).stack.name
    except SpecErrors:  # a watch agent keeps a broken file's stack on its last good spec
        return "is still there (invalid now, so its last good spec stays in force)"
    return "still declares it" if declared == name else None
