"""Image references as users write them, checked and normalised the way Docker reads them.

Registry references follow the distribution grammar (`[domain/]path[:tag][@digest]`): a first
component with a dot, a colon or `localhost` is a registry host, anything else is Docker Hub
(`busybox` is `docker.io/library/busybox`), and a reference with neither tag nor digest means
`:latest`. Two local sources serve offline hosts: `oci:/DIR[:TAG]` (an OCI image layout) and
`docker-archive:/FILE` (`docker save` output); their paths are absolute, so `oci:5000/app`
stays a registry host named `oci`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from specs.names import DIGEST_PATTERN

DOCKER_HUB = "docker.io"
LEGACY_DOCKER_HUB = "index.docker.io"
"""Docker Hub's old name, which Docker reads as docker.io."""
DEFAULT_TAG = "latest"
MAX_NAME_LENGTH = 255

_DOMAIN = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?))*(?::[0-9]+)?"
NO_IPV6_HOSTS = ("a registry cannot be named by its IPv6 address: skopeo's reference grammar "
                 "(containers/image's) has no IPv6 host yet (containers/container-libs issue 195); "
                 "name it by a host name that resolves to the address")
"""Docker's grammar takes `[fd00::1]:5000/app`, but skopeo 1.9 (Debian 12) and its upstream
answer "invalid reference format": refused here, at the field, rather than at the pull."""
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_RE = re.compile(_DOMAIN)
_PATH_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG_RE = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
_LOCAL_TRANSPORTS = ("oci", "docker-archive")


class ReferenceError(ValueError):
    """Not an image reference; the message says what is wrong with it."""


@dataclass(frozen=True)
class ImageReference:
    """A registry image (`transport` "docker") or a local source ("oci", "docker-archive")."""

    transport: Literal["docker", "oci", "docker-archive"]
    name: str
    """docker: domain/path (`docker.io/library/busybox`); local: the absolute path."""
    tag: str | None = None
    digest: str | None = None

    @property
    def domain(self) -> str | None:
        return self.name.split("/", 1)[0] if self.transport == "docker" else None

    @property
    def is_local(self) -> bool:
        return self.transport != "docker"

    @property
    def source(self) -> str:
        """Where skopeo reads it: `docker://NAME@DIGEST` when pinned (the tag is then only a
        label: skopeo takes no reference with both, and Docker pulls such a one by its digest),
        else `docker://NAME:TAG`; a local source as written."""
        if self.is_local:
            return str(self)
        return f"docker://{self.name}@{self.digest}" if self.digest else f"docker://{self.name}:{self.tag}"

    @property
    def unpinned(self) -> ImageReference:
        """The reference without a digest (what the image store names the images pulled for it)."""
        return ImageReference(self.transport, self.name, self.tag)

    def __str__(self) -> str:
        """The canonical form (`docker.io/library/busybox:1.36`, `oci:/srv/app:v1`)."""
        if self.transport != "docker":
            return f"{self.transport}:{self.name}" + (f":{self.tag}" if self.tag else "")
        return self.name + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")


def pin(ref: ImageReference, digest: str) -> str:
    """A container's image as it runs: the reference held to one manifest digest
    (`docker.io/library/busybox:1.36@sha256:...`, `oci:/srv/app:v1@sha256:...`)."""
    return f"{ref.unpinned}@{digest}"


def split_pinned(image: str) -> tuple[str, str | None]:
    """(the reference, the digest it is pinned to or None) of a pinned reference's text (a
    local source's path may hold an '@' of its own: only a trailing digest is one)."""
    reference, at, digest = image.rpartition("@")
    return (reference, digest) if at and DIGEST_PATTERN.fullmatch(digest) else (image, None)


def pinned_digest(image: str | None) -> str | None:
    """The digest a running container's `image` is pinned to; None when it has none."""
    return None if image is None else split_pinned(image)[1]


def parse_reference(text: str) -> ImageReference:
    """`text` as an image reference, normalised; ReferenceError says what is wrong."""
    if text != text.strip() or not text:
        raise ReferenceError("an image reference has no spaces around it and is not empty")
    transport, _, rest = text.partition(":")
    if transport in _LOCAL_TRANSPORTS and rest.startswith("/"):
        return _local(transport, rest)  # type: ignore[arg-type]
    return _registry(text)


def _local(transport: Literal["oci", "docker-archive"], rest: str) -> ImageReference:
    path, _, tag = rest.partition(":")
    if "\0" in rest or "//" in path or "/../" in f"{path}/" or "/./" in f"{path}/":
        raise ReferenceError(f"{transport}: expects a normalised absolute path, as {transport}:/srv/images/app")
    if tag and (transport != "oci" or not _TAG_RE.fullmatch(tag)):
        raise ReferenceError("a tag is only given to an oci: layout (oci:/DIR:TAG), and is letters, "
                             "digits, '_', '.' and '-'")
    return ImageReference(transport, path.rstrip("/") or "/", tag or None)


def _registry(text: str) -> ImageReference:
    remainder, _, digest = text.partition("@")
    if digest and not DIGEST_PATTERN.fullmatch(digest):
        raise ReferenceError(f"digest {digest!r} is not sha256: followed by 64 lowercase hex digits")
    name, tag = remainder, None
    last = remainder.rsplit("/", 1)[-1]
    if ":" in last:  # a colon after the last slash is a tag; before it, a registry port
        name, tag = remainder[:len(remainder) - len(last)] + last.split(":", 1)[0], last.split(":", 1)[1]
        if not _TAG_RE.fullmatch(tag):
            raise ReferenceError(f"tag {tag!r} is not valid: letters, digits, '_', '.' and '-', at most 128, "
                                 "not starting with '.' or '-'")
    domain, path = _split_domain(name)
    if not _PATH_RE.fullmatch(path):
        hint = " (repository names are lowercase)" if path.lower() != path else ""
        raise ReferenceError(f"{path!r} is not a valid repository name{hint}: lowercase letters, digits "
                             "and separators '.', '_', '__', '-', in components joined by '/'")
    if domain == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"  # Docker Hub's official images
    full = f"{domain}/{path}"
    if len(full) > MAX_NAME_LENGTH:
        raise ReferenceError(f"the repository name is longer than {MAX_NAME_LENGTH} characters")
    return ImageReference("docker", full, tag if tag or digest else DEFAULT_TAG, digest or None)


def _split_domain(name: str) -> tuple[str, str]:
    first, slash, rest = name.partition("/")
    if slash and (("." in first or ":" in first or first == "localhost") or first.lower() != first):
        if not _DOMAIN_RE.fullmatch(first):
            raise ReferenceError(f"{first!r} is not a valid registry host[:port]"
                                 + (f": {NO_IPV6_HOSTS}" if first.startswith("[") or first.count(":") > 1 else ""))
        return (DOCKER_HUB if first == LEGACY_DOCKER_HUB else first), rest
    return DOCKER_HUB, name
