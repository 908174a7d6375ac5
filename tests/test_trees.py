"""Removing directory trees deeper than Python's recursion limit (a container's writable
layer or an image's layer can hold one): gone whole, relative to a directory fd too; and trees
set aside, then purged in the background by a process that is not the caller's child."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from kernel.trees import purge, purge_left, remove_tree, set_aside
from tests.waiting import eventually

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


def test_trees_set_aside_leave_their_place_at_once_and_a_purge_deletes_them_all(tmp_path: Path) -> None:
    _deep_tree(tmp_path / "layer")
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "hosts").write_text("127.0.0.1 localhost\n")
    trash = tmp_path / "trash"
    assert set_aside(tmp_path / "layer", trash) and set_aside(tmp_path / "files", trash)
    assert not set_aside(tmp_path / "never-made", trash)
    assert sorted(os.listdir(tmp_path)) == ["trash"] and len(os.listdir(trash)) == 2
    purge(trash, lock=tmp_path)
    assert _locked(tmp_path) or not trash.exists()  # the lock handed to it before purge returned
    assert eventually(trash.exists, False, timeout=20) is False
    assert os.listdir(tmp_path) == []
    assert _children_named({"setsid", "nice", "flock", "rm"}) == []  # detached: no zombie left to reap


def test_what_a_purge_left_is_deleted_at_once_unless_a_purge_is_running(tmp_path: Path) -> None:
    (tmp_path / "layer").mkdir()
    (tmp_path / "layer" / "hosts").write_text("127.0.0.1 localhost\n")
    trash = tmp_path / "trash"
    assert set_aside(tmp_path / "layer", trash)
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as a running purge holds it
        assert purge_left(trash, lock=tmp_path) is None  # nothing to tell: left to the running purge
        assert len(os.listdir(trash)) == 1
    finally:
        os.close(fd)
    assert purge_left(trash, lock=tmp_path) is None
    assert os.listdir(tmp_path) == []  # deleted before it returned
    assert purge_left(trash, lock=tmp_path) is None  # nothing left: nothing to do


def _locked(path: Path) -> bool:
    """Whether someone holds an exclusive flock of `path`."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def _children_named(names: set[str]) -> list[str]:
    """This process's children (a zombie too) with one of these command names."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text() if entry.isdigit() else ""
        except OSError:
            continue  # gone meanwhile
        if stat:
            name, fields = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
            if int(fields[1]) == os.getpid() and name in names:
                found.append(name)
    return found
