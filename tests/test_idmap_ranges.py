"""kernel/idmap.py's pure half: which host ids a namespace's maps take, and the `userns: auto`
ranges handed out around everything taken, whatever its length (no kernel)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kernel.idmap import POOL_END, POOL_START, RANGE_SIZE, IdmapError, allocate, host_ranges_of_map, subordinate_ranges

SLOT = [POOL_START + n * RANGE_SIZE for n in range(6)]


def test_the_hosts_own_map_takes_nothing_and_others_take_every_line() -> None:
    assert host_ranges_of_map("         0          0 4294967295\n") == []
    assert host_ranges_of_map("0 1000 1\n1 100000 65536\n") == [(1000, 1), (100000, 65536)]


@pytest.mark.parametrize(("used", "count", "expected"), [
    ([], 2, SLOT[:2]),
    ([(SLOT[0], RANGE_SIZE)], 1, [SLOT[1]]),
    ([(SLOT[0], 1_000_000)], 1, [POOL_START + 16 * RANGE_SIZE]),  # a foreign map of a million ids
    ([(SLOT[1] + 5, 10)], 2, [SLOT[0], SLOT[2]]),  # a few ids in the middle of a slot take it all
    ([(SLOT[2], RANGE_SIZE), (SLOT[0], 3 * RANGE_SIZE)], 1, [SLOT[3]]),  # overlapping, out of order
    ([(100000, 65536), (POOL_START - 10, 20)], 1, [SLOT[1]]),  # below the pool, or reaching into it
    ([(SLOT[1], RANGE_SIZE), (SLOT[3], 0)], 3, [SLOT[0], SLOT[2], SLOT[3]]),
], ids=["free", "ours", "a long foreign map", "inside a slot", "overlapping", "below", "empty"])
def test_ranges_overlap_nothing_taken(used: list[tuple[int, int]], count: int, expected: list[int]) -> None:
    assert allocate(used, count) == expected


def test_a_full_pool_is_an_error() -> None:
    with pytest.raises(IdmapError, match="no free uid range"):
        allocate([(POOL_START, POOL_END + RANGE_SIZE - POOL_START)], 1)


def test_subordinate_ids_are_read_from_both_files_and_bad_lines_skipped(tmp_path: Path) -> None:
    (tmp_path / "subuid").write_text("alice:100000:65536\n# comment\nbob:2147483647:2147483648\nbroken\n")
    (tmp_path / "subgid").write_text("alice:100000:65536\n")
    assert subordinate_ranges([tmp_path / "subuid", tmp_path / "subgid", tmp_path / "none"]) == [
        (100000, 65536), (2147483647, 2147483648), (100000, 65536)]
