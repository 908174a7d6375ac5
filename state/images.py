"""The image store: the manifests and configs of the images pulled, in one OCI image layout,
and their layers unpacked once each, keyed by diff_id, shared by every image that has them.

    <state-dir>/images/oci/          OCI image layout (index.json, blobs/sha256/...)
    <state-dir>/images/layers/<hex>  one directory per diff_id: an overlayfs lower, never written

An image is an entry of the layout's index.json carrying our annotations: the reference as
the user wrote it, normalised (`io.reconcile.reference`), and the digest of its manifest as the
source holds it (`io.reconcile.digest`: what the plan shows and a reference can pin). skopeo
(its image proxy) fetches; each layer is unpacked as it streams in (verified against its
diff_id, written to a temporary directory and renamed into place), several at once. A layer's
compressed blob is not kept once unpacked, as Docker and Podman do not keep it (the image
layout spec lets a layout lack blobs its manifests name): the disk holds each layer once. The
entry is added only once every layer is in place: a failed or interrupted pull leaves no image
and no partial layer, and never touches a running container's layers. The layout is the truth:
losing the state store loses nothing here.
A pull holds the image store's lock (state.lock.IMAGES_LOCK_NAME) shared, not the state dir's:
the watch agent repairs other keys while it pulls, and pulls run side by side; removals hold
both, the image store's exclusive (no pull is under way while anything is deleted). Beside
another pull, a pull writes blobs and `oci-layout` whole under their final names (a temporary
renamed: two writers of one blob write the same bytes), edits index.json under a short lock
of its own (INDEX_LOCK), and fetches a layer under a lock of the layer's (LOCKS_DIR): two
pulls of images sharing a layer fetch it once.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kernel import skopeo
from kernel.durable import write_durably
from kernel.layers import LAYER_MEDIA_TYPES, LayerError, layer_path, remove_temporaries, unpack_layer
from kernel.trees import remove_tree
from specs.images import ImageReference, ReferenceError, parse_reference, split_pinned
from specs.names import DIGEST_PATTERN
from state.lock import IMAGES_LOCK_NAME, Flock, flocked, shared

IMAGES_DIR = "images"
LAYOUT_DIR = "oci"
LAYERS_DIR = "layers"
REFERENCE_KEY = "io.reconcile.reference"
DIGEST_KEY = "io.reconcile.digest"
REF_NAME_KEY = "org.opencontainers.image.ref.name"
LOCAL_PREFIX = "local/"
TMP_DIR = "tmp"  # skopeo's temporary files: emptied by garbage collection
LOCKS_DIR = "locks"
"""A file per layer being fetched (<hex of its diff_id>), flock'ed by the pull fetching it;
emptied by garbage collection (no pull runs then)."""
INDEX_LOCK = "index.lock"
"""flock'ed around each read-modify-write of index.json: pulls edit it side by side."""
WRITE_TEMPORARY = ".writing-"
"""A file of the layout being written (index.json, a blob), renamed into place once whole."""
LAYOUT_MARKER = {"imageLayoutVersion": "1.0.0"}
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
PARALLEL_LAYERS = 4
"""Layers fetched and unpacked at once (`skopeo copy` fetches 6 blobs at once, Docker 3)."""
_OCI_REF_COMPONENT = r"[A-Za-z0-9]+(?:(?:[-._:@+]|--)[A-Za-z0-9]+)*"
_OCI_REF_NAME = re.compile(rf"{_OCI_REF_COMPONENT}(?:/{_OCI_REF_COMPONENT})*")
"""The OCI image layout's grammar of a ref name (a reference with other characters is hashed)."""


class ImageError(Exception):
    """An image that cannot be pulled, found or removed; the message names it."""


@dataclass(frozen=True)
class ImageConfig:
    """What the image says about running it (the config's `config` object)."""

    entrypoint: tuple[str, ...] | None
    cmd: tuple[str, ...] | None
    env: tuple[str, ...]
    workdir: str | None
    user: str | None
    exposed_ports: tuple[str, ...]
    healthcheck: Mapping[str, object] | None = None
    """Its HEALTHCHECK in the stack file's terms (test, interval in seconds, ...); None: none."""
    stop_signal: str | None = None
    """Its STOPSIGNAL as written (SIGQUIT, 3, ...): the engine reads it as the spec's `stop_signal`."""


