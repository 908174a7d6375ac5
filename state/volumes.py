"""Named volumes: a directory per stack and name, <state-dir>/volumes/<stack>/<name>.

Made by the first start of a container that mounts it, kept across recreates and across
`down` (what a container wrote there is data reconcile must not lose), removed only by
`down --volumes`; a volume no longer declared is kept too, and `status` lists it. Stacks never
share one: the stack is part of the path, as Compose prefixes volume names with the project.

A new volume is filled as Docker fills one on first use: with what the container's root holds
at the mount point (the image's `/var/lib/postgresql/data` with its owner and mode), when the
root is an image or a `rootfs`; the host's own files (a container on the host's root) are
never copied. It is filled under a temporary name, synced and renamed into place, so a crash or
a power cut leaves either no volume (the next start fills it again) or a complete one, never a
half-copied one, and a volume a container was given keeps its name.

Containers sharing a volume may start at once (a level's containers start in threads; the
watch agent and a CLI, or two CLIs, are processes of their own): the fill holds an flock on a
lock file beside the volume, so one start fills it and the others find it filled. `down
--volumes` removes lock files with the stack's volumes; it runs under the state dir's lock, as
every start does, so never beside a fill.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from kernel import durable
from kernel.trees import remove_tree

VOLUMES_DIR = "volumes"  # DO NOT RENAME: <state-dir>/volumes/<stack>/<name>, users' data
PARTIAL_PREFIX = ".new-"  # <state-dir>/volumes/<stack>/.new-<name>: a volume being filled
LOCK_PREFIX = ".lock-"  # DO NOT RENAME: <state-dir>/volumes/<stack>/.lock-<name>, flocked by its fill
DEFAULT_MODE = 0o755
"""A volume without anything to copy: root's, 0755, as Docker makes an empty one."""


@dataclass(frozen=True)
class StoredVolume:
    stack: str
    name: str
    path: Path


def stack_dir(state_dir: Path, stack: str) -> Path:
    return state_dir / VOLUMES_DIR / stack


def volume_path(state_dir: Path, stack: str, name: str) -> Path:
    return stack_dir(state_dir, stack) / name


def stored(state_dir: Path, stack: str) -> list[StoredVolume]:
    """The stack's volumes on this host, by name (those being filled left out)."""
    root = stack_dir(state_dir, stack)
    try:
        entries = sorted(os.scandir(root), key=lambda entry: entry.name)
    except FileNotFoundError:
        return []
    return [StoredVolume(stack, entry.name, Path(entry.path)) for entry in entries
            if not entry.name.startswith(PARTIAL_PREFIX) and entry.is_dir(follow_symlinks=False)]


def ensure(state_dir: Path, stack: str, name: str, seed: Path | None, id_shift: int = 0) -> Path:
    """The volume's directory, made now if missing: a copy of `seed` (a directory in the
    container's root, as the host sees it), else empty. `id_shift`: the host id of the
    container's root when its root is idmapped (userns: auto); the volume holds the
    container's own ids, since its mount is idmapped in turn."""
    final = volume_path(state_dir, stack, name)
    if final.is_dir():  # only a whole, synced fill is ever renamed to this name
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(final.parent.parent, 0o700)  # users' data: root's only, as the rest of the state dir
    with _locked(final.parent, name):
        if final.is_dir():  # another start filled it while this one waited
            return final
        partial = final.parent / f"{PARTIAL_PREFIX}{name}"
        if os.path.lexists(partial):  # a fill a crash interrupted: the lock says none is running
            remove_tree(partial)
        if seed is not None and seed.is_dir():
            _copy_tree(seed, partial, id_shift)
        else:
            partial.mkdir(mode=DEFAULT_MODE)
            os.chmod(partial, DEFAULT_MODE)
        _publish(partial, final)
    return final


def remove_stack(state_dir: Path, stack: str) -> list[StoredVolume]:
    """Delete every volume of the stack (`down --volumes`); the ones removed."""
    removed = stored(state_dir, stack)
    root = stack_dir(state_dir, stack)
    if root.exists():
        remove_tree(root)
    return removed


@contextmanager
def _locked(root: Path, name: str) -> Iterator[None]:
    """Hold the volume's lock, across threads (each open is its own lock) and processes. The
    lock file is removed only with the stack's volumes (see the module's docstring): removed
    beside a fill, the next start would lock a new file while the fill holds the old one."""
    fd = os.open(root / f"{LOCK_PREFIX}{name}", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _publish(partial: Path, final: Path) -> None:
    """Give the filled tree its name. Synced first: after a power cut a volume under its name
    must hold whole files, not the empty ones whose data never reached the disk. The rename
    never replaces: a directory under the name was made by a writer that takes no lock (an
    older reconcile, a user's mkdir), may already be mounted, and is kept as it is. The rename
    is flushed before a container writes into the volume: lost, the volume would come back as
    a staging directory, which the next start deletes with what the container wrote."""
    fd = os.open(partial, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        durable.syncfs(fd)
    finally:
        os.close(fd)
    if not durable.rename_noreplace(partial, final):
        remove_tree(partial)
        if not final.is_dir():
            raise FileExistsError(errno.EEXIST, "not a directory: it holds the name of a volume", str(final))
    durable.fsync_directory(final.parent)


def _own(path: Path, source: os.stat_result, id_shift: int) -> None:
    uid, gid = source.st_uid - id_shift, source.st_gid - id_shift
    os.chown(path, max(uid, 0), max(gid, 0), follow_symlinks=False)


def _copy_tree(seed: Path, target: Path, id_shift: int) -> None:
    """Directories, regular files and symlinks with their owner, mode and times, never
    following a link (the seed is the container's, it names what it wants); device nodes,
    fifos and sockets are left out."""
    for directory, subdirs, files in os.walk(seed, followlinks=False):
        relative = Path(directory).relative_to(seed)
        made = target / relative
        info = os.lstat(directory)
        made.mkdir()
        for name in files + [d for d in subdirs if os.path.islink(os.path.join(directory, d))]:
            _copy_entry(Path(directory) / name, made / name, id_shift)
        _own(made, info, id_shift)
        os.chmod(made, stat.S_IMODE(info.st_mode))
    for directory, _, _ in os.walk(seed, followlinks=False):
        info = os.lstat(directory)
        os.utime(target / Path(directory).relative_to(seed), ns=(info.st_atime_ns, info.st_mtime_ns))


def _copy_entry(source: Path, target: Path, id_shift: int) -> None:
    info = os.lstat(source)
    if stat.S_ISLNK(info.st_mode):
        os.symlink(os.readlink(source), target)
    elif stat.S_ISREG(info.st_mode):
        source_fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            target_fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                while os.sendfile(target_fd, source_fd, None, 1 << 20):
                    pass
            finally:
                os.close(target_fd)
        finally:
            os.close(source_fd)
        os.chmod(target, stat.S_IMODE(info.st_mode))
    else:
        return
    _own(target, info, id_shift)
    if not stat.S_ISLNK(info.st_mode):
        os.chmod(target, stat.S_IMODE(info.st_mode))  # chown clears setuid bits
    os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns), follow_symlinks=False)
