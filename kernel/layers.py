"""OCI image layers, each unpacked once into the layer store as `<store>/<hex of diff_id>/` and
used as it is as an overlayfs lower directory: whiteouts are written in overlayfs's own format
(a 0/0 character device; `trusted.overlay.opaque=y` on a directory).

Layers are hostile input, unpacked by root on the host. tarfile only parses the stream; every
entry is created here, relative to an fd of its parent directory that was resolved with the
layer's root as `/` (kernel.inroot.open_at_in_root), and the entry's own name is never
followed. A symlink in the layer (`etc -> /etc`, `up -> ../..`) leads into the layer, never to
the host's files; a name whose `..` climbs above the root is refused.

A layer appears under its final name whole and verified, or not at all: it is unpacked into a
locked `.tmp-` directory beside it, its diff_id (the sha256 of the uncompressed tar) checked,
the filesystem synced, and the directory renamed into place without replacing one that a
concurrent unpack placed first.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import posixpath
import queue
import re
import stat
import subprocess
import tarfile
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

from kernel import durable
from kernel.inroot import open_at_in_root
from kernel.trees import remove_tree

LAYER_MEDIA_TYPES = frozenset({
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
})
"""The media types of a layer: a tar, plain or compressed. The compression is read from the
blob's first bytes, as Docker and containerd do: a Docker archive's layers are plain tars under
a gzip media type."""
GZIP_WBITS = 16 + zlib.MAX_WBITS
COMPRESSION_MAGIC = {b"\x1f\x8b": "gzip", b"\x28\xb5\x2f\xfd": "zstd"}
MAGIC_LENGTH = 4

TEMPORARY_PREFIX = ".tmp-"  # on disk in every store: remove_temporaries finds leftovers by it, do not rename
WHITEOUT_PREFIX = ".wh."
OPAQUE_WHITEOUT = ".wh..wh..opq"
AUFS_METADATA_PREFIX = ".wh..wh."  # .wh..wh.plnk, .wh..wh.aufs: aufs's bookkeeping, not content
OVERLAY_OPAQUE_XATTR = "trusted.overlay.opaque"
OVERLAY_XATTR_PREFIX = "trusted.overlay."
PAX_XATTR_PREFIX = "SCHILY.xattr."
OPTIONAL_XATTR_PREFIXES = ("trusted.", "security.selinux")
"""Xattrs dropped when the store's filesystem refuses them (ENOTSUP, EPERM): the container runs
without them as it would under Docker on that filesystem. Any other refused xattr fails the
layer: a program without its security.capability would fail at run time, far from the cause."""
COPY_CHUNK = 1 << 20
READAHEAD_CHUNKS = 16
"""COPY_CHUNK pieces of a layer's tar read ahead of the unpack, at most (16 MiB)."""
READAHEAD_POLL = 0.1
"""Seconds between looks at whether the other side of a readahead stopped."""
STREAM_BUFFER = 64 << 10
"""tarfile's read size in stream mode. Each header read slices its buffer, so a larger one costs
a copy per entry: 64 KiB is as fast as 1 MiB on big files and much faster on small ones."""
MAX_HEADER_BYTES = 1 << 20
"""Largest extended header (PAX, GNU long name or link) read: tarfile reads one whole into
memory, so a few KiB of compressed layer could ask for gigabytes; names and attributes fit in
far less (Go's archive/tar refuses past 1 MiB too)."""

DIFF_ID = re.compile(r"sha256:([0-9a-f]{64})")

T = TypeVar("T")


class LayerError(Exception):
    """A layer that cannot be unpacked; the message names the layer (sha256:<first 12 hex>) and
    says why in words a user acts on."""


def layer_path(store: Path, diff_id: str) -> Path:
    """Where the layer with `diff_id` is (or will be) unpacked."""
    match = DIFF_ID.fullmatch(diff_id)
    if match is None:
        raise LayerError(f"diff_id {diff_id!r} is not sha256:<64 lowercase hex digits>: the image config is malformed")
    return store / match.group(1)


