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

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from pydantic import ValidationError

from controllers.base import containers_among
from controllers.container import dependency_levels
from reconcile.engine.images import running_images, verify_tls
from reconcile.engine.session import Target
from reconcile.engine.settings import Settings
from specs.errors import Issue, SpecErrors
from specs.images import ImageReference, parse_reference, pin, split_pinned
from specs.loader import locate_issues
from specs.model import Container, Healthcheck, Stack
from specs.signals import to_stop_signal
from specs.validate import health_issues
from state.images import Image, ImageConfig, ImageError, ImageStore, PullEvent

NOT_PULLED = "not pulled yet"


@dataclass(frozen=True)
class Pulling:
    """What resolution may do: pull at all (apply, not diff), pull tags again (`--pull`)."""

    allowed: bool
    force: bool = False
    progress: Callable[[PullEvent], None] = lambda event: None
    ask_registry: bool = True
    """False (status): pins come only from this host (its store and its running roots)."""
    background: Callable[[ImageReference], None] | None = None
    """The watch agent's: a missing image is handed to it to pull while other keys are
    repaired; its containers are planned as not pulled yet meanwhile."""


@dataclass(frozen=True)
class _Pinned:
    image: Image | None  # None: not on this host (a diff that does not pull)
    digest: str | None


def resolve(target: Target, settings: Settings, pulling: Pulling,
            only: Collection[tuple[str, str]] | None = None) -> Target:
    """`target` with every image container pinned and merged; SpecErrors (at the container's
    `image`) for an image that cannot be had. `only` (stack, container): a focused pass's
    containers, the only ones it plans: these and what they depend on (a start waits on its
    dependencies' healthchecks, which their images may give) are resolved, the others are left
    as the spec has them. Beside a thousand image containers, resolving them all (the mount
    table parsed for their running digests, a merged copy of each) cost a focused pass ~27 ms."""
    if not any(c.image for s in target.stacks.values() for c in s.containers.values()):
        return target
    chosen = None if only is None else _with_dependencies(target.stacks, only)
    store = ImageStore(settings.state_dir)
    running = _RunningDigests(chosen)
    local_pins: dict[tuple[str, str], _Pinned | None] = {}
    pins: dict[tuple[str, str, str | None], _Pinned] = {}
    issues: list[Issue] = []
    stacks: dict[str, Stack] = {}
    for name, stack in target.stacks.items():
        keys = containers_among(stack, chosen)
        if not keys:
            stacks[name] = stack
            continue
        containers = dict(stack.containers)
        for key in keys:
            container = containers[key]
            if container.image is None or name not in target.scope:
                continue
            ref = parse_reference(container.image)
            policy = "always" if pulling.force and container.pull != "never" else container.pull
            ref_policy = (str(ref), policy)
            try:
                if ref_policy not in local_pins:
                    local_pins[ref_policy] = _local_pin(ref, policy, store)
                pinned = local_pins[ref_policy]
                if pinned is None:
                    running_digest = running((name, key))
                    pinned = pins.get((*ref_policy, running_digest)) or _pin(ref, policy, store, settings, pulling,
                                                                             running_digest)
                    pins[(*ref_policy, running_digest)] = pinned
                    if pulling.allowed and pulling.background is None:
                        del local_pins[ref_policy]  # pulled: for `missing`, the next one's pin is the copy here now
            except ImageError as exc:
                issues.append(Issue(name, ("containers", key, "image"), str(exc)))
                del containers[key]  # not judged below: its image-given healthcheck is unknown
                continue
            merged, problem = merge(container, ref, pinned.image, pinned.digest)
            if problem:
                issues.append(Issue(name, ("containers", key, "command"), problem))
            containers[key] = merged
        stacks[name] = stack.model_copy(update={"containers": containers})
        if name in target.scope:  # healthchecks that images were to give: known now, unless not pulled
            issues += [issue for key in keys if key in containers
                       for issue in health_issues(stacks[name], key, containers[key], _not_pulled)]
    if issues:
        raise SpecErrors(locate_issues(target.files, issues))
    return Target(stacks, target.scope, target.files)


def _not_pulled(container: Container) -> bool:
    return NOT_PULLED in (container.image or "")


def _with_dependencies(stacks: Mapping[str, Stack], chosen: Collection[tuple[str, str]]) -> set[tuple[str, str]]:
    """These containers and every one they depend on, in their stacks (the start order's own
    walk of depends_on)."""
    keys: dict[str, list[str]] = {}
    for name, key in chosen:
        if name in stacks and key in stacks[name].containers:
            keys.setdefault(name, []).append(key)
    return {(name, key) for name, chosen_keys in keys.items() for key in dependency_levels(stacks[name], chosen_keys)}


