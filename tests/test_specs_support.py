"""Shared by the specs tests (no tests here): write stack files and load them as a user would,
with paths relative to the working directory so error lines read `stack.yaml:3:5: ...`."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest

from specs.errors import SpecErrors
from specs.loader import StackFile, load_path
from specs.model import Stack


def write_files(directory: Path, files: Mapping[str, str | bytes]) -> None:
    """Text is dedented, so cases can be written indented in a table."""
    for name, content in files.items():
        target = directory / name
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(textwrap.dedent(content))


@contextmanager
def working_directory(directory: Path) -> Iterator[None]:
    previous = os.getcwd()
    os.chdir(directory)
    try:
        yield
    finally:
        os.chdir(previous)


def load_text(directory: Path, content: str | bytes, name: str = "stack.yaml") -> list[StackFile]:
    write_files(directory, {name: content})
    with working_directory(directory):
        return load_path(name)


def error_lines(directory: Path, files: Mapping[str, str | bytes], target: str = ".") -> list[str]:
    """The error lines `reconcile validate target` prints for these files."""
    write_files(directory, files)
    with working_directory(directory), pytest.raises(SpecErrors) as caught:
        load_path(target)
    return [str(error) for error in caught.value.errors]


def stack(name: str, **networks: dict[str, object]) -> Stack:
    """A stack of these networks alone, validated as the loader would."""
    return Stack.model_validate({"name": name, "networks": networks})
