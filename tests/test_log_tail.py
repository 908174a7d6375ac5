"""`logs --tail N`: where the last N lines begin across the writer's rotated files, read backwards
in blocks (every case at block sizes that cut lines, files and newlines anywhere)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from kernel.runtime import CURRENT_LINK, LOG_FILE
from reconcile.engine.containers import _LogCursor
from reconcile.engine.log_tail import tail_start

CASES: list[tuple[str, list[bytes], int, bytes]] = [
    # (case, files oldest first, N, the output `logs --tail N` prints)
    ("one file", [b"a\nb\nc\n"], 2, b"b\nc\n"),
    ("every line", [b"a\nb\nc\n"], 3, b"a\nb\nc\n"),
    ("N larger than the log", [b"a\nb\n", b"c\n"], 10, b"a\nb\nc\n"),
    ("N=0", [b"a\n", b"b\n"], 0, b""),
    ("N=0, no trailing newline", [b"a\nb"], 0, b""),
    ("no trailing newline: the last line counts", [b"a\nb\nc"], 2, b"b\nc"),
    ("no newline at all", [b"abc"], 1, b"abc"),
    ("across the rotation", [b"1\n2\n3\n", b"4\n5\n", b"6\n7\n"], 5, b"3\n4\n5\n6\n7\n"),
    ("starts at a file's start", [b"1\n2\n", b"3\n4\n"], 2, b"3\n4\n"),
    ("a line cut by the rotation", [b"1\n2", b"2\n3\n"], 2, b"22\n3\n"),
    ("the newest file just rotated, empty", [b"1\n2\n3\n", b""], 2, b"2\n3\n"),
    ("empty files between", [b"1\n2\n", b"", b"3\n", b""], 2, b"2\n3\n"),
    ("all empty", [b"", b""], 3, b""),
    ("empty lines count", [b"a\n\n\n"], 2, b"\n\n"),
    ("the oldest file's first line, cut short by the rotation", [b"ld\nnew\n"], 2, b"ld\nnew\n"),
]


@pytest.mark.parametrize("block_size", [1, 2, 3, 65536])
@pytest.mark.parametrize(("case", "files", "lines", "expected"), CASES, ids=[c[0] for c in CASES])
def test_tail_start(case: str, files: list[bytes], lines: int, expected: bytes, block_size: int) -> None:
    index, offset = tail_start([io.BytesIO(f) for f in files], lines, block_size)
    assert files[index][offset:] + b"".join(files[index + 1:]) == expected


def test_a_tail_reads_only_its_end() -> None:
    """A tail of a large log reads a block or two of its newest file, not the whole log."""
    class Counting(io.BytesIO):
        read_bytes = 0

        def read(self, size: int | None = -1) -> bytes:
            data = super().read(size)
            Counting.read_bytes += len(data)
            return data

    big = b"".join(b"%d\n" % n for n in range(1_000_000))
    index, offset = tail_start([Counting(big), Counting(big)], 3, 4096)
    assert (index, big[offset:]) == (1, b"999997\n999998\n999999\n") and Counting.read_bytes == 4096


def test_a_tail_then_what_comes_across_a_rotation_loses_nothing(tmp_path: Path) -> None:
    """The writer wraps round (truncating the oldest file, where the tail began) right after the
    tail is printed: what follows is the new output, whole, nothing of the tail's twice."""
    for name, text in ((LOG_FILE, "1\n2\n3\n"), (f"{LOG_FILE}.1", "4\n5\n6\n"), (f"{LOG_FILE}.2", "7\n8\n9\n")):
        (tmp_path / name).write_text(text)
    (tmp_path / CURRENT_LINK).hardlink_to(tmp_path / f"{LOG_FILE}.2")
    cursor = _LogCursor(tmp_path)
    assert b"".join(cursor.read_tail(8)) == b"2\n3\n4\n5\n6\n7\n8\n9\n"
    (tmp_path / LOG_FILE).write_text("10\n11\n12\n")  # truncated and written again, as rotatelogs -n
    (tmp_path / CURRENT_LINK).unlink()
    (tmp_path / CURRENT_LINK).hardlink_to(tmp_path / LOG_FILE)
    assert b"".join(cursor.read_new()) == b"10\n11\n12\n"