@dataclass(frozen=True)
class Layer:
    digest: str
    media_type: str
    size: int
    diff_id: str


@dataclass(frozen=True)
class Image:
    reference: str
    """Normalised, as written (`docker.io/library/busybox:1.36`, `oci:/srv/app:v1`)."""
    digest: str
    """The manifest's digest at its source (for this platform)."""
    stored_digest: str
    """The manifest's digest in our layout (differs where skopeo converted a Docker manifest to OCI)."""
    config: ImageConfig
    layers: tuple[Layer, ...]

    @property
    def size(self) -> int:
        return sum(layer.size for layer in self.layers)


@dataclass(frozen=True)
class PullEvent:
    """One step of a pull: a blob fetched (or found), a layer unpacked (or found)."""

    image: str
    kind: str  # "blob" | "layer"
    digest: str
    done_before: bool


class ImageStore:
    def __init__(self, state_dir: Path):
        self.state_dir = state_dir
        self.root = state_dir / IMAGES_DIR
        self.layout = self.root / LAYOUT_DIR
        self.layers = self.root / LAYERS_DIR
        self._read: tuple[tuple[int, int, int] | None, list[tuple[dict[str, Any], Image | None]]] | None = None
        """The entries as last read, with the index file's (inode, mtime, size) then."""

    # --- reading -------------------------------------------------------------------------

    def images(self) -> list[Image]:
        """Every image the store holds (pulls under way or abandoned, and entries whose
        blobs are damaged, are not images: garbage collection drops them)."""
        return [image for _, image in self._entries() if image is not None]

    def _entries(self) -> list[tuple[dict[str, Any], Image | None]]:
        """Read again only when the index changed (every edit replaces it; blobs never change
        under a digest): a start, a status row, a pin look an image up without re-reading every
        manifest and config."""
        try:
            index = os.stat(self.layout / "index.json")
            version: tuple[int, int, int] | None = (index.st_ino, index.st_mtime_ns, index.st_size)
        except FileNotFoundError:
            version = None
        if self._read is None or self._read[0] != version:
            self._read = (version, self._parse_entries())
        return self._read[1]

    def _parse_entries(self) -> list[tuple[dict[str, Any], Image | None]]:
        found: list[tuple[dict[str, Any], Image | None]] = []
        for entry in self._index().get("manifests", []):
            annotations = entry.get("annotations") or {} if isinstance(entry, dict) else {}
            if REFERENCE_KEY not in annotations:
                continue
            try:
                found.append((entry, self._image(str(annotations[REFERENCE_KEY]),
                                                 str(annotations.get(DIGEST_KEY, entry["digest"])),
                                                 str(entry["digest"]))))
            except (ImageError, KeyError, TypeError, ValueError):
                found.append((entry, None))
        return found

    def find(self, ref: ImageReference) -> Image | None:
        """The local image `ref` names: by its digest when it has one, else by reference."""
        for image in self.images():
            if ref.digest is not None:
                if image.digest == ref.digest and _name_of(image.reference) == ref.name:
                    return image
            elif image.reference == str(ref):
                return image
        return None

    def by_digest(self, digest: str) -> Image | None:
        return next((image for image in self.images() if image.digest == digest), None)

    def lower_dirs(self, image: Image) -> list[Path]:
        """The image's unpacked layers as overlayfs lowers: the top layer first."""
        return [layer_path(self.layers, layer.diff_id) for layer in reversed(image.layers)]

    def layer_dirs(self) -> list[Path]:
        """Every directory in the layer store (an unpack under way or abandoned among them)."""
        return _children(self.layers)

    def _index(self) -> dict[str, Any]:
        try:
            index = json.loads((self.layout / "index.json").read_text())
        except FileNotFoundError:
            return {"schemaVersion": 2, "manifests": []}
        except (OSError, ValueError) as exc:
            raise ImageError(f"the image store's index ({self.layout / 'index.json'}) is damaged: {exc}") from None
        if not isinstance(index, dict) or not isinstance(index.get("manifests", []), list):
            raise ImageError(f"the image store's index ({self.layout / 'index.json'}) is not an OCI index")
        return index

    def _blob(self, digest: str) -> Path:
        if not DIGEST_PATTERN.fullmatch(digest):  # never a path out of the layout
            raise ImageError(f"the image store names a blob {digest!r}, which is not a sha256 digest")
        algorithm, _, hexdigest = digest.partition(":")
        return self.layout / "blobs" / algorithm / hexdigest

    def _json_blob(self, digest: str) -> dict[str, Any]:
        try:
            return dict(json.loads(self._blob(digest).read_text()))
        except (OSError, ValueError) as exc:
            raise ImageError(f"the image store's blob {digest} is missing or damaged: {exc}") from None

    def _image(self, reference: str, digest: str, stored_digest: str) -> Image:
        manifest = self._json_blob(stored_digest)
        config = self._json_blob(str(manifest["config"]["digest"]))
        diff_ids = [str(d) for d in config.get("rootfs", {}).get("diff_ids", [])]
        blobs = manifest.get("layers", [])
        if len(diff_ids) != len(blobs):
            raise ImageError(f"{reference}: its config lists {len(diff_ids)} layers, its manifest {len(blobs)}")
        layers = tuple(Layer(str(b["digest"]), str(b["mediaType"]), int(b.get("size", 0)), d)
                       for b, d in zip(blobs, diff_ids))
        return Image(reference, digest, stored_digest, _config(config.get("config") or {}), layers)

    # --- pulling -------------------------------------------------------------------------

    def pull(self, ref: ImageReference, tls_verify: bool, stall_timeout: float, progress: Callable[[PullEvent], None],
             waiting: Callable[[str], None] | None = None) -> Image:
        """Fetch `ref` (a tag is resolved again) and unpack its layers, under the image store's
        lock, shared with other pulls (`waiting` is told who holds it exclusive: a removal);
        returns the image. Given up once skopeo has sent nothing for `stall_timeout` seconds
        while waited on (0: never)."""
        with shared(self.state_dir, waiting, name=IMAGES_LOCK_NAME):
            return self._pull(ref, tls_verify, stall_timeout, progress)

    def _pull(self, ref: ImageReference, tls_verify: bool, stall_timeout: float,
              progress: Callable[[PullEvent], None]) -> Image:
        self._make_dirs()
        remove_temporaries(self.layers)
        name = str(ref)
        try:
            with skopeo.ImageProxy(tls_verify, self.root / TMP_DIR, stall_timeout) as proxy:
                # One handle: its manifest is read once, so a tag moved meanwhile cannot mix versions.
                handle = proxy.open(ref.source)
                source_digest, manifest = proxy.manifest(handle)
                stored = self._store_blob(manifest)
                config, size = _config_descriptor(self._json_blob(stored))
                converted = stored != source_digest  # a Docker manifest: skopeo made it OCI, config too
                self._store_blob(proxy.converted_config(handle) if converted else proxy.read_blob(handle, config, size),
                                 config)
                image = self._image(name, ref.digest or (stored if ref.is_local else source_digest), stored)
                for layer in image.layers:
                    if layer.media_type not in LAYER_MEDIA_TYPES:
                        raise ImageError(f"pull {name}: layer {layer.digest} has media type {layer.media_type}, "
                                         "which is not an image layer reconcile can unpack")
                self._fetch_layers(proxy, handle, image, progress)
        except Exception as exc:  # noqa: BLE001 - whatever the source or the image holds: a clear error
            raise ImageError(str(exc) if isinstance(exc, ImageError) else f"pull {name}: {exc}") from None
        self._name(image)
        return image

    def _fetch_layers(self, proxy: skopeo.ImageProxy, handle: int, image: Image,
                      progress: Callable[[PullEvent], None]) -> None:
        """Fetch the layers not unpacked yet, each under a lock of its own: two pulls (in this
        process or another) of images sharing a layer fetch it once. The layers another pull
        holds are left to the end, then each waited for in turn and fetched only if still
        missing (that pull failed). A pull waits on a layer's lock only holding none, and holds
        one only until that layer is in: no two pulls wait on each other; a killed pull's locks
        die with it."""
        claimed: dict[str, Flock] = {}
        mine: list[Layer] = []
        busy: list[Layer] = []
        seen: set[str] = set()
        try:
            for layer in image.layers:
                if layer.diff_id in seen or self._unpacked(layer, image.reference, progress):
                    continue
                seen.add(layer.diff_id)
                lock = self._layer_lock(layer)
                if not lock.take(wait=False):
                    busy.append(layer)
                    continue
                claimed[layer.diff_id] = lock
                if not self._unpacked(layer, image.reference, progress):  # else placed by the pull that held it
                    mine.append(layer)
            self._stream_layers(proxy, handle, mine, image.reference, progress, claimed)
        finally:
            for lock in claimed.values():
                lock.release()
        for layer in busy:
            lock = self._layer_lock(layer)
            lock.take()
            try:
                if not self._unpacked(layer, image.reference, progress):
                    self._stream_layers(proxy, handle, [layer], image.reference, progress, {layer.diff_id: lock})
            finally:
                lock.release()

    def _unpacked(self, layer: Layer, image: str, progress: Callable[[PullEvent], None]) -> bool:
        """Whether the layer is in the store (said as found, if so)."""
        if not layer_path(self.layers, layer.diff_id).is_dir():
            return False
        progress(PullEvent(image, "layer", layer.diff_id, True))
        return True

    def _layer_lock(self, layer: Layer) -> Flock:
        return Flock(layer_path(self.root / LOCKS_DIR, layer.diff_id))

    def _stream_layers(self, proxy: skopeo.ImageProxy, handle: int, layers: list[Layer], image: str,
                       progress: Callable[[PullEvent], None], locks: Mapping[str, Flock]) -> None:
        """Stream `layers` from skopeo into the layer store, PARALLEL_LAYERS at a time, each
        unpacked as it arrives and its lock (in `locks`, by diff_id) let go once it is in.
        skopeo answers one call at a time, so a layer is finished in the order it was started;
        any failure stops skopeo, which ends every pipe: the other unpacks fail too and leave
        nothing, before the error goes up."""
        window: deque[tuple[Layer, skopeo.BlobPipe, Future[Path]]] = deque()
        try:
            for layer in layers:
                if len(window) == PARALLEL_LAYERS:
                    locks[_finish_layer(proxy, *window.popleft(), image, progress)].release()
                pipe = proxy.blob(handle, layer.digest, layer.size)
                window.append((layer, pipe, _unpacking(pipe.file, layer, self.layers)))
            while window:
                locks[_finish_layer(proxy, *window.popleft(), image, progress)].release()
        except BaseException:
            proxy.close()
            for _, _, unpacking in window:  # their pipes ended with skopeo: each fails and cleans up
                unpacking.exception()
            raise

    def _make_dirs(self) -> None:
        """The store is private (0700) whatever the state dir's mode: its layers hold setuid
        programs and device nodes of whatever image was pulled."""
        for directory in (self.root, self.layout / "blobs" / "sha256", self.layers, self.root / TMP_DIR,
                          self.root / LOCKS_DIR):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        if not (self.layout / "oci-layout").exists():
            write_durably(self.layout / "oci-layout", json.dumps(LAYOUT_MARKER).encode(), WRITE_TEMPORARY)

    def _store_blob(self, data: bytes, digest: str | None = None) -> str:
        """Keep `data` as a blob of the layout; its digest (which must be `digest` if given)."""
        computed = "sha256:" + hashlib.sha256(data).hexdigest()
        if digest is not None and computed != digest:
            raise ImageError(f"blob {digest} arrived as {computed}: the source sent another blob")
        if not self._blob(computed).exists():
            write_durably(self._blob(computed), data, WRITE_TEMPORARY)
        return computed

    def remote_digest(self, ref: ImageReference, tls_verify: bool, stall_timeout: float) -> str:
        """What pulling a registry image `ref` now would pin, without pulling."""
        try:
            return ref.digest or skopeo.source_digest(ref.source, tls_verify, stall_timeout)
        except skopeo.SkopeoError as exc:
            raise ImageError(f"resolve {ref}: {exc}") from None

    def _name(self, image: Image) -> None:
        """Add the pulled image to the index. The image its reference named before (a tag
        moved) stays, named by its digest (`name:tag@sha256:...`, as a dangling image in
        Docker): a container may still run it; `image prune` removes it once none does."""
        def rename(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
            kept: list[dict[str, Any]] = []
            for entry in entries:
                annotations = entry.get("annotations") or {}
                if annotations.get(REFERENCE_KEY) == image.reference:
                    digest = str(annotations.get(DIGEST_KEY, entry.get("digest")))
                    if digest == image.digest:
                        continue  # the same image pulled again
                    entry["annotations"] = _annotations(f"{split_pinned(image.reference)[0]}@{digest}", digest)
                kept.append(entry)
            manifest = self._blob(image.stored_digest)
            return [*kept, {"mediaType": MANIFEST_MEDIA_TYPE, "digest": image.stored_digest,
                            "size": manifest.stat().st_size,
                            "annotations": _annotations(image.reference, image.digest)}]
        self._edit_index(rename)

    def _edit_index(self, edit: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]) -> None:
        """Read, edit and replace index.json, one pull at a time (a removal excludes pulls)."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        with flocked(self.root / INDEX_LOCK):
            index = self._index()
            index["manifests"] = edit(list(index.get("manifests", [])))
            write_durably(self.layout / "index.json", json.dumps(index).encode(), WRITE_TEMPORARY)

    # --- removing ------------------------------------------------------------------------

    def remove(self, images: Iterable[Image], in_use: Mapping[str, str], mounted_layers: set[str]) -> None:
        """Forget these images and delete what no other image holds. `in_use`: digest -> the
        container running it; such an image is refused unless another reference to the same
        digest stays (a second tag: as `docker rmi` untags it)."""
        doomed = list(images)
        named = {d.reference for d in doomed}
        kept = {i.digest for i in self.images() if i.reference not in named}
        busy = [f"{i.reference} (used by {in_use[i.digest]})" for i in doomed
                if i.digest in in_use and i.digest not in kept]
        if busy:
            raise ImageError("cannot remove an image a container runs: " + ", ".join(busy))
        references = {i.reference for i in doomed}
        self._edit_index(lambda entries: [e for e in entries
                                          if (e.get("annotations") or {}).get(REFERENCE_KEY) not in references])
        self.collect_garbage(mounted_layers)

    def collect_garbage(self, mounted_layers: set[str]) -> None:
        """Delete abandoned pulls and damaged entries, and the blobs and layers no image holds
        (`mounted_layers`: names of layer directories a mounted root uses, kept whatever the
        index says). Callers hold the image store's lock exclusive: no pull is under way."""
        damaged = {(_ref_name(entry), entry.get("digest")) for entry, image in self._entries() if image is None}
        self._edit_index(lambda entries: [e for e in entries if (_ref_name(e), e.get("digest")) not in damaged])
        for leftover in [*_children(self.root / TMP_DIR), *_children(self.root / LOCKS_DIR),
                         *self.layout.glob(f"{WRITE_TEMPORARY}*")]:
            remove_tree(leftover) if leftover.is_dir() and not leftover.is_symlink() else leftover.unlink()
        kept = self.images()
        blobs = {i.stored_digest for i in kept}
        diff_ids = {layer.diff_id for i in kept for layer in i.layers}
        for image in kept:
            blobs.add(self._json_blob(image.stored_digest)["config"]["digest"])
            blobs.update(layer.digest for layer in image.layers)
        blob_dir = self.layout / "blobs" / "sha256"
        for blob in _children(blob_dir):
            if f"sha256:{blob.name}" not in blobs:
                blob.unlink(missing_ok=True)
        remove_temporaries(self.layers)
        wanted = {layer_path(self.layers, d).name for d in diff_ids} | mounted_layers
        for layer_dir in _children(self.layers):
            if layer_dir.name not in wanted:
                _remove_layer(layer_dir)


