"""kernel.layers against the real kernel, as root: layers built here with tarfile (plain, gzip,
and zstd through the zstd command), unpacked into a store under tmp_path, mounted as overlay
lower layers in a private mount namespace, and attacked with names, symlinks and hardlinks that
try to leave the layer. Every test that unpacks plants a canary directory beside the store and
checks it, and the host files the layers name, unchanged afterwards (the env fixture)."""

from __future__ import annotations

import errno
import fcntl
import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import struct
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import kernel.layers
from kernel.layers import TEMPORARY_PREFIX, LayerError, layer_path, remove_temporaries, unpack_layer
from kernel.trees import remove_tree
from tests.sandbox import REPO
from tests.waiting import eventually

MTIME = 1_600_000_000
DIRECTORY_MTIME = 1_500_000_000
TAR = "application/vnd.oci.image.layer.v1.tar"
MEDIA_TYPES = {None: TAR, "gzip": f"{TAR}+gzip", "zstd": f"{TAR}+zstd"}
CAPABILITY = struct.pack("<5I", 0x02000001, 1 << 13, 0, 0, 0)
"""security.capability v2: cap_net_raw, effective (what `setcap cap_net_raw+ep` writes)."""
HOST_FILES = (Path("/etc/hostname"), Path("/etc/passwd"))
PROBE = "rc-test-layer-escape-probe"
"""A top-level name no host has: an absolute entry name must never create /<PROBE>."""
CHILD_TIMEOUT = 120
"""Seconds: a hang guard for child processes, far above any unpack here (not a timing check)."""
CHILD = """
import json, os, sys
from pathlib import Path
from kernel.layers import LayerError, unpack_layer
blob, media_type, diff_id, store = sys.argv[1:]
try:
    with open(blob, "rb") as source:
        print(json.dumps({"path": str(unpack_layer(source, media_type, diff_id, Path(store)))}))
except LayerError as error:
    print(json.dumps({"error": str(error), "left": sorted(os.listdir(store))}))
"""
"""Unpack one layer in a process of its own and report the result as JSON."""
Entry = tuple[tarfile.TarInfo, bytes]


def unpack_file(blob: Path, media_type: str, diff_id: str, store: Path) -> Path:
    with open(blob, "rb") as source:
        return unpack_layer(source, media_type, diff_id, store)


def entry(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", mode: int = 0o644, uid: int = 0,
          gid: int = 0, mtime: int = MTIME, link: str = "", device: tuple[int, int] = (0, 0),
          xattrs: dict[str, bytes] | None = None, pax: dict[str, str] | None = None) -> Entry:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.gid, info.mtime, info.linkname = kind, mode, uid, gid, mtime, link
    info.devmajor, info.devminor = device
    info.size = len(data)
    info.pax_headers = {**{f"SCHILY.xattr.{key}": value.decode("utf-8", "surrogateescape")
                           for key, value in (xattrs or {}).items()}, **(pax or {})}
    return info, data


def directory(name: str, mode: int = 0o755, **fields: object) -> Entry:
    return entry(name, tarfile.DIRTYPE, mode=mode, **fields)  # type: ignore[arg-type]


def symlink(name: str, target: str, **fields: object) -> Entry:
    return entry(name, tarfile.SYMTYPE, link=target, mode=0o777, **fields)  # type: ignore[arg-type]


def hardlink(name: str, target: str) -> Entry:
    return entry(name, tarfile.LNKTYPE, link=target)


