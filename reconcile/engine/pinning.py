"""Images before planning: each container's image reference pinned to a digest held in the
image store (pulled first when allowed and needed), and the image's config merged into the
container as Docker merges it, so the controllers plan plain, complete containers.

Pinning (Compose's `pull_policy`): `missing` keeps the digest this host already holds for a
reference, or the one a running container was started from (read back from its root's mark,
so a lost state store never recreates it), and pulls only when there is neither; `always`
(or `apply --pull`) resolves the tag again, and a moved tag becomes a recreate whose plan shows
the old and new digests; `never` only uses a local copy. `diff` never pulls: an image not yet
on this host is planned as such, a moved tag is found by asking the registry.

The images a pass must pull (or, for `diff`, ask the registry about) are first gathered, each
distinct reference once, then fetched side by side, PARALLEL_PULLS at once, before any
container is pinned: one failing stops none of the others (Compose's first failed pull
cancels the rest), and each one's error is its containers' own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from functools import partial

from pydantic import ValidationError

from controllers.base import containers_among
from controllers.container import dependency_levels
from reconcile.engine.images import running_images, verify_tls
from reconcile.engine.parallel import run_all
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
PARALLEL_PULLS = 3
"""Images fetched at once by a pass. Compose asks Docker for every image at once (`--parallel`
-1: no bound) and Docker's daemon downloads 3 layers at once across them all
(`max-concurrent-downloads`); with no daemon to share a bound, reconcile bounds the images, by
that same 3 (each fetching up to state.images.PARALLEL_LAYERS layers at once)."""


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


@dataclass(frozen=True)
class _Fetch:
    """What a pin needs from the network: a pull, or (`diff`) the digest the registry holds."""

    ref: ImageReference
    tls: bool
    pull: bool


@dataclass(frozen=True)
class _Pending:
    """A pin that waits on a fetch; `local`: this host's copy of the reference, if any."""

    fetch: _Fetch
    local: Image | None


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
    planned = _plan(target, chosen, store, settings, pulling)
    progress = _one_at_a_time(pulling.progress)
    fetches = {plan.fetch: partial(_fetch, plan.fetch, store, settings, progress)
               for _, plan in planned.values() if isinstance(plan, _Pending)}
    fetched = run_all(fetches, PARALLEL_PULLS)
    issues: list[Issue] = []
    stacks: dict[str, Stack] = {}
    for name, stack in target.stacks.items():
        keys = containers_among(stack, chosen)
        if not keys:
            stacks[name] = stack
            continue
        containers = dict(stack.containers)
        for key in keys:
            if (name, key) not in planned:
                continue
            ref, plan = planned[(name, key)]
            try:
                pinned = _settled(plan, fetched, store)
            except ImageError as exc:
                issues.append(Issue(name, ("containers", key, "image"), str(exc)))
                del containers[key]  # not judged below: its image-given healthcheck is unknown
                continue
            merged, problem = merge(containers[key], ref, pinned.image, pinned.digest)
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


_Plan = _Pinned | _Pending | ImageError


def _plan(target: Target, chosen: Collection[tuple[str, str]] | None, store: ImageStore, settings: Settings,
          pulling: Pulling) -> dict[tuple[str, str], tuple[ImageReference, _Plan]]:
    """Each image container's pin, or the fetch it waits on, or why it cannot have one, by
    (stack, container). A reference and policy is looked up once, and once more per digest
    its containers run."""
    running = _RunningDigests(chosen)
    local_pins: dict[tuple[str, str], _Pinned | None | ImageError] = {}
    pins: dict[tuple[str, str, str | None], _Pinned | _Pending] = {}
    planned: dict[tuple[str, str], tuple[ImageReference, _Plan]] = {}
    for name, key, image, pull in _image_containers(target, chosen):
        ref = parse_reference(image)
        policy = "always" if pulling.force and pull != "never" else pull
        ref_policy = (str(ref), policy)
        if ref_policy not in local_pins:
            try:
                local_pins[ref_policy] = _local_pin(ref, policy, store)
            except ImageError as exc:
                local_pins[ref_policy] = exc
        plan: _Plan | None = local_pins[ref_policy]
        if plan is None:
            running_digest = running((name, key))
            plan = pins.get((*ref_policy, running_digest)) or _pin(ref, policy, store, settings, pulling,
                                                                   running_digest)
            pins[(*ref_policy, running_digest)] = plan
        planned[(name, key)] = (ref, plan)
    return planned


def _image_containers(target: Target,
                      chosen: Collection[tuple[str, str]] | None) -> Iterator[tuple[str, str, str, str]]:
    """(stack, container, image, pull policy) of the image containers a pass pins: those of the
    stacks in scope, among `chosen` when given."""
    for name, stack in target.stacks.items():
        if name in target.scope:
            for key in containers_among(stack, chosen):
                container = stack.containers[key]
                if container.image is not None:
                    yield name, key, container.image, container.pull


def _fetch(fetch: _Fetch, store: ImageStore, settings: Settings, progress: Callable[[PullEvent], None]) -> Image | str:
    if fetch.pull:
        return store.pull(fetch.ref, fetch.tls, settings.pull_stall_timeout, progress)
    return store.remote_digest(fetch.ref, fetch.tls, settings.pull_stall_timeout)


def _settled(plan: _Plan, fetched: Mapping[_Fetch, Image | str | Exception], store: ImageStore) -> _Pinned:
    """The pin, once its fetch (if any) is done; ImageError if it cannot be had."""
    if isinstance(plan, Exception):
        raise plan
    if isinstance(plan, _Pinned):
        return plan
    outcome = fetched[plan.fetch]
    if isinstance(outcome, Exception):
        raise outcome
    if isinstance(outcome, Image):
        return _Pinned(outcome, outcome.digest)
    local = plan.local
    pinned = store.by_digest(outcome) if local is None or local.digest != outcome else local
    return _Pinned(pinned or local, outcome)


def _one_at_a_time(progress: Callable[[PullEvent], None]) -> Callable[[PullEvent], None]:
    """`progress` called by one pull at a time: each of its lines is written whole."""
    lock = threading.Lock()

    def said(event: PullEvent) -> None:
        with lock:
            progress(event)
    return said


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
         running_digest: str | None) -> _Pinned | _Pending:
    """A pin `_local_pin` left open (never one of `never`): what runs decides it, or the
    registry or a pull will."""
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
    if not pulling.allowed and (ref.is_local or policy == "missing"):  # planned as not pulled, asking nobody
        return _Pinned(local, local.digest if local else None)
    return _Pending(_Fetch(ref, verify_tls(ref, settings), pull=pulling.allowed), local)


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
