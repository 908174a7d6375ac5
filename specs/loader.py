"""Load stack files: a file, or a directory of *.yaml / *.yml, parsed, validated and checked
against each other, with every error of every file located to file:line:col and reported
together (SpecErrors). Nothing else escapes, whatever the bytes on disk.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from specs.compose import convert, convert_name, is_compose
from specs.document import Document, Positions, read_document
from specs.errors import Issue, Loc, SpecError, SpecErrors, format_loc
from specs.fields import describe_value
from specs.messages import explain
from specs.model import Stack
from specs.origins import Origins
from specs.validate import check_stacks

STACK_SUFFIXES = (".yaml", ".yml")

T = TypeVar("T")


@dataclass(frozen=True)
class NamedFile:
    """The name of a file's stack, able to point into the file (`name_path` reads no more)."""

    path: Path
    name: str
    positions: Positions = field(default_factory=Positions, repr=False, compare=False)
    origins: Origins = field(default_factory=Origins, repr=False, compare=False)

    def locate(self, loc: Loc) -> tuple[int, int]:
        """1-based (line, col) of the deepest node on `loc` in the file; for a missing key, the
        mapping that lacks it."""
        return self.positions.locate(self.origins.translate(loc))

    def error(self, loc: Loc, message: str) -> SpecError:
        line, col = self.locate(loc)
        return SpecError(str(self.path), line, col, self.origins.translate(loc), message)


@dataclass(frozen=True)
class StackFile:
    """A validated stack and the file it came from, able to point into that file."""

    path: Path
    stack: Stack
    positions: Positions = field(default_factory=Positions, repr=False, compare=False)
    origins: Origins = field(default_factory=Origins, repr=False, compare=False)
    """For a converted file (Compose): the field of the file each stack field came from."""
    warnings: tuple[SpecError, ...] = field(default=(), compare=False)
    """What in the file has no effect here (Compose keys reconcile does without)."""

    @property
    def named(self) -> NamedFile:
        return NamedFile(self.path, self.stack.name, self.positions, self.origins)

    def locate(self, loc: Loc) -> tuple[int, int]:
        return self.named.locate(loc)

    def error(self, loc: Loc, message: str) -> SpecError:
        return self.named.error(loc, message)


def load_path(path: str | Path) -> list[StackFile]:
    """Every stack of a file or directory, valid together; else SpecErrors with all problems."""
    loaded, errors = _each_file(Path(path), load_file)
    errors += cross_check(loaded)
    if errors:
        raise SpecErrors(errors)
    return loaded


def name_path(path: str | Path) -> tuple[list[NamedFile], list[SpecError]]:
    """The stack name of each file of a file or directory, and the problems of the files that
    cannot name theirs: the rest of each file is neither validated nor converted (`down PATH`
    removes a stack whose file has become invalid elsewhere since it was applied)."""
    return _each_file(Path(path), name_file)


def _each_file(path: Path, read: Callable[[Path], T]) -> tuple[list[T], list[SpecError]]:
    done: list[T] = []
    errors: list[SpecError] = []
    for stack_path in _stack_paths(path):
        try:
            done.append(read(stack_path))
        except SpecErrors as exc:
            errors += exc.errors
    return done, errors


def stack_paths(directory: Path) -> list[Path]:
    """The stack files of a directory as load_path sees them (none is not an error here)."""
    try:
        return _stack_paths(directory)
    except SpecErrors:
        return []


def cross_check(files: Sequence[StackFile]) -> list[SpecError]:
    """What is wrong with these valid files together: a stack name used twice, overlapping
    subnets, bridge names or published ports across stacks."""
    distinct, duplicates = _distinct_names(files)
    return duplicates + locate_issues(distinct, check_stacks([f.stack for f in distinct]))


def locate_issues(files: Sequence[StackFile], issues: Sequence[Issue]) -> list[SpecError]:
    """Issues (found by stack name and field path) at file:line:col in the file of their stack;
    a stack with no file (a spec from the state store) gets its name and no position."""
    by_name: dict[str, StackFile] = {}
    for stack_file in files:
        by_name.setdefault(stack_file.stack.name, stack_file)
    located: list[SpecError] = []
    for issue in issues:
        owner = by_name.get(issue.stack)
        message = _renamed(issue, by_name)
        located.append(owner.error(issue.loc, message) if owner is not None
                       else SpecError(f"stack {issue.stack}", 0, 0, issue.loc, message))
    return located


