"""Named volumes on a real filesystem, without the kernel's namespaces: starts of containers
sharing a volume race (a level's containers start in threads, and two processes may start
them), a fill a crash interrupted is never taken for a volume, and a volume is on disk whole
before it gets its name."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kernel import durable


def test_write_durably_makes_the_rename_durable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The file's own fsync flushes its data; only an fsync of the directory flushes the new
    name: without it a power cut can bring back the old file, or none."""
    target = tmp_path / "dir" / "file"
    calls: list[str] = []
    fsync, replace = os.fsync, os.replace

    def record_fsync(fd: int) -> None:
        calls.append("fsync directory" if os.path.isdir(f"/proc/self/fd/{fd}") else "fsync file")
        fsync(fd)

    def record_replace(source: str, destination: str) -> None:
        calls.append("replace")
        replace(source, destination)

    monkeypatch.setattr(os, "fsync", record_fsync)
    monkeypatch.setattr(os, "replace", record_replace)
    durable.write_durably(target, b"whole", ".file.")
    assert calls == ["fsync file", "replace", "fsync directory"]
    assert target.read_bytes() == b"whole"
    assert os.listdir(target.parent) == ["file"]
