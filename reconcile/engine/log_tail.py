"""Where the last N lines of a container's log begin, across the writer's rotated files, found by
reading backwards from the newest file: a tail of a large log reads about what it shows, never
the whole log into memory (a log can be max-file x max-size: 100 x any size)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import BinaryIO

TAIL_BLOCK = 65536
"""Bytes read at a time going backwards: the writer's own read size."""


def tail_start(logs: Sequence[BinaryIO], lines: int, block_size: int = TAIL_BLOCK) -> tuple[int, int]:
    """(index into `logs`, offset in that file) where the last `lines` lines begin; `logs` is
    the log's files oldest first, as `runtime.log_files` orders them. A last line without its
    newline counts as a line, as `tail -n` counts it. Fewer lines than asked: the start of the
    oldest file; none asked: the end of the newest."""
    if not logs:
        raise ValueError("no log files")
    if lines == 0:
        return len(logs) - 1, logs[-1].seek(0, os.SEEK_END)
    newlines = lines  # newlines still to pass, going back, before the tail's first byte
    last_byte = True  # the output's last byte comes first: a newline there ends the last line
    for index in range(len(logs) - 1, -1, -1):
        log = logs[index]
        end = log.seek(0, os.SEEK_END)
        while end > 0:
            start = max(0, end - block_size)
            log.seek(start)
            block = log.read(end - start)
            if last_byte and block:
                last_byte = False
                if block.endswith(b"\n"):
                    block = block[:-1]
            found = block.count(b"\n")
            if found >= newlines:
                at = len(block)
                for _ in range(newlines):
                    at = block.rindex(b"\n", 0, at)
                return index, start + at + 1
            newlines -= found
            end = start
    return 0, 0
