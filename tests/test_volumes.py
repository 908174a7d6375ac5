"""Named volumes on a real filesystem, without the kernel's namespaces: starts of containers
sharing a volume race (a level's containers start in threads, and two processes may start
them), a fill a crash interrupted is never taken for a volume, and a volume is on disk whole
before it gets its name."""

from __future__ import annotations

import os
import threading
from collections import Counter
from pathlib import Path

import pytest

from kernel import durable
from state import volumes

SEED_ENTRIES = 1_030
"""Files in the seed of the race: enough that a fill takes long enough to be overtaken."""
RACE_TRIALS = 10
STACK, NAME = "app", "data"


def make_seed(root: Path, entries: int = SEED_ENTRIES) -> Path:
    seed = root / "seed"
    (seed / "sub").mkdir(parents=True)
    for index in range(entries - 1):  # and the directory `sub`
        (seed / f"file-{index:04}").write_text(f"content {index}\n")
    return seed


def volume_entries(volume: Path) -> int:
    return len(os.listdir(volume))


def test_starts_racing_on_one_volume_all_get_it_whole(tmp_path: Path) -> None:
    seed = make_seed(tmp_path)
    outcomes: Counter[str] = Counter()
    for trial in range(RACE_TRIALS):
        state_dir = tmp_path / f"state-{trial}"
        barrier = threading.Barrier(2)
        results: list[Path | BaseException] = []

        def start() -> None:
            barrier.wait()
            try:
                results.append(volumes.ensure(state_dir, STACK, NAME, seed))
            except Exception as error:  # noqa: BLE001 - counted below
                results.append(error)

        threads = [threading.Thread(target=start) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        final = volumes.volume_path(state_dir, STACK, NAME)
        for result in results:
            outcomes["ok" if result == final else type(result).__name__] += 1
        if volume_entries(final) != SEED_ENTRIES:
            outcomes["short"] += 1
        leftovers = [entry for entry in os.listdir(final.parent) if entry.startswith(volumes.PARTIAL_PREFIX)]
        if leftovers:
            outcomes["staging left"] += 1
    assert outcomes == {"ok": 2 * RACE_TRIALS}


def test_a_half_filled_staging_directory_is_never_taken_for_the_volume(tmp_path: Path) -> None:
    seed = make_seed(tmp_path, entries=20)
    state_dir = tmp_path / "state"
    partial = volumes.stack_dir(state_dir, STACK) / f"{volumes.PARTIAL_PREFIX}{NAME}"
    (partial / "sub").mkdir(parents=True)
    (partial / "file-0000").write_text("")  # a fill killed half-way: one file, empty
    final = volumes.ensure(state_dir, STACK, NAME, seed)
    assert volume_entries(final) == 20
    assert (final / "file-0000").read_text() == "content 0\n"
    assert not partial.exists()


def test_a_volume_placed_by_another_writer_during_the_fill_wins(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A volume that appears under the final name while this start fills one (a writer that
    does not take the lock: an older reconcile, a user's mkdir) is kept as it is, with what it
    holds; the fill is thrown away, not renamed over it."""
    seed = make_seed(tmp_path, entries=5)
    state_dir = tmp_path / "state"
    final = volumes.volume_path(state_dir, STACK, NAME)
    fill = volumes._copy_tree

    def fill_then_lose(source: Path, target: Path, id_shift: int) -> None:
        fill(source, target, id_shift)
        final.mkdir()  # empty: a plain rename(2) would replace it silently

    monkeypatch.setattr(volumes, "_copy_tree", fill_then_lose)
    assert volumes.ensure(state_dir, STACK, NAME, seed) == final
    assert os.listdir(final) == []
    assert sorted(os.listdir(final.parent)) == [f"{volumes.LOCK_PREFIX}{NAME}", NAME]


def test_the_fill_is_on_disk_before_the_rename_and_the_rename_after(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a power cut a volume under its name must hold its files whole: the staged tree is
    synced before the rename, and the rename itself is made durable (the parent's fsync) before
    a container may write into the volume; otherwise the volume could come back as its staging
    name, which the next start deletes."""
    seed = make_seed(tmp_path, entries=5)
    state_dir = tmp_path / "state"
    final = volumes.volume_path(state_dir, STACK, NAME)
    partial = final.parent / f"{volumes.PARTIAL_PREFIX}{NAME}"
    calls: list[str] = []
    syncfs, rename, fsync_directory = durable.syncfs, durable.rename_noreplace, durable.fsync_directory

    def record_syncfs(fd: int) -> None:
        assert os.path.samestat(os.fstat(fd), os.stat(partial))
        calls.append(f"syncfs with {volume_entries(partial)} entries")
        syncfs(fd)

    def record_rename(source: Path, target: Path) -> bool:
        calls.append(f"rename {Path(source).name} -> {Path(target).name}")
        return rename(source, target)

    def record_fsync_directory(path: Path) -> None:
        calls.append(f"fsync {Path(path).name}")
        fsync_directory(path)

    monkeypatch.setattr(durable, "syncfs", record_syncfs)
    monkeypatch.setattr(durable, "rename_noreplace", record_rename)
    monkeypatch.setattr(durable, "fsync_directory", record_fsync_directory)
    volumes.ensure(state_dir, STACK, NAME, seed)
    assert calls == ["syncfs with 5 entries", f"rename {partial.name} -> {NAME}", f"fsync {STACK}"]
    calls.clear()
    volumes.ensure(state_dir, STACK, NAME, seed)  # there: nothing written, nothing synced
    assert calls == []


def test_an_empty_volume_is_synced_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(durable, "syncfs", lambda fd: calls.append("syncfs"))
    monkeypatch.setattr(durable, "fsync_directory", lambda path: calls.append("fsync"))
    final = volumes.ensure(tmp_path / "state", STACK, NAME, None)
    assert calls == ["syncfs", "fsync"]
    assert os.listdir(final) == [] and final.stat().st_mode & 0o777 == volumes.DEFAULT_MODE


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
