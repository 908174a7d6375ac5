"""The C library as the mount adapters call it (container roots, idmapped lowers, the runtime's
mount namespace) and the allocator's controls (kernel/memory.py): one handle, over every symbol
loaded, that keeps errno, and a failure raised as the caller's error."""

from __future__ import annotations

import ctypes
import os

MNT_DETACH = 0x2

LIBC = ctypes.CDLL(None, use_errno=True)


def checked(result: int, what: str, error: type[Exception]) -> int:
    """`result` of a LIBC call, or `error("<what>: <the errno's words>")` when it failed (< 0)."""
    if result < 0:
        raise error(f"{what}: {os.strerror(ctypes.get_errno())}")
    return result