def _renamed(issue: Issue, by_name: Mapping[str, StackFile]) -> str:
    """The issue's message with the other field it names as that field's file reads it."""
    if issue.other is None:
        return issue.message
    stack, loc = issue.other
    holder = by_name.get(stack)
    shown = holder.origins.translate(loc) if holder is not None else loc
    # the path alone, not the start of a longer one (networks.a-b in networks.a-b-2.bridge)
    renamed = format_loc(shown or loc)
    return re.sub(re.escape(format_loc(loc)) + r"(?![\w.\-\[])", lambda _: renamed, issue.message)


def _stack_paths(path: Path) -> list[Path]:
    if not path.is_dir():
        return [path]
    try:
        entries = sorted(os.listdir(path))
    except OSError as exc:
        raise _file_error(path, f"cannot list the directory: {exc.strerror or exc}") from None
    # Dot files are editors' lock and swap files (".#stack.yaml"), never stacks.
    paths = [path / entry for entry in entries
             if entry.endswith(STACK_SUFFIXES) and not entry.startswith(".")]
    if not paths:
        raise _file_error(path, "no stack files (*.yaml, *.yml) in this directory")
    return paths


def _file_error(path: Path, message: str) -> SpecErrors:
    return SpecErrors([SpecError(str(path), 0, 0, (), message)])


def load_file(path: Path) -> StackFile:
    """One stack file, parsed and validated on its own (SpecErrors when it is not valid)."""
    document = _read_mapping(path)
    warnings: tuple[SpecError, ...] = ()
    data, origins = document.data, Origins()
    if is_compose(path, data):
        compose = convert(path, document)
        data, origins, warnings = compose.native, compose.origins, compose.warnings
    return StackFile(path, _validated(path, document, data, origins), document.positions, origins, warnings)


def name_file(path: Path) -> NamedFile:
    """One stack file's stack name, validated as `load_file` validates it (SpecErrors at the
    name when the file has none); the rest of the file is only parsed."""
    document = _read_mapping(path)
    assert isinstance(document.data, dict)
    if is_compose(path, document.data):
        compose = convert_name(path, document)
        data, origins = compose.native, compose.origins
    else:
        data, origins = {key: value for key, value in document.data.items() if key == "name"}, Origins()
    return NamedFile(path, _validated(path, document, data, origins).name, document.positions, origins)


def _read_mapping(path: Path) -> Document:
    document = read_document(path, str(path))
    if not isinstance(document.data, dict):
        raise SpecErrors([_top_level_error(str(path), document)])
    return document


def _validated(path: Path, document: Document, data: object, origins: Origins) -> Stack:
    try:
        return Stack.model_validate(data)
    except ValidationError as exc:
        raise SpecErrors([_validation_error(str(path), data, document.positions, origins, error)
                          for error in exc.errors()]) from None


def _top_level_error(name: str, document: Document) -> SpecError:
    line, col = document.positions.locate(())
    if document.data is None:
        return SpecError(name, line, col, (), "empty file: expected a stack (name, networks, containers)")
    return SpecError(name, line, col, (), "expected a mapping (name, networks, containers) at the "
                                          f"top level, got {describe_value(document.data)}")


def _validation_error(name: str, data: object, positions: Positions, origins: Origins,
                      error: ErrorDetails) -> SpecError:
    """At the field of the file: for a converted file, the field the value came from."""
    explained = explain(error, data)
    locate = positions.locate_key if explained.at_key else positions.locate
    line, col = locate(origins.translate(explained.anchor))
    return SpecError(name, line, col, origins.translate(explained.loc), explained.message)


def _distinct_names(files: Sequence[StackFile]) -> tuple[list[StackFile], list[SpecError]]:
    """The first file of each stack name, and an error at the `name` of every later one: a
    stack name owns kernel objects, two files cannot both own them."""
    first: dict[str, StackFile] = {}
    errors: list[SpecError] = []
    for stack_file in files:
        earlier = first.setdefault(stack_file.stack.name, stack_file)
        if earlier is not stack_file:
            errors.append(stack_file.error(("name",), f"stack name '{stack_file.stack.name}' is "
                                                      f"already used by {earlier.path}"))
    return list(first.values()), errors