def _config_descriptor(manifest: Mapping[str, Any]) -> tuple[str, int]:
    """(digest, size) of the config an OCI manifest names."""
    config = manifest.get("config")
    digest, size = (config.get("digest"), config.get("size")) if isinstance(config, dict) else (None, None)
    if not isinstance(digest, str) or not DIGEST_PATTERN.fullmatch(digest) or not isinstance(size, int):
        raise ImageError(f"its manifest names no config (a sha256 digest and a size): {config!r}")
    return digest, size


def _unpacking(blob: skopeo.PipeReader, layer: Layer, store: Path) -> Future[Path]:
    """Unpack a layer as it streams in, on a daemon thread of its own (an executor's threads are
    joined at exit: an agent stopped mid-pull would wait on a stalled registry). The pipe is
    closed however that ends, so skopeo never waits on a reader that gave up."""
    unpacked: Future[Path] = Future()

    def unpack() -> None:
        try:
            with blob:
                unpacked.set_result(unpack_layer(blob, layer.media_type, layer.diff_id, store))
        except BaseException as error:  # noqa: BLE001 - handed to the pulling thread
            unpacked.set_exception(error)

    threading.Thread(target=unpack, name=f"unpack {layer.diff_id[:19]}", daemon=True).start()
    return unpacked


