"""OCI images built offline for tests: deterministic layers from the host's busybox-static,
written as an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/`) that skopeo reads
as `oci:LAYOUT:TAG`, plus `skopeo` helpers that push it to a registry and export it.

Deterministic on purpose: every tar entry has mtime 0, uid/gid 0 unless told, no user or group
names, and entries are sorted (parents first); gzip headers carry mtime 0 and no file name; JSON
is written compactly in a fixed key order. The same inputs give the same digests, so a test can
pin a digest and a store keyed by diff_id sees a shared base layer as the same blob.

Every skopeo call runs in a private mount namespace with a tmpfs over `/var/lib`: skopeo run as
root otherwise creates `/var/lib/containers/cache/blob-info-cache-v1.boltdb` on the host (it has
no flag to move it), and tests leave nothing outside their tmp_path.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Literal

if TYPE_CHECKING:
    from tests.sandbox import Sandbox

HOST_BUSYBOX = Path("/bin/busybox")
"""busybox-static from Debian: one static binary, so an image of it runs without a libc."""

BUSYBOX_APPLETS = (
    "[", "awk", "basename", "cat", "chmod", "chown", "cp", "cut", "date", "dirname", "du", "echo",
    "env", "false", "find", "grep", "head", "hostname", "httpd", "id", "ip", "kill", "ln", "ls",
    "mkdir", "mount", "mv", "nc", "nslookup", "ping", "printf", "ps", "pwd", "readlink", "rm",
    "rmdir", "sed", "seq", "sh", "sleep", "sort", "stat", "tail", "tar", "tee", "test", "timeout",
    "touch", "tr", "true", "umount", "uname", "wc", "wget", "which", "whoami", "xargs", "yes",
)
"""Applets linked to /bin/busybox in `Layer.busybox()` (all present in Debian's busybox-static)."""

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
app:x:1000:1000:app:/home/app:/bin/sh
"""
GROUP = """\
root:x:0:
app:x:1000:
nogroup:x:65534:
"""

MEDIA_TYPE_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_TYPE_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_TYPE_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_TYPE_LAYER = {
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
    None: "application/vnd.oci.image.layer.v1.tar",
}
REF_NAME = "org.opencontainers.image.ref.name"
CREATED = "1970-01-01T00:00:00Z"
"""`created` of every config: a constant, for stable digests."""

GZIP_LEVEL = 6
"""What Go's gzip (and so skopeo, docker) uses by default."""
ZSTD_LEVEL = 3
"""zstd's default level."""

RANDOM_BLOCK = 1 << 20
"""Random content is produced in blocks of this size, so it does not depend on read sizes."""

Compression = Literal["gzip", "zstd"] | None


@dataclass(frozen=True)
class RandomBytes:
    """`size` bytes of seeded pseudo-random content: incompressible, so a layer of it is as big
    compressed as the number says, and the same seed gives the same bytes."""

    size: int
    seed: int = 0

    def reader(self) -> BinaryIO:
        """A reader that returns exactly what is asked (tarfile treats a short read as EOF)."""
        return io.BufferedReader(_RandomReader(self.size, self.seed), RANDOM_BLOCK)


class _RandomReader(io.RawIOBase):
    def __init__(self, size: int, seed: int):
        self._left = size
        self._rng = random.Random(seed)
        self._block = memoryview(b"")
        self._offset = 0

    def readable(self) -> bool:
        return True

    def readinto(self, target: bytearray | memoryview) -> int:  # type: ignore[override]
        if self._left <= 0:
            return 0
        if self._offset == len(self._block):
            self._block, self._offset = memoryview(self._rng.randbytes(RANDOM_BLOCK)), 0
        count = min(len(target), len(self._block) - self._offset, self._left)
        target[:count] = self._block[self._offset:self._offset + count]
        self._offset += count
        self._left -= count
        return count


Content = bytes | str | RandomBytes


@dataclass
class Layer:
    """One layer's changeset. Paths may start with `/`; they are stored relative (`bin/sh`).

    files: path -> content (str is UTF-8), mode 0644 unless `modes` says otherwise.
    symlinks: path -> target, as written (relative or absolute).
    hardlinks: path -> path of a file in this same layer.
    directories: path -> mode (parents of other entries are added as 0755 when not listed).
    modes / owners: per path (any entry kind): permission bits, (uid, gid).
    whiteouts: paths deleted from lower layers (`dir/.wh.name`).
    opaque: directories whose lower content is hidden (`dir/.wh..wh..opq`).
    """

    files: Mapping[str, Content] = field(default_factory=dict)
    symlinks: Mapping[str, str] = field(default_factory=dict)
    hardlinks: Mapping[str, str] = field(default_factory=dict)
    directories: Mapping[str, int] = field(default_factory=dict)
    modes: Mapping[str, int] = field(default_factory=dict)
    owners: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    whiteouts: list[str] = field(default_factory=list)
    opaque: list[str] = field(default_factory=list)

    @classmethod
    def busybox(cls) -> Layer:
        """A base layer: /bin/busybox with applet symlinks, /etc/passwd and /etc/group (root,
        nobody 65534, app 1000:1000), /root, /home/app (owned by app), /tmp (1777), and empty
        /proc, /sys, /dev to mount over."""
        return cls(
            files={"/bin/busybox": HOST_BUSYBOX.read_bytes(), "/etc/passwd": PASSWD, "/etc/group": GROUP},
            symlinks={f"/bin/{applet}": "busybox" for applet in BUSYBOX_APPLETS},
            directories={"/tmp": 0o1777, "/proc": 0o555, "/sys": 0o555, "/dev": 0o755,
                         "/root": 0o700, "/home/app": 0o755, "/etc": 0o755, "/bin": 0o755},
            modes={"/bin/busybox": 0o755},
            owners={"/home/app": (1000, 1000)},
        )

    @classmethod
    def random(cls, size_bytes: int, path: str = "/data/random.bin", seed: int = 0) -> Layer:
        """One file of `size_bytes` seeded random bytes: a big layer for pull and bench tests."""
        return cls(files={path: RandomBytes(size_bytes, seed)})


@dataclass(frozen=True)
class BuiltImage:
    """An image written into an OCI layout. `size` is the manifest's byte length (what a
    descriptor of it carries); `layer_sizes` are the compressed blob sizes."""

    layout: Path
    tag: str | None
    manifest_digest: str
    config_digest: str
    diff_ids: list[str]
    layer_digests: list[str]
    layer_sizes: list[int]
    size: int
    media_type: str = MEDIA_TYPE_MANIFEST
    platform: Mapping[str, str] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        """The skopeo source name: `oci:LAYOUT:TAG`."""
        if self.tag is None:
            raise ValueError("an untagged image has no oci: reference; tag it or put it in an index")
        return f"oci:{self.layout}:{self.tag}"

    def blob(self, digest: str) -> bytes:
        return blob_path(self.layout, digest).read_bytes()

    @property
    def manifest(self) -> dict:
        return json.loads(self.blob(self.manifest_digest))

    @property
    def config(self) -> dict:
        return json.loads(self.blob(self.config_digest))


def build(path: Path, layers: Sequence[Layer], *, entrypoint: Sequence[str] | None = None,
          cmd: Sequence[str] | None = None, env: Mapping[str, str] | Sequence[str] | None = None,
          workdir: str | None = None, user: str | None = None,
          exposed_ports: Iterable[str | int] | None = None, labels: Mapping[str, str] | None = None,
          architecture: str = "amd64", variant: str | None = None, compression: Compression = "gzip",
          tag: str | None = "latest", bad_diff_id: bool = False,
          healthcheck: Mapping[str, object] | None = None, stop_signal: str | None = None) -> BuiltImage:
    """Write an image into the OCI layout at `path` (created, or added to: blobs are shared and
    an existing entry with the same tag is replaced). `tag=None` writes the blobs only (for an
    index). An exposed port without a protocol is tcp. `bad_diff_id` puts a wrong first diff_id
    in the config: manifest and blob digests stay valid, so registries and skopeo accept it."""
    _init_layout(path)
    written = [_write_layer(path, layer, compression) for layer in layers]
    diff_ids = [diff_id for diff_id, _, _ in written]
    config_diff_ids = list(diff_ids)
    if bad_diff_id:
        if not config_diff_ids:
            raise ValueError("bad_diff_id needs at least one layer")
        config_diff_ids[0] = _sha256(b"not the content of this layer")
    container_config = _container_config(entrypoint, cmd, env, workdir, user, exposed_ports, labels)
    if healthcheck is not None:  # Docker's form: {"Test": [...], "Interval": nanoseconds, ...}
        container_config["Healthcheck"] = dict(healthcheck)
    if stop_signal is not None:  # Dockerfile's STOPSIGNAL, as written
        container_config["StopSignal"] = stop_signal
    platform = {"architecture": architecture, "os": "linux", **({"variant": variant} if variant else {})}
    config = {
        "created": CREATED, **platform, "config": container_config,
        "rootfs": {"type": "layers", "diff_ids": config_diff_ids},
        "history": [{"created": CREATED, "created_by": f"tests.image_builder layer {i}"} for i in range(len(layers))],
    }
    config_digest, config_size = _write_blob(path, _json_bytes(config))
    manifest = {
        "schemaVersion": 2, "mediaType": MEDIA_TYPE_MANIFEST,
        "config": {"mediaType": MEDIA_TYPE_CONFIG, "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": MEDIA_TYPE_LAYER[compression], "digest": digest, "size": size}
                   for _, digest, size in written],
    }
    manifest_digest, manifest_size = _write_blob(path, _json_bytes(manifest))
    if tag is not None:
        _tag(path, tag, {"mediaType": MEDIA_TYPE_MANIFEST, "digest": manifest_digest, "size": manifest_size})
    return BuiltImage(layout=path, tag=tag, manifest_digest=manifest_digest, config_digest=config_digest,
                      diff_ids=diff_ids, layer_digests=[d for _, d, _ in written],
                      layer_sizes=[s for _, _, s in written], size=manifest_size, platform=platform)


