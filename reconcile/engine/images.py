"""Images before planning: each container's image reference pinned to a digest held in the
image store (pulled first when allowed and needed), and the image's config merged into the
container as Docker merges it, so the controllers plan plain, complete containers.

Pinning (Compose's `pull_policy`): `missing` keeps the digest this host already holds for a
reference, or the one a running container was started from (read back from its root's mark,
so a lost state store never recreates it), and pulls only when there is neither; `always`
(or `apply --pull`) resolves the tag again, and a moved tag becomes a recreate whose plan shows
the old and new digests; `never` only uses a local copy. `diff` never pulls: an image not yet
on this host is planned as such, a moved tag is found by asking the registry.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from kernel import overlay
from reconcile.engine.session import Target
from reconcile.engine.settings import Settings
from specs.errors import Issue, SpecErrors
from specs.images import ImageReference, ReferenceError, parse_reference, pin, split_pinned
from specs.loader import locate_issues
from specs.model import Container, Stack
from state.images import Image, ImageError, ImageStore, PullEvent
from state.lock import IMAGES_LOCK_NAME, exclusive
from state.store import Store

NOT_PULLED = "not pulled yet"


@dataclass(frozen=True)
class Pulling:
    """What resolution may do: pull at all (apply, not diff), pull tags again (`--pull`)."""

    allowed: bool
    force: bool = False
    progress: Callable[[PullEvent], None] = lambda event: None
    ask_registry: bool = True
    """False (status): pins come only from this host (its store and its running roots)."""
    background: Callable[[ImageReference, bool], None] | None = None
    """The watch agent's: a missing image is handed to it (reference, verify TLS) to pull while
    other keys are repaired; its containers are planned as not pulled yet meanwhile."""


@dataclass(frozen=True)
class _Pinned:
    image: Image | None  # None: not on this host (a diff that does not pull)
    digest: str | None


def resolve(target: Target, settings: Settings, pulling: Pulling) -> Target:
    """`target` with every image container pinned and merged; SpecErrors (at the container's
    `image`) for an image that cannot be had."""
    if not any(c.image for s in target.stacks.values() for c in s.containers.values()):
        return target
    store = ImageStore(settings.state_dir)
    running = running_images()
    pins: dict[tuple[str, str, str | None], _Pinned] = {}
    issues: list[Issue] = []
    stacks: dict[str, Stack] = {}
    for name, stack in target.stacks.items():
        containers: dict[str, Container] = {}
        for key, container in stack.containers.items():
            if container.image is None or name not in target.scope:
                containers[key] = container
                continue
            ref = parse_reference(container.image)
            policy = "always" if pulling.force and container.pull != "never" else container.pull
            running_digest = running.get((name, key))
            try:
                pinned = pins.get((str(ref), policy, running_digest)) or _pin(ref, policy, store, settings, pulling,
                                                                              running_digest)
            except ImageError as exc:
                issues.append(Issue(name, ("containers", key, "image"), str(exc)))
                continue
            pins[(str(ref), policy, running_digest)] = pinned
            merged, problem = merge(container, ref, pinned.image, pinned.digest)
            if problem:
                issues.append(Issue(name, ("containers", key, "command"), problem))
            containers[key] = merged
        stacks[name] = stack.model_copy(update={"containers": containers})
    if issues:
        raise SpecErrors(locate_issues(target.files, issues))
    return Target(stacks, target.scope, target.files)


def _pin(ref: ImageReference, policy: str, store: ImageStore, settings: Settings, pulling: Pulling,
         running_digest: str | None) -> _Pinned:
    local = store.find(ref)
    if policy == "never" or (policy == "missing" and local is not None):
        if local is None:
            raise ImageError(f"{ref} is not on this host (pull: never): `reconcile image pull {ref}` first")
        return _Pinned(local, local.digest)
    started = store.by_digest(running_digest) if running_digest else None
    if started is not None and split_pinned(started.reference)[0] != str(ref.unpinned):
        started = None  # the container runs another reference's image: the spec moved on
    if policy == "missing" and started is not None:  # the store lost the name, not the image
        return _Pinned(started, started.digest)
    if not pulling.ask_registry:
        held = started or local
        return _Pinned(held, held.digest if held else None)
    tls = verify_tls(ref, settings)
    if pulling.background is not None:  # the agent pulls what is missing, in the background
        if local is None:
            pulling.background(ref, tls)
        return _Pinned(local, local.digest if local else None)
    if pulling.allowed:
        image = store.pull(ref, tls, pulling.progress)
        return _Pinned(image, image.digest)
    if ref.is_local or policy == "missing":  # nothing here yet: planned as not pulled, asking nobody
        return _Pinned(local, local.digest if local else None)
    digest = store.remote_digest(ref, tls)
    pinned = store.by_digest(digest) if local is None or local.digest != digest else local
    return _Pinned(pinned or local, digest)


def verify_tls(ref: ImageReference, settings: Settings) -> bool:
    """TLS with verified certificates, except for loopback registries (as Docker treats
    127.0.0.0/8) and the insecure registries the settings list."""
    domain = ref.domain or ""
    host = domain.rsplit(":", 1)[0] if domain.count(":") == 1 else domain
    if domain in settings.insecure_registries or host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return True


def merge(container: Container, ref: ImageReference, image: Image | None,
          digest: str | None) -> tuple[Container, str | None]:
    """The container as it runs: the image's Entrypoint and Cmd unless the spec gives them (a
    spec entrypoint drops the image's Cmd, as Docker does), its Env under the spec's, its
    WorkingDir and User unless the spec sets them; `image` pinned to the digest. Also the
    problem, if the result has nothing to run."""
    config = image.config if image is not None else None
    entrypoint = container.entrypoint if container.entrypoint is not None else (
        list(config.entrypoint or ()) if config else [])
    if container.command:
        command = container.command
    else:
        command = list(config.cmd or ()) if config and container.entrypoint is None else []
    env = dict(_env_pairs(config.env if config else ()))
    env.update(container.env)
    argv = [*entrypoint, *command]
    merged = container.model_copy(update={
        "image": f"{ref} ({NOT_PULLED})" if digest is None else pin(ref, digest),
        "entrypoint": None, "command": argv, "env": env,
        "workdir": container.workdir or (config.workdir if config else None) or "/",
        "user": container.user or (config.user if config else None)})
    problem = None
    if not argv and image is not None:
        problem = f"the image {ref} has neither Entrypoint nor Cmd: give the container a command"
    return merged, problem


def _env_pairs(entries: tuple[str, ...]) -> Mapping[str, str]:
    pairs: dict[str, str] = {}
    for entry in entries:
        name, _, value = entry.partition("=")
        if name:
            pairs[name] = value
    return pairs


def running_images() -> dict[tuple[str, str], str]:
    """(stack, container) -> the digest of the image its mounted root is made of."""
    return {key: root.image_digest for key, root in overlay.mounted().items() if root.image_digest}


def _mounted_layers(store: ImageStore) -> set[str]:
    """The layer directories mounted roots use (kept by garbage collection, whatever the index says)."""
    return {lower.name for root in overlay.mounted().values() for lower in root.lowers if lower.parent == store.layers}


# --- the `image` verbs ---------------------------------------------------------------------

@dataclass(frozen=True)
class ImageRow:
    image: Image
    used_by: tuple[str, ...]  # "stack/container" of the running containers made of it


def pull(text: str, settings: Settings, progress: Callable[[PullEvent], None]) -> Image:
    """`reconcile image pull REF`: fetch (a tag again) and unpack."""
    ref = _reference(text)
    return ImageStore(settings.state_dir).pull(ref, verify_tls(ref, settings), progress)


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
        doomed = []
        for text in texts:
            found = store.find(_reference(text))
            if found is None:
                raise ImageError(f"no image {text} on this host")
            doomed.append(found)
        store.remove(doomed, {row.image.digest: ", ".join(row.used_by) for row in listing(settings) if row.used_by},
                     _mounted_layers(store))
        return doomed


def prune(settings: Settings) -> list[Image]:
    """`reconcile image prune`: remove every image no container runs and no applied stack names."""
    store = ImageStore(settings.state_dir)
    with _removing(settings):
        wanted = _applied_stacks(settings)
        running = set(running_images().values())
        named = {str(parse_reference(c.image)) for stack in wanted for c in stack.containers.values() if c.image}
        doomed = [i for i in store.images() if i.digest not in running and i.reference not in named]
        store.remove(doomed, {}, _mounted_layers(store))
        return doomed


def _applied_stacks(settings: Settings) -> list[Stack]:
    records = Store.open_readonly(settings.state_dir)
    try:
        return [Stack.model_validate(record.spec) for record in records.stacks()]
    finally:
        records.close()


@contextmanager
def _removing(settings: Settings) -> Iterator[None]:
    """Both locks: no apply may be starting a container from an image being removed, and no
    pull be writing the store."""
    with exclusive(settings.state_dir), exclusive(settings.state_dir, name=IMAGES_LOCK_NAME):
        yield


def _reference(text: str) -> ImageReference:
    try:
        return parse_reference(text)
    except ReferenceError as exc:
        raise ImageError(f"invalid image reference {text!r}: {exc}") from None
