"""Reading the kernel's small generated files (cgroupfs, /proc) whole, with bare system calls.

A pass at a thousand containers reads ~15,000 of them. Python's buffered text `open()` costs
~8 us a file here (a buffer, a decoder, an fstat); open + read + close alone ~3.5 us.
"""

from __future__ import annotations

import os
from pathlib import Path

CHUNK = 65536
"""More than any of these files holds: one read(2) brings all of it, a second sees the end."""


def read_bytes(path: str | Path) -> bytes:
    """The whole file; OSError as open(2) and read(2) raise it."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, CHUNK):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)
