"""What `down PATH` reads of a stack file: its stack's name alone, as the full loader names it
(native `name:`; a Compose file's project name, interpolated, else its directory's), located
errors when the file cannot name it, and nothing else of the file judged."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from specs.errors import SpecErrors
from specs.loader import load_file, name_file, name_path

INVALID_ELSEWHERE = "networks: {net: {subnet: 10.0.0.0/33}}\ncontainers: {c: {bogus: 1}}\n"
COMPOSE_INVALID_ELSEWHERE = "services:\n  web: {image: busybox, ports: [nonsense], bogus: 1}\nconfigs: {}\n"


@pytest.mark.parametrize(("file", "text", "dotenv", "expected"), [
    ("s.yaml", "name: demo\n", None, "demo"),
    ("s.yaml", f"name: demo\n{INVALID_ELSEWHERE}", None, "demo"),
    ("compose.yaml", "name: shop\nservices: {web: {image: busybox}}\n", None, "shop"),
    ("compose.yaml", "services: {web: {image: busybox}}\n", None, "myproj-1"),  # its directory, normalised
    ("compose.yaml", "name: ${PROJECT}\nservices: {}\n", "PROJECT=fromenv\n", "fromenv"),
    ("compose.yaml", f"name: shop\n{COMPOSE_INVALID_ELSEWHERE}", None, "shop"),
    ("s.yaml", f"name: shop\n{COMPOSE_INVALID_ELSEWHERE}", None, "shop"),  # Compose by its content
])
def test_the_name_alone_is_read(tmp_path: Path, file: str, text: str, dotenv: str | None, expected: str) -> None:
    directory = tmp_path / "My Proj-1"
    directory.mkdir()
    path = directory / file
    path.write_text(text)
    if dotenv is not None:
        (directory / ".env").write_text(dotenv)
    assert name_file(path).name == expected
    if "bogus" not in text:  # a valid file: the full loader names it the same
        assert load_file(path).stack.name == expected


@pytest.mark.parametrize(("file", "text", "message"), [
    ("s.yaml", INVALID_ELSEWHERE, "1:1: missing required field 'name'"),
    ("s.yaml", "name: Demo!\n", "1:7: name: invalid stack name 'Demo!': use 1 to 16 lowercase letters, "
                                 "digits or '-', starting with a letter"),
    ("s.yaml", "- name: demo\n", "1:1: expected a mapping (name, networks, containers) at the top level, "
                                 "got a list"),
    ("compose.yaml", "name: ${PROJECT:?set it}\nservices: {}\n", "1:7: name: set it (unset or empty: PROJECT)"),
    ("compose.override.yaml", "name: shop\n", "1:1: override files are not merged"),
])
def test_a_file_that_cannot_name_its_stack_is_a_located_error(tmp_path: Path, file: str, text: str,
                                                              message: str) -> None:
    path = tmp_path / file
    path.write_text(text)
    with pytest.raises(SpecErrors) as caught:
        name_file(path)
    [error] = caught.value.errors
    assert str(error).startswith(f"{path}:{message}")


def test_a_directory_names_the_files_it_can(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(f"name: alpha\n{INVALID_ELSEWHERE}")
    (tmp_path / "b.yaml").write_text("networks: {}\n")
    named, errors = name_path(tmp_path)
    assert [(f.path.name, f.name) for f in named] == [("a.yaml", "alpha")]
    assert [str(e) for e in errors] == [f"{tmp_path / 'b.yaml'}:1:1: missing required field 'name'"]


def test_dotenv_is_read_only_for_a_name_with_a_variable(tmp_path: Path) -> None:
    """`down compose.yaml` learns the project name; a `.env` it does not need (a FIFO here,
    which a read would hang on) is left unread."""
    directory = tmp_path / "proj"
    directory.mkdir()
    os.mkfifo(directory / ".env")
    (directory / "compose.yaml").write_text("name: shop\nservices: {web: {image: busybox}}\n")
    assert name_file(directory / "compose.yaml").name == "shop"