def build_index(path: Path, images_by_platform: Mapping[str, BuiltImage], *,
                tag: str = "latest") -> BuiltImage:
    """An OCI image index (multi-arch) over images already built into the layout at `path`.
    Keys are `os/architecture[/variant]` as written into the index (they may disagree with
    the images' configs, for tests of a lying index). The result's config/layer fields are
    empty: an index has none."""
    manifests = []
    for platform_name, image in images_by_platform.items():
        if image.layout != path:
            raise ValueError(f"{platform_name}: image was built into {image.layout}, not {path}")
        os_name, architecture, *variant = platform_name.split("/")
        platform = {"architecture": architecture, "os": os_name, **({"variant": variant[0]} if variant else {})}
        manifests.append({"mediaType": image.media_type, "digest": image.manifest_digest,
                          "size": image.size, "platform": platform})
    index = {"schemaVersion": 2, "mediaType": MEDIA_TYPE_INDEX, "manifests": manifests}
    digest, size = _write_blob(path, _json_bytes(index))
    _tag(path, tag, {"mediaType": MEDIA_TYPE_INDEX, "digest": digest, "size": size})
    return BuiltImage(layout=path, tag=tag, manifest_digest=digest, config_digest="", diff_ids=[],
                      layer_digests=[], layer_sizes=[], size=size, media_type=MEDIA_TYPE_INDEX)