def tar_bytes(entries: list[Entry]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for info, data in entries:
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def compress(tar: bytes, compression: str | None) -> bytes:
    if compression == "gzip":
        return gzip.compress(tar, mtime=0)
    if compression == "zstd":
        return subprocess.run(["zstd", "-q", "-c"], input=tar, capture_output=True, check=True).stdout
    return tar


def diff_id_of(tar: bytes) -> str:
    return f"sha256:{hashlib.sha256(tar).hexdigest()}"


@dataclass(frozen=True)
class Layer:
    blob: Path
    media_type: str
    diff_id: str
    tar: bytes


@dataclass
class Env:
    """A store and a blob directory under tmp_path, with a canary directory beside them."""
    root: Path

    @property
    def store(self) -> Path:
        return self.root / "store"

    @property
    def canary(self) -> Path:
        return self.root / "canary"

    def layer(self, entries: list[Entry], compression: str | None = None, name: str = "layer") -> Layer:
        tar = tar_bytes(entries)
        blob = self.root / "blobs" / name
        blob.write_bytes(compress(tar, compression))
        return Layer(blob, MEDIA_TYPES[compression], diff_id_of(tar), tar)

    def unpack(self, layer: Layer) -> Path:
        return unpack_file(layer.blob, layer.media_type, layer.diff_id, self.store)

    def store_entries(self) -> list[str]:
        return sorted(os.listdir(self.store))

    def outside(self) -> dict[str, object]:
        """What an escaping entry could reach: the canary, what sits beside the store, the host
        files the layers name, and /<PROBE>."""
        return {"canary": snapshot(self.canary), "beside": sorted(os.listdir(self.root)),
                "host": {str(path): describe(path) for path in HOST_FILES},
                "probe": os.path.lexists(f"/{PROBE}")}


def describe(path: Path) -> tuple[object, ...]:
    """Everything about one file that an unpack could change."""
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode):
        content: object = os.readlink(path)
    elif stat.S_ISREG(info.st_mode):
        content = path.read_bytes()
    else:
        content = None
    xattrs = {key: os.getxattr(path, key, follow_symlinks=False) for key in os.listxattr(path, follow_symlinks=False)}
    return info.st_mode, info.st_uid, info.st_gid, info.st_nlink, info.st_mtime_ns, info.st_ino, content, xattrs


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """describe() of `root` and everything under it, symlinks not followed."""
    found = {".": describe(root)}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            found[str(path.relative_to(root))] = describe(path)
    return found


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    """The canary: a file, a subdirectory, a symlink and an xattr, none of which any layer may touch."""
    for name in ("store", "blobs", "canary/sub"):
        (tmp_path / name).mkdir(parents=True)
    (tmp_path / "canary" / "file").write_text("canary\n")
    (tmp_path / "canary" / "link").symlink_to("file")
    os.setxattr(tmp_path / "canary", "user.canary", b"1")
    box = Env(tmp_path)
    before = box.outside()
    yield box
    assert box.outside() == before
    shutil.rmtree(box.store)  # no setuid files or device nodes left lying in /tmp


