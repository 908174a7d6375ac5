"""Giving freed heap back to the kernel. A reconcile of 1,000 containers builds ~40 MB of
/etc/hosts texts (every peer in every file) and drops them again; glibc keeps the freed pages
in its arenas, so a long-running agent would sit at its peak. malloc_trim(0) returns them."""

from __future__ import annotations

import ctypes
import ctypes.util

M_ARENA_MAX = -8
"""mallopt's parameter for the most heaps ("arenas") glibc makes (malloc.h)."""

_libc = ctypes.CDLL(_name) if (_name := ctypes.util.find_library("c")) else None
_malloc_trim = getattr(_libc, "malloc_trim", None)
_mallopt = getattr(_libc, "mallopt", None)


def release_free_memory() -> None:
    """No-op where the C library has no malloc_trim (musl)."""
    if _malloc_trim is not None:
        _malloc_trim(0)


def use_one_heap() -> None:
    """Every thread allocates from the main heap. glibc otherwise gives threads heaps of their
    own: the agent's start workers left nine behind, ~10 MiB resident between them after
    converging 1,000 containers, each keeping the pages of the few objects still alive in it
    (malloc_trim returns only whole free pages). The GIL serialises nearly every allocation
    anyway, so one heap costs next to no contention. Call before any thread starts; no-op where
    the C library has no mallopt (musl)."""
    if _mallopt is not None:
        _mallopt(M_ARENA_MAX, 1)