class _RunningDigests:
    """The digest of the image a container's mounted root is made of, by (stack, container):
    the mount table is read (its lines of `among` only, when given) the first time a pin needs
    one, which a pin the local copy decides never does."""

    def __init__(self, among: Collection[tuple[str, str]] | None) -> None:
        self._among = among
        self._found: dict[tuple[str, str], str] | None = None

    def __call__(self, key: tuple[str, str]) -> str | None:
        if self._found is None:
            self._found = running_images(self._among)
        return self._found.get(key)


def _local_pin(ref: ImageReference, policy: str, store: ImageStore) -> _Pinned | None:
    """The pin this host's copy decides alone (`never`, or `missing` with a copy here); None
    when it does not."""
    if policy not in ("never", "missing"):
        return None
    local = store.find(ref)
    if local is None and policy == "never":
        raise ImageError(f"{ref} is not on this host (pull: never): `reconcile image pull {ref}` first")
    return None if local is None else _Pinned(local, local.digest)


def _pin(ref: ImageReference, policy: str, store: ImageStore, settings: Settings, pulling: Pulling,
         running_digest: str | None) -> _Pinned:
    """A pin `_local_pin` left open (never one of `never`): what runs, the registry or a pull
    decide it."""
    local = store.find(ref)
    started = store.by_digest(running_digest) if running_digest else None
    if started is not None and split_pinned(started.reference)[0] != str(ref.unpinned):
        started = None  # the container runs another reference's image: the spec moved on
    if policy == "missing" and started is not None:  # the store lost the name, not the image
        return _Pinned(started, started.digest)
    if not pulling.ask_registry:
        held = started or local
        return _Pinned(held, held.digest if held else None)
    if pulling.background is not None:  # the agent pulls what is missing, in the background
        if local is None:
            pulling.background(ref)
        return _Pinned(local, local.digest if local else None)
    tls = verify_tls(ref, settings)
    if pulling.allowed:
        image = store.pull(ref, tls, settings.pull_stall_timeout, pulling.progress)
        return _Pinned(image, image.digest)
    if ref.is_local or policy == "missing":  # nothing here yet: planned as not pulled, asking nobody
        return _Pinned(local, local.digest if local else None)
    digest = store.remote_digest(ref, tls, settings.pull_stall_timeout)
    pinned = store.by_digest(digest) if local is None or local.digest != digest else local
    return _Pinned(pinned or local, digest)


def merge(container: Container, ref: ImageReference, image: Image | None,
          digest: str | None) -> tuple[Container, str | None]:
    """The container as it runs: the image's Entrypoint and Cmd unless the spec gives them (a
    spec entrypoint drops the image's Cmd, as Docker does), its Env under the spec's, its
    WorkingDir, User and STOPSIGNAL unless the spec sets them, its HEALTHCHECK's timings under the
    spec's healthcheck (the whole of it without one); `image` pinned to the digest.
    Also the problem, if the result has nothing to run."""
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
        "user": container.user or (config.user if config else None),
        "healthcheck": _healthcheck(container.healthcheck, _image_healthcheck(config)),
        "stop_signal": container.stop_signal or _image_stop_signal(config)})
    problem = None
    if not argv and image is not None:
        problem = f"the image {ref} has neither Entrypoint nor Cmd: give the container a command"
    return merged, problem


def _healthcheck(own: Healthcheck | None, image: Healthcheck | None) -> Healthcheck | None:
    """The spec's check over the image's, as Docker merges them: the spec's test (or disable),
    each timing it leaves out the image's, else Docker's default; without one of its own, the
    image's whole."""
    if own is not None:
        return own.over(image)
    return image.over(None) if image is not None else None


def _image_healthcheck(config: ImageConfig | None) -> Healthcheck | None:
    """The image's HEALTHCHECK; a malformed one is ignored, as any field of the wrong type."""
    if config is None or config.healthcheck is None:
        return None
    try:
        return Healthcheck.model_validate(config.healthcheck)
    except ValidationError:
        return None


def _image_stop_signal(config: ImageConfig | None) -> str | None:
    """The image's STOPSIGNAL, canonical; one Docker would not take is ignored, as any field of
    the wrong type (the container is then stopped with SIGTERM)."""
    if config is None or config.stop_signal is None:
        return None
    try:
        return to_stop_signal(config.stop_signal)
    except ValueError:
        return None


def _env_pairs(entries: tuple[str, ...]) -> Mapping[str, str]:
    pairs: dict[str, str] = {}
    for entry in entries:
        name, _, value = entry.partition("=")
        if name:
            pairs[name] = value
    return pairs