def _finish_layer(proxy: skopeo.ImageProxy, layer: Layer, pipe: skopeo.BlobPipe, unpacking: Future[Path],
                  image: str, progress: Callable[[PullEvent], None]) -> str:
    """skopeo's verdict on the blob, then the unpack's; the layer's diff_id, once it is in.
    When both failed, the cause is named: the fetch's error, unless skopeo only lost its reader
    (the unpack stopped first: a full disk, a corrupt layer)."""
    try:
        proxy.finish(pipe)
    except skopeo.SkopeoError as fetch:
        failed = unpacking.exception()
        if isinstance(failed, (LayerError, OSError)) and "broken pipe" in str(fetch):
            raise failed from None
        raise
    unpacking.result()
    progress(PullEvent(image, "blob", layer.digest, False))
    progress(PullEvent(image, "layer", layer.diff_id, False))
    return layer.diff_id


def _remove_layer(path: Path) -> None:
    """Rename first (a half-deleted layer is never found under its name), then delete."""
    trash = path.with_name(f".tmp-removed-{path.name}-{os.getpid()}")
    os.rename(path, trash)
    remove_tree(trash)


def _children(directory: Path) -> list[Path]:
    try:
        return list(directory.iterdir())
    except FileNotFoundError:
        return []


def _annotations(reference: str, digest: str) -> dict[str, str]:
    return {REF_NAME_KEY: _ref_name_for(reference), REFERENCE_KEY: reference, DIGEST_KEY: digest}