def blob_path(layout: Path, digest: str) -> Path:
    algorithm, hexdigest = digest.split(":", 1)
    return layout / "blobs" / algorithm / hexdigest


def skopeo(*args: str, sandbox: Sandbox | None = None, tmpdir: Path | None = None, check: bool = True,
           timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run skopeo (inside the sandbox's namespaces when given, to reach its loopback registry)
    with its blob-info cache on a throwaway tmpfs and its temporary files in `tmpdir` (the
    sandbox's workdir by default; /var/tmp otherwise)."""
    tmpdir = tmpdir or (sandbox.workdir if sandbox else None)
    flags = ["--tmpdir", str(tmpdir)] if tmpdir else []
    cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
           'mount -t tmpfs -o mode=755,size=64m skopeo-cache /var/lib && exec skopeo "$@"', "skopeo",
           *flags, *args]
    if sandbox is not None:
        return sandbox.run(*cmd, check=check, timeout=timeout)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"skopeo {args} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def push(image_layout_ref: str | BuiltImage, registry_address: str, repo_tag: str, sandbox: Sandbox, *,
         multi_arch: Literal["all", "system", "index-only"] = "all") -> str:
    """Push an image (`oci:LAYOUT:TAG`, or any skopeo source name, or a BuiltImage) to
    `docker://ADDRESS/REPO:TAG` over plain HTTP from inside the sandbox; the pushed manifest's
    digest as skopeo reports it (of the index, for an index with multi_arch="all")."""
    source = image_layout_ref.ref if isinstance(image_layout_ref, BuiltImage) else image_layout_ref
    handle, name = tempfile.mkstemp(prefix="push-", suffix=".digest", dir=sandbox.workdir)
    os.close(handle)
    digest_file = Path(name)
    skopeo("copy", "--dest-tls-verify=false", f"--multi-arch={multi_arch}", "--digestfile", str(digest_file),
           source, f"docker://{registry_address}/{repo_tag}", sandbox=sandbox)
    digest = digest_file.read_text().strip()
    digest_file.unlink()
    return digest


def docker_archive(layout: Path, tag: str, file: Path, *, reference: str | None = None) -> Path:
    """`skopeo copy oci:LAYOUT:TAG docker-archive:FILE:REFERENCE` (reference `fixture:TAG` by
    default). A docker archive holds uncompressed layers: diff_ids survive, layer and manifest
    digests do not."""
    skopeo("copy", f"oci:{layout}:{tag}", f"docker-archive:{file}:{reference or f'fixture:{tag}'}",
           tmpdir=file.parent)
    return file


def layout_manifest(layout: Path, tag: str) -> dict:
    """The manifest (or index) tagged `tag` in an OCI layout, parsed (e.g. one skopeo wrote)."""
    index = json.loads((layout / "index.json").read_text())
    for descriptor in index["manifests"]:
        if descriptor.get("annotations", {}).get(REF_NAME) == tag:
            return json.loads(blob_path(layout, descriptor["digest"]).read_bytes())
    raise KeyError(f"no {tag!r} in {layout}/index.json")


def layer_entries(layout: Path, digest: str) -> list[tarfile.TarInfo]:
    """The tar headers of a layer blob (gzip, zstd or plain), in archive order."""
    with _open_layer(blob_path(layout, digest)) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
        return list(tar)


def _open_layer(blob: Path) -> BinaryIO:
    with blob.open("rb") as head:
        magic = head.read(4)
    if magic[:2] == b"\x1f\x8b":
        return gzip.open(blob, "rb")  # type: ignore[return-value]
    if magic == b"\x28\xb5\x2f\xfd":
        return io.BytesIO(subprocess.run(["zstd", "-dcq", str(blob)], check=True, capture_output=True).stdout)
    return blob.open("rb")


# -- writing --------------------------------------------------------------------------------

def _container_config(entrypoint: Sequence[str] | None, cmd: Sequence[str] | None,
                      env: Mapping[str, str] | Sequence[str] | None, workdir: str | None, user: str | None,
                      exposed_ports: Iterable[str | int] | None, labels: Mapping[str, str] | None) -> dict:
    """The config's `config` object, with only the keys given (an image without Env has none)."""
    container_config: dict[str, object] = {}
    if user is not None:
        container_config["User"] = user
    if exposed_ports is not None:
        container_config["ExposedPorts"] = {(p if "/" in str(p) else f"{p}/tcp"): {} for p in map(str, exposed_ports)}
    if env is not None:
        container_config["Env"] = [f"{k}={v}" for k, v in env.items()] if isinstance(env, Mapping) else list(env)
    if entrypoint is not None:
        container_config["Entrypoint"] = list(entrypoint)
    if cmd is not None:
        container_config["Cmd"] = list(cmd)
    if workdir is not None:
        container_config["WorkingDir"] = workdir
    if labels is not None:
        container_config["Labels"] = dict(labels)
    return container_config


def _init_layout(path: Path) -> None:
    (path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    if not (path / "index.json").exists():
        (path / "index.json").write_bytes(_json_bytes({"schemaVersion": 2, "manifests": []}))


def _tag(path: Path, tag: str, descriptor: dict) -> None:
    index = json.loads((path / "index.json").read_text())
    kept = [d for d in index["manifests"] if d.get("annotations", {}).get(REF_NAME) != tag]
    index["manifests"] = kept + [{**descriptor, "annotations": {REF_NAME: tag}}]
    (path / "index.json").write_bytes(_json_bytes(index))


def _json_bytes(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _write_blob(layout: Path, data: bytes) -> tuple[str, int]:
    digest = _sha256(data)
    target = blob_path(layout, digest)
    if not target.exists():
        temporary = target.with_name(f".tmp-{target.name}")
        temporary.write_bytes(data)
        temporary.replace(target)
    return digest, len(data)


class _HashingWriter:
    """A write-only file that hashes what passes through it."""

    def __init__(self, target: BinaryIO):
        self.target = target
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        return self.target.write(data)

    @property
    def digest(self) -> str:
        return "sha256:" + self.hash.hexdigest()


def _write_layer(layout: Path, layer: Layer, compression: Compression) -> tuple[str, str, int]:
    """(diff_id, blob digest, blob size): the tar goes to a temporary file (hashed on the way
    into the diff_id), then is compressed into the blob store."""
    blobs = layout / "blobs" / "sha256"
    tar_path = blobs / ".tmp-layer.tar"
    packed_path = blobs / ".tmp-layer.packed"
    try:
        with tar_path.open("wb") as raw:
            hashing = _HashingWriter(raw)
            _write_tar(hashing, layer)  # type: ignore[arg-type]
        diff_id = hashing.digest
        if compression is None:
            packed_path = tar_path
        elif compression == "gzip":
            with tar_path.open("rb") as source, packed_path.open("wb") as out, \
                    gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=GZIP_LEVEL) as packed:
                shutil.copyfileobj(source, packed, RANDOM_BLOCK)
        elif compression == "zstd":
            with tar_path.open("rb") as source, packed_path.open("wb") as out:
                subprocess.run(["zstd", "-q", f"-{ZSTD_LEVEL}", "--no-progress", "-c"], stdin=source,
                               stdout=out, check=True)
        else:
            raise ValueError(f"unknown compression {compression!r}")
        digest = _file_digest(packed_path)
        size = packed_path.stat().st_size
        packed_path.replace(blob_path(layout, digest))
        return diff_id, digest, size
    finally:
        for leftover in (tar_path, packed_path):
            leftover.unlink(missing_ok=True)


def _file_digest(path: Path) -> str:
    with path.open("rb") as source:
        return "sha256:" + hashlib.file_digest(source, "sha256").hexdigest()


def _relative(path: str) -> str:
    relative = os.path.normpath(path.lstrip("/"))
    if relative in (".", "") or relative.startswith(".."):
        raise ValueError(f"not a path inside the image: {path!r}")
    return relative


def _write_tar(out: BinaryIO, layer: Layer) -> None:
    """Sorted by path components, so a directory precedes what it holds; hard links last, after
    the files they point to."""
    modes = {_relative(path): mode for path, mode in layer.modes.items()}
    owners = {_relative(path): owner for path, owner in layer.owners.items()}
    entries: dict[str, tuple[tarfile.TarInfo, bytes | RandomBytes | None]] = {}

    def add(path: str, kind: bytes, content: Content | None = None, *, mode: int = 0o644,
            target: str = "") -> None:
        name = _relative(path)
        info = tarfile.TarInfo(name)
        info.type = kind
        info.mode = modes.get(name, mode)
        info.uid, info.gid = owners.get(name, (0, 0))
        info.uname = info.gname = ""
        info.mtime = 0
        info.linkname = target
        data = content.encode() if isinstance(content, str) else content
        if isinstance(data, RandomBytes):
            info.size = data.size
        elif data is not None:
            info.size = len(data)
        entries[name] = (info, data)

    for path, mode in layer.directories.items():
        add(path, tarfile.DIRTYPE, mode=mode)
    for path, content in layer.files.items():
        add(path, tarfile.REGTYPE, content)
    for path, target in layer.symlinks.items():
        add(path, tarfile.SYMTYPE, mode=0o777, target=target)
    for path, target in layer.hardlinks.items():
        add(path, tarfile.LNKTYPE, target=_relative(target))
    for path in layer.whiteouts:
        name = _relative(path)
        add(os.path.join(os.path.dirname(name), ".wh." + os.path.basename(name)), tarfile.REGTYPE, b"", mode=0)
    for path in layer.opaque:
        add(os.path.join(_relative(path), ".wh..wh..opq"), tarfile.REGTYPE, b"", mode=0)
    for name in list(entries):  # parents every unpacker expects before their children
        parent = os.path.dirname(name)
        while parent and parent not in entries:
            add(parent, tarfile.DIRTYPE, mode=0o755)
            parent = os.path.dirname(parent)

    order = sorted(entries, key=lambda name: (entries[name][0].type == tarfile.LNKTYPE, name.split("/")))
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for name in order:
            info, data = entries[name]
            if isinstance(data, RandomBytes):
                tar.addfile(info, data.reader())
            else:
                tar.addfile(info, io.BytesIO(data) if data is not None else None)