def unpack_layer(blob: Reader, media_type: str, diff_id: str, store: Path) -> Path:
    """The directory holding the layer, unpacked from the stream `blob` (read to its end) unless
    it already was (a layer never changes, so its name is proof enough; `blob` is not read then).
    On LayerError nothing is left in the store."""
    final = layer_path(store, diff_id)
    if final.exists():
        return final
    layer = f"layer {diff_id[:19]}"
    if media_type not in LAYER_MEDIA_TYPES:
        raise LayerError(f"{layer}: media type {media_type!r} is not a layer format reconcile can unpack "
                         "(tar, tar+gzip or tar+zstd)")
    try:
        store.mkdir(parents=True, exist_ok=True)
        temporary, root_fd = _locked_temporary(store, final.name)
    except OSError as error:
        raise LayerError(f"{layer}: cannot create a directory in the layer store {store}: {error.strerror}") from None
    placed = False
    try:
        digest = _unpack(blob, root_fd, layer)
        if digest != diff_id:
            raise LayerError(f"{layer}: its content does not match its diff_id (the uncompressed tar is {digest}): "
                             "the blob is corrupt or belongs to another layer; pull the image again")
        durable.syncfs(root_fd)
        placed = durable.rename_noreplace(temporary, final)  # not placed: a concurrent unpack was first
        return final
    except OSError as error:
        raise LayerError(f"{layer}: cannot unpack it into {store}: {error.strerror}") from None
    finally:
        try:
            if not placed:  # a failure to remove leaves a .tmp- for remove_temporaries
                remove_tree(temporary, ignore_errors=True)
        finally:
            os.close(root_fd)  # its flock marks the unpack live: never left held


def remove_temporaries(store: Path) -> None:
    """Delete the `.tmp-` directories that unpacks killed half-way left in the store. One still
    locked belongs to a running unpack (in this process or another) and is left alone."""
    try:
        leftovers = [entry.path for entry in os.scandir(store)
                     if entry.name.startswith(TEMPORARY_PREFIX) and entry.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return
    for path in leftovers:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if _still_named(path, fd):  # else removed by another cleaner, or placed by its unpack, meanwhile
                remove_tree(path)
        except BlockingIOError:
            continue
        finally:
            os.close(fd)


def _still_named(path: str, fd: int) -> bool:
    """Whether `path` still names the directory open as `fd`: an unpack that finished between
    the cleaner's open and its flock renamed its temporary into place (a live layer)."""
    try:
        named = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)