def run_child(layer: Layer, store: Path, blob: Path | None = None, wrapper: tuple[str, ...] = ()) -> dict[str, object]:
    result = subprocess.run([*wrapper, sys.executable, "-c", CHILD, str(blob or layer.blob), layer.media_type,
                             layer.diff_id, str(store)], cwd=REPO, capture_output=True, text=True,
                            timeout=CHILD_TIMEOUT)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def spawn_child(layer: Layer, store: Path, blob: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", CHILD, str(blob), layer.media_type, layer.diff_id, str(store)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def child_result(child: subprocess.Popen[str]) -> dict[str, object]:
    stdout, stderr = child.communicate(timeout=CHILD_TIMEOUT)
    assert child.returncode == 0, stderr
    return json.loads(stdout)


def open_fifo_writer(fifo: Path, child: subprocess.Popen[str]) -> int:
    """The write end of `fifo`, once `child` has it open to read (it calls unpack_layer next)."""
    deadline = time.monotonic() + CHILD_TIMEOUT
    while True:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as error:
            if error.errno != errno.ENXIO:  # no reader yet
                raise
        else:
            os.set_blocking(fd, True)
            return fd
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < deadline, "the child never opened its blob"
        time.sleep(0.01)


def stop(child: subprocess.Popen[str]) -> None:
    """Kill a child a failed test left running."""
    if child.poll() is None:
        child.kill()
        child.communicate()


def feed(fd: int, data: bytes) -> None:
    with os.fdopen(fd, "wb") as writer:
        writer.write(data)


# Entry types, metadata, xattrs


def full_layer() -> list[Entry]:
    return [
        directory("./", mode=0o755, mtime=DIRECTORY_MTIME),
        directory("usr", mtime=DIRECTORY_MTIME),
        directory("usr/bin", mode=0o750, uid=10, gid=20, mtime=DIRECTORY_MTIME),
        entry("usr/bin/su", data=b"\x7fELF su", mode=0o4755),
        entry("usr/bin/ping", data=b"\x7fELF ping", mode=0o755, xattrs={"security.capability": CAPABILITY}),
        entry("usr/bin/tool", data=b"tool", mode=0o2750, uid=1234, gid=5678,
              xattrs={"user.test": b"hello", "user.binary": b"\xff\x00\xfe"}),
        symlink("usr/bin/sh", "/bin/busybox", uid=1000, gid=1001, mtime=MTIME + 1),
        hardlink("usr/bin/su-again", "usr/bin/su"),
        symlink("lib", "usr/lib"),
        directory("tmp", mode=0o1777),
        entry("dev/null", tarfile.CHRTYPE, mode=0o666, device=(1, 3)),
        entry("dev/loop0", tarfile.BLKTYPE, mode=0o660, gid=6, device=(7, 0)),
        entry("run/fifo", tarfile.FIFOTYPE, mode=0o620),
        entry("big", data=bytes(range(256)) * 12_289, mode=0o600, uid=7),
        entry("caf\udce9", data=b"latin-1 name"),
        entry("./etc/../opt/./normal", data=b"normalised"),
    ]


@pytest.mark.parametrize("compression", [None, "gzip", "zstd"])
def test_every_entry_type_with_its_metadata(env: Env, compression: str | None) -> None:
    layer = env.layer(full_layer(), compression)
    root = env.unpack(layer)

    assert root == env.store / layer.diff_id.removeprefix("sha256:")
    assert env.store_entries() == [root.name]
    assert sorted(os.listdir(os.fsencode(root))) == sorted([b"usr", b"lib", b"tmp", b"dev", b"run", b"big",
                                                            b"caf\xe9", b"opt"])

    def mode_owner(path: str) -> tuple[int, int, int]:
        info = (root / path).lstat()
        return info.st_mode, info.st_uid, info.st_gid

    assert mode_owner(".") == (stat.S_IFDIR | 0o755, 0, 0)
    assert mode_owner("usr/bin") == (stat.S_IFDIR | 0o750, 10, 20)
    assert mode_owner("usr/bin/su") == (stat.S_IFREG | 0o4755, 0, 0)
    assert mode_owner("usr/bin/tool") == (stat.S_IFREG | 0o2750, 1234, 5678)
    assert mode_owner("usr/bin/sh") == (stat.S_IFLNK | 0o777, 1000, 1001)
    assert mode_owner("tmp") == (stat.S_IFDIR | 0o1777, 0, 0)
    assert mode_owner("dev/null") == (stat.S_IFCHR | 0o666, 0, 0)
    assert mode_owner("dev/loop0") == (stat.S_IFBLK | 0o660, 0, 6)
    assert mode_owner("run/fifo") == (stat.S_IFIFO | 0o620, 0, 0)
    assert mode_owner("big") == (stat.S_IFREG | 0o600, 7, 0)
    assert mode_owner("dev") == (stat.S_IFDIR | 0o755, 0, 0)  # a parent the tar left out

    assert (root / "usr/bin/su").read_bytes() == b"\x7fELF su"
    assert (root / "big").read_bytes() == bytes(range(256)) * 12_289
    assert Path(os.fsdecode(bytes(root) + b"/caf\xe9")).read_bytes() == b"latin-1 name"
    assert (root / "opt/normal").read_bytes() == b"normalised"
    assert os.readlink(root / "usr/bin/sh") == "/bin/busybox"
    assert os.readlink(root / "lib") == "usr/lib"
    assert (root / "usr/bin/su-again").stat().st_ino == (root / "usr/bin/su").stat().st_ino
    assert (root / "usr/bin/su").stat().st_nlink == 2
    assert os.major((root / "dev/null").lstat().st_rdev) == 1 and os.minor((root / "dev/null").lstat().st_rdev) == 3
    assert (root / "dev/loop0").lstat().st_rdev == os.makedev(7, 0)

    assert os.getxattr(root / "usr/bin/ping", "security.capability") == CAPABILITY
    assert os.getxattr(root / "usr/bin/tool", "user.test") == b"hello"
    assert os.getxattr(root / "usr/bin/tool", "user.binary") == b"\xff\x00\xfe"

    assert (root / "usr/bin/su").lstat().st_mtime == MTIME
    assert (root / "usr/bin/sh").lstat().st_mtime == MTIME + 1
    for path in (".", "usr", "usr/bin"):  # set after their children were made
        assert (root / path).lstat().st_mtime == DIRECTORY_MTIME, path


# Whiteouts, as overlayfs reads them


def test_whiteouts_hide_lower_entries_in_an_overlay(env: Env, tmp_path: Path) -> None:
    lower = env.unpack(env.layer([
        entry("keep", data=b"lower"), entry("gone", data=b"lower"),
        directory("dir"), entry("dir/a"), entry("dir/b"),
        directory("other"), entry("other/c"),
    ], name="lower"))
    upper = env.unpack(env.layer([
        entry(".wh.gone"),
        directory("dir"), entry("dir/.wh..wh..opq"), entry("dir/new"),
        entry("other/.wh..wh..opq"),  # the tar lists no "other/": made for the marker
        entry(".wh..wh.plnk"),  # aufs bookkeeping: skipped
        directory(".wh..wh.orph"),
    ], "gzip", name="upper"))

    assert sorted(os.listdir(upper)) == ["dir", "gone", "other"]
    gone = (upper / "gone").lstat()
    assert stat.S_ISCHR(gone.st_mode) and gone.st_rdev == os.makedev(0, 0)
    assert os.getxattr(upper / "dir", "trusted.overlay.opaque") == b"y"
    assert os.getxattr(upper / "other", "trusted.overlay.opaque") == b"y"
    assert os.listdir(upper / "other") == []

    merged = tmp_path / "merged"
    merged.mkdir()
    script = 'mount -t overlay rc-test-layers -o "lowerdir=$0:$1" "$2" && cd "$2" && find . -mindepth 1 | sort'
    listing = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script,
                              str(upper), str(lower), str(merged)], capture_output=True, text=True, check=True,
                             timeout=CHILD_TIMEOUT).stdout.split()
    assert listing == ["./dir", "./dir/new", "./keep", "./other"]
    assert os.listdir(merged) == []  # the mount went with its namespace
    merged.rmdir()