def _name_of(reference: str) -> str | None:
    """The repository of a registry image's reference (None for a local source's)."""
    try:
        return parse_reference(split_pinned(reference)[0]).name
    except ReferenceError:
        return None


def _ref_name(entry: Mapping[str, Any]) -> str:
    return str((entry.get("annotations") or {}).get(REF_NAME_KEY, ""))


def _ref_name_for(reference: str) -> str:
    """The layout's name of an image: the reference itself for a registry image (skopeo users
    can copy it out by it); a local source's path may hold characters a name cannot."""
    if reference.startswith(("oci:", "docker-archive:")) or not _OCI_REF_NAME.fullmatch(reference):
        return LOCAL_PREFIX + hashlib.sha256(reference.encode()).hexdigest()[:32]
    return reference


def _config(config: object) -> ImageConfig:
    """The config's `config` object, each field as Docker reads it and of the type it must
    have (an image is input like any other: a field of the wrong type is ignored)."""
    fields = config if isinstance(config, dict) else {}

    def argv(value: object) -> tuple[str, ...] | None:
        return tuple(v for v in value if isinstance(v, str) and "\0" not in v) if isinstance(value, list) else None

    def text(value: object) -> str | None:
        return value if isinstance(value, str) and value and "\0" not in value else None

    workdir = text(fields.get("WorkingDir"))
    ports = fields.get("ExposedPorts")
    return ImageConfig(entrypoint=argv(fields.get("Entrypoint")), cmd=argv(fields.get("Cmd")),
                       env=tuple(e for e in argv(fields.get("Env")) or () if "=" in e),
                       workdir=posixpath.normpath("/" + workdir) if workdir else None,  # relative: from /, as Docker
                       user=text(fields.get("User")),
                       exposed_ports=tuple(sorted(str(p) for p in ports)) if isinstance(ports, dict) else (),
                       healthcheck=_healthcheck(fields.get("Healthcheck")),
                       stop_signal=text(fields.get("StopSignal")))


DOCKER_HEALTH_DURATIONS = (("Interval", "interval"), ("Timeout", "timeout"), ("StartPeriod", "start_period"),
                           ("StartInterval", "start_interval"))


def _healthcheck(value: object) -> dict[str, object] | None:
    """Docker's `Healthcheck` (durations in nanoseconds, 0: the default) in the stack file's
    terms; None without a test."""
    if not isinstance(value, dict) or not isinstance(value.get("Test"), list) or not value["Test"]:
        return None
    check: dict[str, object] = {"test": [word for word in value["Test"] if isinstance(word, str)]}
    for docker, ours in DOCKER_HEALTH_DURATIONS:
        if isinstance(value.get(docker), int) and value[docker] > 0:
            check[ours] = value[docker] / 1e9
    if isinstance(value.get("Retries"), int) and value["Retries"] > 0:
        check["retries"] = value["Retries"]
    return check