def _locked_temporary(store: Path, name: str) -> tuple[Path, int]:
    """A new `.tmp-` directory in the store and an fd of it holding an flock for as long as the
    unpack runs, which is how remove_temporaries tells a live unpack from a dead one. A cleaner
    can take the directory between mkdtemp and flock: then it is made again."""
    while True:
        temporary = Path(tempfile.mkdtemp(prefix=f"{TEMPORARY_PREFIX}{name[:12]}-{os.getpid()}-", dir=store))
        try:
            fd = os.open(temporary, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.fstat(fd).st_nlink:
            os.fchmod(fd, 0o755)  # not mkdtemp's 0700: the layer root, unless the tar has an entry for it
            return temporary, fd
        os.close(fd)


class Reader(Protocol):
    """What each stage of a layer's stream reads from the one before: at most `size` bytes, b""
    at the end."""

    def read(self, size: int, /) -> bytes: ...


def _unpack(blob: Reader, root_fd: int, layer: str) -> str:
    """Unpack the layer under `root_fd`; the digest of the whole uncompressed stream, read to its
    end (a tar is padded past its end marker, and the diff_id covers the padding too)."""
    with _layer_stream(blob, layer) as stream, _Unpacker(root_fd, layer) as unpacker:
        try:
            # typeshed wants a seekable, writable file for every mode; a stream ("r|") is only read
            with tarfile.open(fileobj=stream, mode="r|", bufsize=STREAM_BUFFER,  # type: ignore[call-overload]
                              tarinfo=_BoundedHeaders) as archive:
                for member in archive:
                    unpacker.unpack(archive, member)
                    archive.members.clear()  # a stream keeps every entry read otherwise: unbounded
        except tarfile.TarError as error:
            raise LayerError(f"{layer}: it is not a valid tar archive ({error}): pull the image again") from None
        unpacker.set_directory_times()
        return stream.drain()


class _BoundedHeaders(tarfile.TarInfo):
    """A tar entry whose extended headers are refused past MAX_HEADER_BYTES, before tarfile
    reads them whole."""

    def _proc_member(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        extended = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.GNUTYPE_LONGNAME,
                    tarfile.GNUTYPE_LONGLINK)
        if self.type in extended and self.size > MAX_HEADER_BYTES:
            raise tarfile.HeaderError(f"an extended header of {self.size} bytes (at most {MAX_HEADER_BYTES})")
        return super()._proc_member(tarfile_)  # type: ignore[misc]


@contextmanager
def _layer_stream(blob: Reader, layer: str) -> Iterator[_Readahead]:
    """The layer's tar, decompressed as its first bytes say."""
    head = b""
    while len(head) < MAGIC_LENGTH and (more := blob.read(MAGIC_LENGTH - len(head))):
        head += more
    compression = next((kind for magic, kind in COMPRESSION_MAGIC.items() if head.startswith(magic)), None)
    source: Reader = _Prefixed(head, blob)
    with ExitStack() as stack:
        zstd = None
        if compression == "gzip":
            source = _Gunzip(source)
        elif compression == "zstd":
            zstd = stack.enter_context(_zstd(source, layer))
            assert zstd.stdout is not None  # a pipe (stdout=PIPE)
            source = zstd.stdout
        corrupt = f"{layer}: its {compression or 'tar'} data is truncated or corrupt"
        yield stack.enter_context(_Readahead(_HashingReader(source, zstd, corrupt)))


class _Gunzip:
    """gzip members one after another, as `gzip -d` reads them (zero padding after a member
    allowed), inflated in large pieces: GzipFile reads 8 KiB at a time, a third of an unpack's
    time on big layers. zlib checks each member's CRC and length; at most `size` bytes come out
    of one read, however well the data compresses."""

    def __init__(self, source: Reader):
        self._source = source
        self._inflate = zlib.decompressobj(GZIP_WBITS)
        self._input = b""
        self._in_member = False

    def read(self, size: int) -> bytes:
        while True:
            if not self._input:
                self._input = self._source.read(COPY_CHUNK)
                if not self._input:
                    if self._in_member:
                        raise EOFError("the gzip data ends inside a member")
                    return b""
            if not self._in_member:
                self._input = self._input.lstrip(b"\0")  # padding between or after members
                if not self._input:
                    continue
                self._in_member = True
            chunk = self._inflate.decompress(self._input, max(size, 0))
            self._input = self._inflate.unconsumed_tail
            if self._inflate.eof:
                self._input = self._inflate.unused_data + self._input
                self._inflate = zlib.decompressobj(GZIP_WBITS)
                self._in_member = False
            if chunk:
                return chunk


class _Prefixed:
    """A stream whose first bytes were already read (to tell its compression): those, then the rest."""

    def __init__(self, head: bytes, rest: Reader):
        self._head = head
        self._rest = rest

    def read(self, size: int = -1) -> bytes:
        if not self._head:
            return self._rest.read(size)
        if size < 0:
            chunk, self._head = self._head + self._rest.read(-1), b""
        else:
            chunk, self._head = self._head[:size], self._head[size:]
        return chunk


@contextmanager
def _zstd(source: Reader, layer: str) -> Iterator[subprocess.Popen[bytes]]:
    """`zstd -dc`, fed the blob by a thread; killed when the unpack is done with it, finished or not."""
    try:
        process = subprocess.Popen(["zstd", "-dcq"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE)
    except FileNotFoundError:
        raise LayerError(f"{layer}: it is zstd-compressed and the zstd command is missing: "
                         "install the zstd package") from None
    stdin = process.stdin
    assert stdin is not None  # a pipe (stdin=PIPE)

    def feed() -> None:
        try:
            with stdin:
                while chunk := source.read(COPY_CHUNK):
                    stdin.write(chunk)
        except (OSError, ValueError):  # zstd gave up (killed), or the blob failed: zstd sees the end
            pass

    feeder = threading.Thread(target=feed, daemon=True)
    with process:
        feeder.start()
        try:
            yield process
        finally:
            process.kill()
            feeder.join()


class _HashingReader:
    """The uncompressed tar, hashed as tarfile reads it. A read failure is raised here as
    LayerError, so an OSError anywhere else is a write failure (gzip's BadGzipFile is an OSError
    too)."""

    def __init__(self, source: Reader, zstd: subprocess.Popen[bytes] | None, corrupt: str):
        self._source = source
        self._zstd = zstd
        self._corrupt = corrupt
        self._digest = hashlib.sha256()

    def read(self, size: int) -> bytes:
        try:
            chunk = self._source.read(size)
        except (OSError, EOFError, zlib.error) as error:
            raise LayerError(f"{self._corrupt} ({error}): pull the image again") from None
        if not chunk and self._zstd is not None and self._zstd.wait():
            stderr = self._zstd.stderr  # a pipe (stderr=PIPE)
            complaint = stderr.read().decode(errors="replace").strip() if stderr is not None else ""
            raise LayerError(f"{self._corrupt} ({complaint}): pull the image again")
        self._digest.update(chunk)
        return chunk

    @property
    def diff_id(self) -> str:
        """The digest of everything read so far."""
        return f"sha256:{self._digest.hexdigest()}"


class _Readahead:
    """The layer's tar read (decompressed and hashed) in a thread of its own while the unpack
    writes files: inflating, hashing and writing each release the GIL, so a big layer unpacks
    in about the time of the slower half (a 100 MB layer from a pipe: 0.9 s -> 0.6 s). At most
    READAHEAD_CHUNKS chunks wait. A read failure is raised in the reader's thread."""

    def __init__(self, source: _HashingReader):
        self._source = source
        self._chunks: queue.Queue[bytes | BaseException] = queue.Queue(READAHEAD_CHUNKS)
        self._stop = threading.Event()
        self._current = memoryview(b"")
        self._ended = False
        self._thread = threading.Thread(target=self._fill, daemon=True)
        self._thread.start()

    def __enter__(self) -> _Readahead:
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Stop the reader (it may be waiting for its source: the unpack gave up) and wait for it."""
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._chunks.get(timeout=READAHEAD_POLL)
            except queue.Empty:
                pass
        self._thread.join()

    def _fill(self) -> None:
        try:
            while chunk := self._source.read(COPY_CHUNK):
                if not self._put(chunk):
                    return
            self._put(b"")
        except BaseException as error:  # noqa: BLE001 - handed to the reading side, raised there
            self._put(error)

    def _put(self, item: bytes | BaseException) -> bool:
        while not self._stop.is_set():
            try:
                self._chunks.put(item, timeout=READAHEAD_POLL)
                return True
            except queue.Full:
                continue
        return False

    def read(self, size: int) -> bytes:
        if not self._current and not self._ended:
            item = self._chunks.get()
            if isinstance(item, BaseException):
                self._ended = True
                raise item
            self._ended = not item
            self._current = memoryview(item)
        chunk = bytes(self._current[:size])
        self._current = self._current[size:]
        return chunk

    def drain(self) -> str:
        """Read to the end; the digest of everything read, as a diff_id."""
        while self.read(STREAM_BUFFER):
            pass
        return self._source.diff_id


class _Unpacker:
    """Creates a layer's entries under `root_fd`, each relative to an fd of its parent directory
    and never following its own name."""

    def __init__(self, root_fd: int, layer: str):
        self.root_fd = root_fd
        self.layer = layer
        self.directory_times: dict[str, tuple[float, int]] = {}
        """Directory -> (mtime from the tar, inode it was set for): applied after all entries."""
        self._parent_parts: list[str] | None = None
        self._parent_fd = -1

    def __enter__(self) -> _Unpacker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._forget_parent()

    def unpack(self, archive: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        """Create one entry. An OSError is the store refusing a write (ENOSPC, EDQUOT, ...)."""
        parts = self._parts(member.name)
        try:
            if not parts:
                self._root_entry(member)
            elif parts[-1].startswith(WHITEOUT_PREFIX):
                self._whiteout(parts)
            else:
                self._create(archive, member, parts)
        except OSError as error:
            raise LayerError(f"{self.layer}: cannot unpack {member.name!r}: {error.strerror}") from None
        except (ValueError, OverflowError) as error:  # an owner, time or device number out of range, a NUL in an xattr
            raise LayerError(f"{self.layer}: cannot unpack {member.name!r}: {error}: the image is broken") from None

    def set_directory_times(self) -> None:
        """Directory mtimes, once every entry is in (each entry made in a directory changed its
        mtime). A directory that a later entry replaced (another inode at its path) is skipped."""
        for path, (mtime, inode) in self.directory_times.items():
            try:
                fd = open_at_in_root(self.root_fd, path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            except OSError as error:
                if error.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                    continue
                raise
            try:
                if os.fstat(fd).st_ino == inode:
                    os.utime(fd, (mtime, mtime))
            finally:
                os.close(fd)

    def _parts(self, name: str) -> list[str]:
        """The components of an entry's name (or a hardlink's target) under the layer root, none
        of them `.` or `..`: a leading `/` or `./` is dropped as tar drops it; a NUL, or a `..`
        climbing above the root, is a broken or hostile layer."""
        if "\0" in name:
            raise LayerError(f"{self.layer}: the name {name!r} in it has a NUL byte: the image is broken or hostile")
        normal = posixpath.normpath(name.lstrip("/"))
        if normal == ".." or normal.startswith("../"):
            raise LayerError(f"{self.layer}: the name {name!r} in it points outside the layer: "
                             "the image is broken or hostile")
        return [] if normal == "." else normal.split("/")

    def _parent(self, parts: list[str]) -> int:
        """An O_PATH fd of the directory `parts`, kept for the next entry: a tar lists a
        directory's files one after another. Only an entry with the very same parent path reuses
        it, and an entry that replaces a directory on that path has a shorter parent path: it has
        moved the fd on first."""
        if parts != self._parent_parts:
            self._forget_parent()
            self._parent_fd = self._directory(parts)
            self._parent_parts = parts
        return self._parent_fd

    def _forget_parent(self) -> None:
        if self._parent_parts is not None:
            os.close(self._parent_fd)
            self._parent_parts = None

    def _directory(self, parts: list[str]) -> int:
        """An O_PATH fd of the directory `parts`, symlinks on the way resolved inside the layer.
        Missing directories are made 0755 root:root, as tar makes the parents a tar leaves out
        (in a loop: a layer may leave out a thousand of them)."""
        found = len(parts)  # parts[:found] is the deepest directory that is there
        while True:
            try:
                fd = open_at_in_root(self.root_fd, "/".join(parts[:found]), os.O_PATH | os.O_DIRECTORY)
                break
            except FileNotFoundError:
                if found == 0:
                    raise
                found -= 1
        for depth in range(found + 1, len(parts) + 1):
            name = parts[depth - 1]
            try:
                os.mkdir(name, 0o755, dir_fd=fd)
                os.chmod(name, 0o755, dir_fd=fd, follow_symlinks=False)  # whatever our umask
                child = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except FileExistsError:
                raise LayerError(f"{self.layer}: {'/'.join(parts[:depth])!r} in it is a symlink to nothing in the "
                                 "layer, and entries are to be unpacked through it: the image is broken") from None
            finally:
                os.close(fd)
            fd = child
        return fd

    def _root_entry(self, member: tarfile.TarInfo) -> None:
        """The tar's `./`: the owner, mode and mtime of the layer's root directory."""
        if not member.isdir():
            raise LayerError(f"{self.layer}: its entry {member.name!r} names the layer root but is no directory: "
                             "the image is broken")
        _set_metadata(member, self.root_fd, self.root_fd)
        self.directory_times[""] = (member.mtime, os.fstat(self.root_fd).st_ino)

    def _whiteout(self, parts: list[str]) -> None:
        """An OCI whiteout in overlayfs's format: `.wh.NAME` becomes a 0/0 character device NAME,
        `.wh..wh..opq` makes its directory opaque (hiding the lower layers' entries in it)."""
        marker = parts[-1]
        if marker.startswith(AUFS_METADATA_PREFIX) and marker != OPAQUE_WHITEOUT:
            return
        hidden = marker[len(WHITEOUT_PREFIX):]
        if marker != OPAQUE_WHITEOUT and hidden in ("", ".", ".."):
            raise LayerError(f"{self.layer}: its whiteout {'/'.join(parts)!r} names no file: the image is broken")
        directory_fd = self._parent(parts[:-1])
        if marker == OPAQUE_WHITEOUT:  # an O_PATH fd takes no fsetxattr: its /proc link is the directory
            os.setxattr(f"/proc/self/fd/{directory_fd}", OVERLAY_OPAQUE_XATTR, b"y")
        else:
            _replacing(directory_fd, hidden, lambda: os.mknod(hidden, stat.S_IFCHR, os.makedev(0, 0),
                                                              dir_fd=directory_fd))

    def _create(self, archive: tarfile.TarFile, member: tarfile.TarInfo, parts: list[str]) -> None:
        """Create the entry `parts`, replacing what an earlier entry of the same name made (tar
        semantics); a directory over a directory only updates its metadata."""
        parent_fd, name = self._parent(parts[:-1]), parts[-1]
        if member.isdir():
            _make_directory(parent_fd, name)
            _set_metadata(member, parent_fd, name)
            inode = os.stat(name, dir_fd=parent_fd, follow_symlinks=False).st_ino
            self.directory_times["/".join(parts)] = (member.mtime, inode)
        elif member.islnk():
            self._hardlink(member, parent_fd, name)
        elif member.issparse():
            # Holes tarfile would write out as zeroes: a few bytes of tar could fill the disk
            # (the OCI layer spec says a layer SHOULD NOT use sparse files).
            raise LayerError(f"{self.layer}: its entry {member.name!r} is a sparse file, which reconcile does not "
                             "unpack: rebuild the image without sparse files")
        elif member.isreg():
            _write_file(archive, member, parent_fd, name)
        elif member.issym():
            if "\0" in member.linkname:
                raise LayerError(f"{self.layer}: its symlink {member.name!r} has a NUL byte in its target: "
                                 "the image is broken or hostile")
            _replacing(parent_fd, name, lambda: os.symlink(member.linkname, name, dir_fd=parent_fd))
            _set_metadata(member, parent_fd, name)
        elif member.ischr() or member.isblk() or member.isfifo():
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK if member.isblk() else stat.S_IFIFO
            device = os.makedev(member.devmajor, member.devminor)
            _replacing(parent_fd, name, lambda: os.mknod(name, kind | 0o600, device, dir_fd=parent_fd))
            _set_metadata(member, parent_fd, name)
        else:
            raise LayerError(f"{self.layer}: its entry {member.name!r} has tar type {member.type!r}, which a "
                             "layer cannot hold: the image is broken")

    def _hardlink(self, member: tarfile.TarInfo, parent_fd: int, name: str) -> None:
        """A second name for a regular file this layer made earlier, its target resolved inside
        the layer and its last component never followed. The entry has no metadata of its own."""
        refusal = LayerError(f"{self.layer}: its entry {member.name!r} is a hardlink to {member.linkname!r}, which "
                             "is not a regular file earlier in the layer: the image is broken or hostile")
        target = self._parts(member.linkname)
        if not target:
            raise refusal
        try:
            target_parent_fd = open_at_in_root(self.root_fd, "/".join(target[:-1]), os.O_PATH | os.O_DIRECTORY)
        except OSError:
            raise refusal from None
        try:
            try:
                target_mode = os.stat(target[-1], dir_fd=target_parent_fd, follow_symlinks=False).st_mode
            except OSError:
                raise refusal from None
            if not stat.S_ISREG(target_mode):
                raise refusal
            _replacing(parent_fd, name, lambda: os.link(target[-1], name, src_dir_fd=target_parent_fd,
                                                        dst_dir_fd=parent_fd, follow_symlinks=False))
        finally:
            os.close(target_parent_fd)


def _replacing(parent_fd: int, name: str, create: Callable[[], T]) -> T:
    """`create()` the entry `name`, again after removing what an earlier entry of the same name
    made (recursively for a directory): in a tar the later entry wins."""
    try:
        return create()
    except FileExistsError:
        if stat.S_ISDIR(os.stat(name, dir_fd=parent_fd, follow_symlinks=False).st_mode):
            remove_tree(name, dir_fd=parent_fd)
        else:
            os.unlink(name, dir_fd=parent_fd)
        return create()


def _make_directory(parent_fd: int, name: str) -> None:
    """A directory `name`, kept if an earlier entry made one (a later entry updates its metadata,
    its contents stay); anything else there is replaced."""
    try:
        os.mkdir(name, 0o700, dir_fd=parent_fd)
    except FileExistsError:
        if not stat.S_ISDIR(os.stat(name, dir_fd=parent_fd, follow_symlinks=False).st_mode):
            os.unlink(name, dir_fd=parent_fd)
            os.mkdir(name, 0o700, dir_fd=parent_fd)


def _write_file(archive: tarfile.TarFile, member: tarfile.TarInfo, parent_fd: int, name: str) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = _replacing(parent_fd, name, lambda: os.open(name, flags, 0o600, dir_fd=parent_fd))
    try:
        content = archive.extractfile(member)
        assert content is not None  # a regular file (the only kind written here) has content
        while chunk := content.read(COPY_CHUNK):
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view):]
        _set_metadata(member, parent_fd, fd)
    finally:
        os.close(fd)