# A later entry replaces an earlier one


def test_later_entries_replace_earlier_ones(env: Env) -> None:
    root = env.unpack(env.layer([
        entry("file", data=b"old"), entry("file", data=b"new", mode=0o640),
        entry("file-then-dir", data=b"x"), directory("file-then-dir"), entry("file-then-dir/child"),
        directory("dir-then-file"), directory("dir-then-file/deep"), entry("dir-then-file/deep/x"),
        entry("dir-then-file", data=b"file now"),
        symlink("link-then-dir", "file"), directory("link-then-dir", mode=0o700),
        directory("dir-twice", mode=0o700), entry("dir-twice/kept"), directory("dir-twice", mode=0o755, uid=7),
        entry("file-then-link", data=b"x"), symlink("file-then-link", "file"),
        entry("whited", data=b"x"), entry(".wh.whited"),
        entry("target", data=b"t"), entry("file-then-hardlink", data=b"x"), hardlink("file-then-hardlink", "target"),
    ]))

    assert (root / "file").read_bytes() == b"new"
    assert stat.S_IMODE((root / "file").stat().st_mode) == 0o640
    assert os.listdir(root / "file-then-dir") == ["child"]
    assert (root / "dir-then-file").read_bytes() == b"file now"
    assert (root / "link-then-dir").lstat().st_mode == stat.S_IFDIR | 0o700
    assert os.listdir(root / "dir-twice") == ["kept"]
    assert ((root / "dir-twice").stat().st_mode, (root / "dir-twice").stat().st_uid) == (stat.S_IFDIR | 0o755, 7)
    assert os.readlink(root / "file-then-link") == "file"
    assert stat.S_ISCHR((root / "whited").lstat().st_mode)
    assert (root / "file-then-hardlink").stat().st_ino == (root / "target").stat().st_ino


