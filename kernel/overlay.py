"""Container roots: an overlay of the container's own upper directory over a lower that is never
written (the host's root filesystem, or a user's `rootfs` directory).

The mount's source is our ownership mark (`specs.names.overlay_source`): overlayfs shows it in
/proc/self/mountinfo, so a fresh process finds every root of ours, even with the state dir lost.
Mounting takes ~0.2-0.4 ms and unmounting 0.3-4 ms (runtime-notes.md): one syscall each.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from kernel import crashpoints
from kernel.libc import LIBC, MNT_DETACH, checked
from kernel.mountinfo import MOUNTINFO, unescape
from specs import names


class OverlayError(Exception):
    pass


def _check(result: int, what: str) -> None:
    checked(result, what, OverlayError)


@dataclass(frozen=True)
class Root:
    """A container root of ours as mounted: where, the image digest its mark carries, and its
    lower directories (an image's layers stay while a root uses them, whatever the store says)."""

    path: str
    """As the mount table shows it. Not a Path: a Path interns every name in it, and a thousand
    container names grew the interpreter's table of interned strings by ~1 MiB for good."""
    image_digest: str | None
    lowers: tuple[Path, ...] = ()


def mounted(among: Collection[tuple[str, str]] | None = None, table: str | None = None,
            at: Callable[[tuple[str, str]], str] | None = None) -> dict[tuple[str, str], Root]:
    """Every container root of ours (or those of `among`): (stack, container) -> its mount, from
    our mount table (`table`, when the caller has just read it). With `at`, only our mark where
    `at` says that container's root is mounted: a bind mount of a root elsewhere (someone
    looking into it, `mount --rbind /` for a chroot) carries the same mark and is not the root
    to unmount. Without, wherever it is (the layers any mount of a root holds stay)."""
    found: dict[tuple[str, str], Root] = {}
    # With `among`, a line is parsed only if it names one of theirs (names never need escaping).
    marks = None if among is None else [f" {names.overlay_source(*key)}" for key in among]
    for line in (MOUNTINFO.read_text() if table is None else table).splitlines():
        if marks is not None and not any(mark in line for mark in marks):
            continue
        fields, _, tail = line.partition(" - ")
        parsed = _ours(tail)
        if parsed is not None and (among is None or parsed[0] in among):
            path = unescape(fields.split(" ")[4])
            if at is None or path == at(parsed[0]):
                found[parsed[0]] = Root(path, parsed[1], _lowers(tail))
    return found


def seen_by(pid: int, key: tuple[str, str], host_path: Path) -> Root | None:
    """The root of container `key` as its running init `pid` sees it: the overlay mounted at
    `host_path` on the host, which the runtime bound as its `/`, read from the init's own mount
    table (a few dozen lines, where the host's holds one per sandbox and container). None when
    its `/` is no root of `key`'s, or the process is gone."""
    try:
        text = Path(f"/proc/{pid}/mountinfo").read_text()
    except OSError:
        return None
    root = None
    for line in text.splitlines():
        fields, _, tail = line.partition(" - ")
        if fields.split(" ")[4] == "/":  # the last one stacked there is the one in effect
            parsed = _ours(tail)
            root = Root(str(host_path), parsed[1], _lowers(tail)) if parsed is not None and parsed[0] == key else None
    return root


def _ours(tail: str) -> tuple[tuple[str, str], str | None] | None:
    """(owner, image digest) of a mountinfo line's mount (its part after " - ") when it is one
    of our roots."""
    fstype, source = (tail.split(" ") + ["", ""])[:2]
    return names.parse_overlay_source(unescape(source)) if fstype == "overlay" else None


def _lowers(tail: str) -> tuple[Path, ...]:
    """The lowerdir option of a mountinfo line's super options (after the source)."""
    options = (tail.split(" ") + ["", "", ""])[2]
    for option in options.split(","):
        if option.startswith("lowerdir="):
            return tuple(_lower(unescape(part)) for part in option.removeprefix("lowerdir=").split(":") if part)
    return ()


@functools.lru_cache(maxsize=4096)
def _lower(path: str) -> Path:
    """One Path per lower directory: a thousand roots share a few (an image's layers, or /),
    and building a Path costs ~15 us."""
    return Path(path)


def mount(stack: str, container: str, lowers: Sequence[Path], upper: Path, work: Path, target: Path,
          image_digest: str | None = None) -> None:
    """Mount the container's root at `target`, `lowers` top first. The upper and work
    directories must be empty or hold an earlier run's layer of the same container (a restart
    keeps its files, as Docker's)."""
    crashpoints.step("overlay-mount")
    for directory in (upper, work, target):
        directory.mkdir(parents=True, exist_ok=True)
    options = f"lowerdir={':'.join(map(str, lowers))},upperdir={upper},workdir={work}"
    if len(options) >= os.sysconf("SC_PAGE_SIZE"):
        raise OverlayError(f"overlay options for {stack}/{container} ({len(lowers)} lower layers) exceed one page: "
                           "an image of fewer layers, a shorter state dir path, or a shorter container key")
    _check(LIBC.mount(names.overlay_source(stack, container, image_digest).encode(), str(target).encode(),
                       b"overlay", 0, options.encode()), f"mount the root of {stack}/{container} on {target}")


def unmount(target: Path, detach: bool = False) -> None:
    """Unmount a container root; one still held open (a process being torn down) is detached and
    goes once the last user is gone. Already unmounted counts as done. `detach`: detached at
    once, for a root nothing mounts over its layer again (a removal): the kernel frees it once
    unused, instead of the caller waiting for that (measured on 6.18 beside a thousand
    containers: 3.6 ms an unmount, ~0.06 ms a detach). A root mounted again at once (a restart)
    is unmounted in full first: overlayfs marks its upper directory in use until then."""
    crashpoints.step("overlay-unmount")
    if LIBC.umount2(str(target).encode(), MNT_DETACH if detach else 0) == 0:
        return
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOENT):
        return
    if err == errno.EBUSY:
        _check(LIBC.umount2(str(target).encode(), MNT_DETACH), f"detach {target}")
        return
    raise OverlayError(f"unmount {target}: {os.strerror(err)}")