def _set_metadata(member: tarfile.TarInfo, parent_fd: int, entry: int | str) -> None:
    """Owner, mode, xattrs, then mtime of `entry`: its own fd, or its name in `parent_fd`, never
    followed. The order matters: chown clears setuid/setgid and security.capability. A
    directory's mtime waits for the end (every entry created in it changes it)."""
    at: dict[str, Any] = {} if isinstance(entry, int) else {"dir_fd": parent_fd, "follow_symlinks": False}
    os.chown(entry, member.uid, member.gid, **at)
    if not member.issym():  # a symlink's mode is always 0777
        os.chmod(entry, stat.S_IMODE(member.mode), **at)
    for key, value in member.pax_headers.items():
        attribute = key[len(PAX_XATTR_PREFIX):]
        if key.startswith(PAX_XATTR_PREFIX) and not attribute.startswith(OVERLAY_XATTR_PREFIX):
            _set_xattr(entry if isinstance(entry, int) else f"/proc/self/fd/{parent_fd}/{entry}", attribute,
                       value.encode("utf-8", "surrogateescape"))
    if not member.isdir():
        os.utime(entry, (member.mtime, member.mtime), **at)


def _set_xattr(entry: int | str, attribute: str, value: bytes) -> None:
    """One xattr from the tar (tarfile decodes PAX values as UTF-8 with surrogate escapes: this
    gives back the bytes). trusted.overlay.* never gets here: overlayfs would take a layer's own
    as our whiteouts, redirects or metacopy markers."""
    try:
        if isinstance(entry, int):
            os.setxattr(entry, attribute, value)
        else:  # a path through /proc/self/fd/<parent>: lsetxattr, as no *at call sets xattrs
            os.setxattr(entry, attribute, value, follow_symlinks=False)
    except OSError as error:
        if error.errno in (errno.ENOTSUP, errno.EPERM) and attribute.startswith(OPTIONAL_XATTR_PREFIXES):
            return
        raise OSError(error.errno, f"{error.strerror} (xattr {attribute})") from None