# Entries that try to leave the layer


@dataclass(frozen=True)
class Escape:
    entries: list[Entry]
    error: str | None  # what the LayerError says after "layer sha256:<12 hex>: ", or None: unpacked
    inside: dict[str, bytes | str] | None = None  # unpacked: path in the layer -> content (a str: a symlink's)


def escapes(canary: Path) -> dict[str, Escape]:
    outside_layer = "points outside the layer: the image is broken or hostile"
    return {
        "dotdot": Escape([entry("../x", data=b"pwned")], f"the name '../x' in it {outside_layer}"),
        "dotdot-inside": Escape([entry("a/../../x", data=b"pwned")], f"the name 'a/../../x' in it {outside_layer}"),
        "dotdot-directory": Escape([directory("../../canary", mode=0o777)],
                                   f"the name '../../canary' in it {outside_layer}"),
        "absolute-name": Escape([entry(f"/{PROBE}/x", data=b"inside")], None, {f"{PROBE}/x": b"inside"}),
        "symlink-to-host-directory": Escape(
            [symlink("evil", str(canary)), entry("evil/pwned", data=b"pwned")],
            "'evil' in it is a symlink to nothing in the layer, and entries are to be unpacked through it: "
            "the image is broken"),
        "absolute-symlink-means-the-layer": Escape(  # the canary's path, as the layer has it too
            [directory(str(canary).lstrip("/")), symlink("evil", str(canary)), entry("evil/file", data=b"inside")],
            None, {f"{str(canary).lstrip('/')}/file": b"inside", "evil": str(canary)}),
        "symlink-up": Escape([symlink("up", "../.."), entry("up/x", data=b"inside")], None,
                             {"x": b"inside", "up": "../.."}),
        "symlink-up-to-canary": Escape(
            [symlink("c", "../../canary"), entry("c/pwned", data=b"pwned")],
            "'c' in it is a symlink to nothing in the layer, and entries are to be unpacked through it: "
            "the image is broken"),
        "hardlink-to-host-file": Escape(
            [hardlink("h", "/etc/hostname")],
            "its entry 'h' is a hardlink to '/etc/hostname', which is not a regular file earlier in the layer: "
            "the image is broken or hostile"),
        "hardlink-dotdot": Escape([hardlink("h", "../../canary/file")],
                                  f"the name '../../canary/file' in it {outside_layer}"),
        "hardlink-through-symlink": Escape(
            [symlink("d", str(canary)), hardlink("h", "d/file")],
            "its entry 'h' is a hardlink to 'd/file', which is not a regular file earlier in the layer: "
            "the image is broken or hostile"),
        "hardlink-through-symlink-up": Escape(
            [symlink("d", "../../canary"), hardlink("h", "d/file")],
            "its entry 'h' is a hardlink to 'd/file', which is not a regular file earlier in the layer: "
            "the image is broken or hostile"),
        "hardlink-to-symlink": Escape(
            [symlink("s", str(canary / "file")), hardlink("h", "s")],
            "its entry 'h' is a hardlink to 's', which is not a regular file earlier in the layer: "
            "the image is broken or hostile"),
        "symlink-then-file-of-that-name": Escape(
            [symlink("f", str(canary / "file")), entry("f", data=b"replaced", mode=0o4777, uid=4242)],
            None, {"f": b"replaced"}),
        "symlink-then-directory-of-that-name": Escape(
            [symlink("d", str(canary)), directory("d", mode=0o777, uid=4242), entry("d/x", data=b"inside")],
            None, {"d/x": b"inside"}),
        "symlink-then-device-of-that-name": Escape(
            [symlink("n", str(canary / "file")), entry("n", tarfile.FIFOTYPE, mode=0o666)], None, {}),
        "whiteout-through-symlink": Escape(
            [symlink("w", str(canary)), entry("w/.wh.file")],
            "'w' in it is a symlink to nothing in the layer, and entries are to be unpacked through it: "
            "the image is broken"),
        "opaque-through-symlink": Escape(
            [symlink("w", "../../canary"), entry("w/.wh..wh..opq")],
            "'w' in it is a symlink to nothing in the layer, and entries are to be unpacked through it: "
            "the image is broken"),
        "nul-in-name": Escape([entry("a", data=b"x", pax={"path": "a\0b"})],
                              "the name 'a\\x00b' in it has a NUL byte: the image is broken or hostile"),
        "nul-in-symlink-target": Escape(
            [symlink("s", "x", pax={"linkpath": "/etc\0x"})],
            "its symlink 's' has a NUL byte in its target: the image is broken or hostile"),
    }


