"""The `image` verbs (pull, ls, rm, prune) over the image store, and what pinning shares with
them (which registries skip TLS, which images mounted roots are made of). Light on imports: an
`image` verb starts without the controllers and the spec model (~0.2 s of start-up)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from kernel import overlay
from reconcile.engine.settings import Settings
from specs.images import ImageReference, ReferenceError, parse_reference
from specs.names import DIGEST_PATTERN
from state.images import Image, ImageError, ImageStore, PullEvent
from state.lock import IMAGES_LOCK_NAME, exclusive
from state.store import Store, file_identity


def verify_tls(ref: ImageReference, settings: Settings) -> bool:
    """TLS with verified certificates, except for loopback registries (as Docker treats
    127.0.0.0/8) and the insecure registries the settings list."""
    domain = ref.domain or ""
    host = domain.rsplit(":", 1)[0] if domain.count(":") == 1 else domain
    if domain in settings.insecure_registries or host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True


def running_images(among: Collection[tuple[str, str]] | None = None) -> dict[tuple[str, str], str]:
    """(stack, container) -> the digest of the image its mounted root is made of (of `among`
    only, when given: the mount table's other lines are skipped unparsed)."""
    return {key: root.image_digest for key, root in overlay.mounted(among).items() if root.image_digest}


def _mounted_layers(store: ImageStore) -> set[str]:
    """The layer directories mounted roots use (kept by garbage collection, whatever the index
    says). A lower is a store's layer by its path, or, for a `userns: auto` root, by being one:
    its lowers are idmapped binds of the layers under the container's `lower/` (the mount
    table names the bind, never the layer), and a bind's root is the layer's own directory
    (the same device and inode)."""
    lowers = {lower for root in overlay.mounted().values() for lower in root.lowers}
    used = {lower.name for lower in lowers if lower.parent == store.layers}
    bound = {file_identity(lower) for lower in lowers if lower.parent != store.layers} - {None}
    if bound:
        used |= {layer.name for layer in store.layer_dirs() if file_identity(layer) in bound}
    return used


# --- the `image` verbs ---------------------------------------------------------------------

@dataclass(frozen=True)
class ImageRow:
    image: Image
    used_by: tuple[str, ...]  # "stack/container" of the running containers made of it


def pull(text: str, settings: Settings, progress: Callable[[PullEvent], None]) -> Image:
    """`reconcile image pull REF`: fetch (a tag again) and unpack."""
    ref = _reference(text)
    return ImageStore(settings.state_dir).pull(ref, verify_tls(ref, settings), settings.pull_stall_timeout, progress)


def listing(settings: Settings) -> list[ImageRow]:
    users: dict[str, list[str]] = {}
    for (stack, name), digest in sorted(running_images().items()):
        users.setdefault(digest, []).append(f"{stack}/{name}")
    return [ImageRow(image, tuple(users.get(image.digest, ())))
            for image in sorted(ImageStore(settings.state_dir).images(), key=lambda i: i.reference)]


def remove(texts: Sequence[str], settings: Settings) -> list[Image]:
    """`reconcile image rm REF...`: refused for an image a container runs, or one not here."""
    store = ImageStore(settings.state_dir)
    with _removing(settings):
        doomed = [_named_for_removal(store, text) for text in texts]
        store.remove(doomed, {row.image.digest: ", ".join(row.used_by) for row in listing(settings) if row.used_by},
                     _mounted_layers(store))
        return doomed


def prune(settings: Settings) -> list[Image]:
    """`reconcile image prune`: remove every image no container runs and no applied stack names."""
    store = ImageStore(settings.state_dir)
    with _removing(settings):
        named = _named_by_applied_stacks(settings)
        running = set(running_images().values())
        doomed = [i for i in store.images() if i.digest not in running and i.reference not in named]
        store.remove(doomed, {}, _mounted_layers(store))
        return doomed


def _named_by_applied_stacks(settings: Settings) -> set[str]:
    """The image references the stacks' specs recorded at their last apply name, read as
    stored, not validated: a spec a newer release no longer accepts still keeps its images (its
    containers start from them again), and fails no prune. A record that cannot be read at all
    stops the prune (nothing removed): what it names is unknown."""
    records = Store.open_readonly(settings.state_dir)
    try:
        stacks = records.stacks()
    finally:
        records.close()
    named: set[str] = set()
    for record in stacks:
        containers = record.spec.get("containers") or {}
        if not isinstance(containers, dict):
            raise ImageError(f"stack '{record.name}': the spec recorded at its last apply cannot be read, so which "
                             "images it needs is unknown: nothing pruned (apply its file again)")
        for container in containers.values():
            image = container.get("image") if isinstance(container, dict) else None
            if isinstance(image, str) and image:
                try:
                    named.add(str(parse_reference(image)))
                except ReferenceError:
                    continue  # names no image this store can hold
    return named


@contextmanager
def _removing(settings: Settings) -> Iterator[None]:
    """Both locks: no apply may be starting a container from an image being removed, and no
    pull be writing the store."""
    with exclusive(settings.state_dir), exclusive(settings.state_dir, name=IMAGES_LOCK_NAME):
        yield


def _named_for_removal(store: ImageStore, text: str) -> Image:
    """The image `image rm` names: by reference, or by the digest `image ls` shows (as
    `docker rmi ID`; a digest several references share names none of them alone)."""
    if DIGEST_PATTERN.fullmatch(text):
        found = [image for image in store.images() if image.digest == text]
        if len(found) > 1:
            raise ImageError(f"image {text} is referenced as {', '.join(sorted(i.reference for i in found))}: "
                             "remove those by name")
        image = found[0] if found else None
    else:
        image = store.find(_reference(text))
    if image is None:
        raise ImageError(f"no image {text} on this host")
    return image


def _reference(text: str) -> ImageReference:
    try:
        return parse_reference(text)
    except ReferenceError as exc:
        raise ImageError(f"invalid image reference {text!r}: {exc}") from None
