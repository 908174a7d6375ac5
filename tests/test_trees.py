"""Removing directory trees deeper than Python's recursion limit (a container's writable
layer or an image's layer can hold one): gone whole, relative to a directory fd too."""

from __future__ import annotations

import os
from pathlib import Path

from kernel.trees import remove_tree

DEEP = 1200


def _deep_tree(top: Path) -> None:
    """`top`/a/a/.../a/file, made a level at a time (Path.mkdir(parents=True) recurses too)."""
    top.mkdir()
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(DEEP):
        os.mkdir("a", dir_fd=fd)
        child = os.open("a", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(os.open("file", os.O_WRONLY | os.O_CREAT, dir_fd=fd))
    os.close(fd)


def test_a_tree_too_deep_for_shutil_is_removed(tmp_path: Path) -> None:
    _deep_tree(tmp_path / "tree")
    (tmp_path / "beside").write_text("kept")
    remove_tree(tmp_path / "tree")
    assert sorted(os.listdir(tmp_path)) == ["beside"]


def test_a_deep_tree_named_relative_to_a_directory_fd_is_removed(tmp_path: Path) -> None:
    _deep_tree(tmp_path / "tree")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        remove_tree("tree", dir_fd=fd)
    finally:
        os.close(fd)
    assert os.listdir(tmp_path) == []