@pytest.mark.parametrize("case", sorted(escapes(Path("/canary"))))
def test_nothing_leaves_the_layer(env: Env, case: str) -> None:
    escape = escapes(env.canary)[case]
    layer = env.layer(escape.entries)
    prefix = f"layer {layer.diff_id[:19]}: "
    if escape.error is not None:
        with pytest.raises(LayerError) as caught:
            env.unpack(layer)
        assert str(caught.value) == prefix + escape.error
        assert env.store_entries() == []
        return
    root = env.unpack(layer)
    assert escape.inside is not None
    for path, expected in escape.inside.items():
        target = root / path
        assert (os.readlink(target) if isinstance(expected, str) else target.read_bytes()) == expected, path
    assert env.store_entries() == [root.name]
    # the env fixture checks the canary, the host files and /<PROBE>


# Bad layers leave nothing behind


def test_diff_id_mismatch_is_refused(env: Env) -> None:
    layer = env.layer([entry("file", data=b"x")], "gzip")
    claimed = diff_id_of(b"another layer")
    with pytest.raises(LayerError) as caught:
        unpack_file(layer.blob, layer.media_type, claimed, env.store)
    assert str(caught.value) == (
        f"layer {claimed[:19]}: its content does not match its diff_id (the uncompressed tar is {layer.diff_id}): "
        "the blob is corrupt or belongs to another layer; pull the image again")
    assert env.store_entries() == []


def test_diff_id_covers_what_follows_the_end_marker(env: Env) -> None:
    """tarfile stops at the end marker; the digest must still cover the padding after it (here
    more than one read of it), or every valid layer padded so would be refused."""
    tar = tar_bytes([entry("file", data=b"x")]) + bytes(200_000)
    blob = env.root / "blobs" / "padded"
    blob.write_bytes(gzip.compress(tar))
    root = unpack_file(blob, f"{TAR}+gzip", diff_id_of(tar), env.store)
    assert (root / "file").read_bytes() == b"x"


