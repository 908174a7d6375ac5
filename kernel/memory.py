"""The watch agent's allocator, and giving freed heap back to the kernel.

A reconcile of 1,000 containers builds and drops megabytes of transient objects (its plan, each
observation, the /etc/hosts texts). With Python's own allocator the agent would stay near its
peak (a page of small objects is only returned once all of it is free), so the agent runs on
the C library's malloc (`PYTHONMALLOC=malloc`) and returns what is free between keys.

On which malloc: glibc's returns only whole free pages (`malloc_trim`); the free bytes left
among objects still in use stay resident, and a start of many containers leaves many of them.
Converging the scale bench's 1,000 containers from an empty host, the agent sat at 64.4-64.5 MiB
on glibc against 61.8 on jemalloc (bench/README), for the same CPU time per allocation. So the
agent runs on jemalloc (Debian's libjemalloc2) where the host has it, and on glibc's malloc
otherwise; the preload is not passed on to the processes it starts.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from collections.abc import Mapping, MutableMapping

from kernel.libc import LIBC

JEMALLOC_CONF = "narenas:1,tcache:false"
"""One arena for every thread, as `use_one_heap` makes glibc's (the GIL serialises nearly every
allocation anyway), and no thread caches: each holds freed objects that a purge does not return
(converging 1,000 bare containers with them, flushed between keys too: 58.9-59.0 MiB, peak
66.4-66.5, against 58.1-58.2 and 63.9-64.6 without)."""

M_ARENA_MAX = -8
"""mallopt's parameter for the most heaps ("arenas") glibc makes (malloc.h)."""

MALLCTL_PURGE_ALL = b"arena.4096.purge"
"""jemalloc's control to return every arena's free pages to the kernel at once (4096 is
MALLCTL_ARENAS_ALL): its counterpart of malloc_trim. Left to itself, jemalloc returns them
gradually over ~10 s, and only as something allocates or frees: an idle agent would keep them."""

PRELOADED = "RECONCILE_PRELOADED"
"""Set beside the preload `agent_allocator` adds (to the library's name): what tells ours from a
user's once re-executed."""

_mallctl = getattr(LIBC, "mallctl", None)  # jemalloc's, when it is preloaded
if _mallctl is not None:
    _mallctl.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t), ctypes.c_void_p,
                         ctypes.c_size_t]
    _mallctl.restype = ctypes.c_int
_malloc_trim = getattr(LIBC, "malloc_trim", None)  # glibc's (jemalloc has neither)
_mallopt = getattr(LIBC, "mallopt", None)


def agent_allocator(environ: Mapping[str, str], jemalloc: str | None) -> dict[str, str]:
    """What to add to `environ` to run the agent on the C library's malloc: on `jemalloc` (its
    library's name, None where the host has none), unless the user preloads libraries or
    configures jemalloc themselves (LD_PRELOAD or MALLOC_CONF set and not empty: theirs stay)."""
    chosen = {"PYTHONMALLOC": "malloc"}
    if jemalloc is not None and not environ.get("LD_PRELOAD") and not environ.get("MALLOC_CONF"):
        chosen |= {"LD_PRELOAD": jemalloc, "MALLOC_CONF": JEMALLOC_CONF, PRELOADED: jemalloc}
    return chosen


def installed_jemalloc() -> str | None:
    """The name of the host's jemalloc library (libjemalloc.so.2), None where it has none."""
    return ctypes.util.find_library("jemalloc")


def forget_preload(environ: MutableMapping[str, str]) -> None:
    """Take the preload `agent_allocator` added out of `environ` (what the processes we start
    inherit), whether or not it loaded: the runtime, the waiting shells, the log writers and
    skopeo start on their own malloc. A user's LD_PRELOAD and MALLOC_CONF stay."""
    if environ.pop(PRELOADED, None) is not None:
        environ.pop("LD_PRELOAD", None)
        environ.pop("MALLOC_CONF", None)


def leave_openssl_unloaded() -> None:
    """Hash with Python's built-in sha256 and md5 in this process, not OpenSSL's: hashlib loads
    libcrypto at its first import (pydantic imports it, through `secrets` and `hmac`), 3.35 MiB
    resident for good (the watch agent's imports: 43,016 KiB against 39,584). For a process that
    hashes nothing large: the agent's hashes are of names, manifests and seccomp profiles, and
    it pulls images in processes of their own (reconcile/watch/pulls.py); its built-in sha256
    runs ~5x slower. hashlib and hmac are written to fall back so where OpenSSL is missing
    (`_hashlib` cannot be imported). Not with `--metrics-addr`: the Prometheus client imports
    `ssl`, which loads libcrypto whatever hashlib does. Call before anything imports hashlib;
    no-op after."""
    sys.modules.setdefault("_hashlib", None)  # type: ignore[arg-type]  # None: "not importable"


def release_free_memory() -> None:
    """Return the heap's free pages to the kernel. No-op on a C library with neither jemalloc
    nor malloc_trim (musl)."""
    if _mallctl is not None:
        _mallctl(MALLCTL_PURGE_ALL, None, None, None, 0)
    elif _malloc_trim is not None:
        _malloc_trim(0)


def use_one_heap() -> None:
    """Every thread allocates from glibc's main heap. glibc otherwise gives threads heaps of their
    own: the agent's start workers left nine behind, ~10 MiB resident between them after
    converging 1,000 containers, each keeping the pages of the few objects still alive in it
    (malloc_trim returns only whole free pages). The GIL serialises nearly every allocation
    anyway, so one heap costs next to no contention (JEMALLOC_CONF gives jemalloc one arena
    likewise). Call before any thread starts; no-op where the C library has no mallopt (musl)."""
    if _mallopt is not None:
        _mallopt(M_ARENA_MAX, 1)