@pytest.mark.parametrize("compression", ["gzip", "zstd", None])
def test_truncated_blob_is_refused(env: Env, compression: str | None) -> None:
    layer = env.layer([entry("a", data=os.urandom(100_000)), entry("b", data=b"x")], compression)
    blob = layer.blob.read_bytes()
    layer.blob.write_bytes(blob[:len(blob) // 2])
    with pytest.raises(LayerError) as caught:
        env.unpack(layer)
    if compression is None:
        assert str(caught.value).endswith(": it is not a valid tar archive (unexpected end of data): "
                                          "pull the image again")
    else:
        assert f"its {compression} data is truncated or corrupt (" in str(caught.value)
    assert env.store_entries() == []


@pytest.mark.parametrize("blob, error", [
    (b"\x1f\x8b\x08\x00" + b"\xff" * 4000, "its gzip data is truncated or corrupt ("),
    (gzip.compress(b"not a tar, " * 1000, mtime=0),
     "it is not a valid tar archive (invalid header): pull the image again"),
], ids=["gzip-garbage", "gzip-of-no-tar"])  # ids of their own: the blob's bytes named the test (and its mtime)
def test_corrupt_blob_is_refused(env: Env, blob: bytes, error: str) -> None:
    layer = env.layer([])
    layer.blob.write_bytes(blob)
    with pytest.raises(LayerError) as caught:
        unpack_file(layer.blob, f"{TAR}+gzip", diff_id_of(b""), env.store)
    assert error in str(caught.value)
    assert env.store_entries() == []


def test_bad_media_type_and_diff_id_are_refused(env: Env) -> None:
    layer = env.layer([entry("file")])
    with pytest.raises(LayerError) as caught:
        unpack_file(layer.blob, "application/vnd.oci.image.layer.v1.tar+bzip2", layer.diff_id, env.store)
    assert str(caught.value) == (f"layer {layer.diff_id[:19]}: media type "
                                 "'application/vnd.oci.image.layer.v1.tar+bzip2' is not a layer format reconcile "
                                 "can unpack (tar, tar+gzip or tar+zstd)")
    for diff_id in ("sha256:../../etc", "sha512:" + "0" * 64, layer.diff_id.upper(), layer.diff_id + "0", ""):
        with pytest.raises(LayerError) as caught:
            layer_path(env.store, diff_id)
        assert str(caught.value) == (f"diff_id {diff_id!r} is not sha256:<64 lowercase hex digits>: "
                                     "the image config is malformed")
    assert env.store_entries() == []


DEEP = 1200
"""Directory levels past Python's recursion limit (a recursive walk of them fails)."""


def test_a_tree_deeper_than_the_recursion_limit_unpacks_and_goes(env: Env) -> None:
    """A file 1,200 directories down with its parents left out: made in a loop, and the layer
    removed whole when refused (its diff_id here), with nothing left in the store and no lock
    held (remove_temporaries then has nothing to do)."""
    deep = "/".join(["a"] * DEEP)
    layer = env.layer([entry(f"{deep}/file", data=b"x")], "gzip")
    with pytest.raises(LayerError) as caught:
        unpack_file(layer.blob, layer.media_type, diff_id_of(b"another layer"), env.store)
    assert "its content does not match its diff_id" in str(caught.value)
    assert env.store_entries() == []
    root = env.unpack(layer)
    assert (root / deep / "file").read_bytes() == b"x"
    remove_tree(root)  # not left to pytest's clean-up, which recurses


def test_extended_headers_past_a_mebibyte_are_refused(env: Env) -> None:
    """tarfile reads a PAX header whole: a few KiB of compressed layer could ask for gigabytes."""
    layer = env.layer([entry("file", data=b"x", pax={"comment": "A" * (2 << 20)})], "gzip")
    with pytest.raises(LayerError) as caught:
        env.unpack(layer)
    assert "it is not a valid tar archive (an extended header of " in str(caught.value)
    assert env.store_entries() == []


def test_a_sparse_file_is_refused(env: Env) -> None:
    """Its holes would be written out as zeroes: a 10 KiB tar could fill the disk."""
    sparse = {"GNU.sparse.map": "0,0", "GNU.sparse.size": str(1 << 40), "GNU.sparse.name": "big"}
    layer = env.layer([entry("big", pax=sparse)])
    with pytest.raises(LayerError) as caught:
        env.unpack(layer)
    assert str(caught.value) == (f"layer {layer.diff_id[:19]}: its entry 'big' is a sparse file, which reconcile "
                                 "does not unpack: rebuild the image without sparse files")
    assert env.store_entries() == []


def test_no_space_left_is_refused_and_leaves_nothing(env: Env) -> None:
    """In a private mount namespace, a 1 MiB tmpfs over the store: a 4 MiB file cannot fit."""
    layer = env.layer([entry("small", data=b"x"), entry("huge", data=bytes(4 << 20))], "gzip")
    mount_tmpfs = 'mount -t tmpfs -o size=1m rc-test-layers "$0" && exec "$@"'
    result = run_child(layer, env.store, wrapper=("unshare", "--mount", "--propagation", "private", "sh", "-c",
                                                  mount_tmpfs, str(env.store)))
    assert result == {"error": f"layer {layer.diff_id[:19]}: cannot unpack 'huge': No space left on device",
                      "left": []}
    assert env.store_entries() == []


# Once per layer, and concurrent unpacks


def test_an_unpacked_layer_is_returned_at_once(env: Env) -> None:
    layer = env.layer([entry("file", data=b"x")])
    root = env.unpack(layer)
    inode = root.stat().st_ino
    assert unpack_layer(io.BytesIO(), layer.media_type, layer.diff_id, env.store) == root  # never read
    assert root.stat().st_ino == inode
    assert env.store_entries() == [root.name]


def test_concurrent_unpacks_of_one_layer_both_succeed(env: Env) -> None:
    """Two processes, each reading the layer from a FIFO: both are past the existence check (they
    opened their blob) before either has any data, so the second to finish finds the layer placed
    by the first and must give up its own copy."""
    content = os.urandom(300_000)
    layer = env.layer([directory("d"), entry("d/file", data=content), symlink("l", "d/file")])
    fifos = [env.root / "blobs" / f"fifo-{n}" for n in range(2)]
    for fifo in fifos:
        os.mkfifo(fifo)
    children = [spawn_child(layer, env.store, fifo) for fifo in fifos]
    try:
        writers = [open_fifo_writer(fifo, child) for fifo, child in zip(fifos, children)]
        # Each child blocks in its first read of the blob, past the existence check, holding a temporary.
        eventually(lambda: len([name for name in env.store_entries() if name.startswith(".tmp-")]), 2,
                   timeout=CHILD_TIMEOUT)
        results = []
        for writer, child in zip(writers, children):
            feed(writer, layer.tar)
            results.append(child_result(child))
    finally:
        for child in children:
            stop(child)
        for fifo in fifos:
            fifo.unlink()
    final = layer_path(env.store, layer.diff_id)
    assert results == [{"path": str(final)}] * 2
    assert env.store_entries() == [final.name]
    assert (final / "d" / "file").read_bytes() == content
    assert os.readlink(final / "l") == "d/file"


def test_remove_temporaries_spares_running_unpacks(env: Env) -> None:
    """Leftovers of killed unpacks go; the locked temporary of a running one (in another
    process, blocked reading its blob from a FIFO) and everything else in the store stay."""
    placed = env.unpack(env.layer([entry("file")], name="placed"))
    leftover = env.store / ".tmp-0123456789ab-999999-dead"
    (leftover / "sub").mkdir(parents=True)
    (leftover / "sub" / "file").write_text("half")
    (leftover / "sub").chmod(0o500)
    (env.store / "tmp-not-ours").write_text("foreign")
    running = env.layer([entry("file", data=b"running")], name="running")
    fifo = env.root / "blobs" / "fifo"
    os.mkfifo(fifo)
    child = spawn_child(running, env.store, fifo)
    try:
        writer = open_fifo_writer(fifo, child)
        eventually(lambda: len([name for name in env.store_entries() if name.startswith(".tmp-")]), 2,
                   timeout=CHILD_TIMEOUT)
        live = [name for name in env.store_entries() if name.startswith(".tmp-") and name != leftover.name]

        remove_temporaries(env.store)

        assert env.store_entries() == sorted([placed.name, "tmp-not-ours", *live])
        feed(writer, running.tar)
        assert child_result(child) == {"path": str(layer_path(env.store, running.diff_id))}
    finally:
        stop(child)
        fifo.unlink()
    remove_temporaries(env.store)
    assert env.store_entries() == sorted([placed.name, layer_path(env.store, running.diff_id).name, "tmp-not-ours"])
    (env.store / "tmp-not-ours").unlink()


def test_the_cleaner_spares_an_unpack_placed_between_its_open_and_its_flock(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unpack renames its temporary into place, then lets its flock go: a cleaner that
    opened the temporary just before gets the flock of what is now a live layer."""
    temporary = tmp_path / f"{TEMPORARY_PREFIX}0123456789ab-1-x"
    (temporary / "etc").mkdir(parents=True)
    placed = tmp_path / ("0" * 64)
    flock = fcntl.flock

    def placing_first(fd: int, operation: int) -> None:
        if temporary.exists():
            os.rename(temporary, placed)
        flock(fd, operation)

    monkeypatch.setattr(kernel.layers.fcntl, "flock", placing_first)
    remove_temporaries(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [placed.name]
    assert (placed / "etc").is_dir()
