"""Image references as Docker reads them (pure): what `image:` may say, how it is normalised,
and where skopeo is told to read it."""

from __future__ import annotations

import subprocess

import pytest

from specs.images import ReferenceError, parse_reference

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(("text", "canonical", "source"), [
    ("busybox", "docker.io/library/busybox:latest", "docker://docker.io/library/busybox:latest"),
    ("index.docker.io/library/busybox:1.36", "docker.io/library/busybox:1.36",
     "docker://docker.io/library/busybox:1.36"),  # Docker Hub's old name
    ("localhost:5000/app:v1", "localhost:5000/app:v1", "docker://localhost:5000/app:v1"),
    (f"localhost:5000/app@{DIGEST}", f"localhost:5000/app@{DIGEST}", f"docker://localhost:5000/app@{DIGEST}"),
    # what Renovate writes: the tag is a label, the digest is what is pulled (skopeo takes no both)
    (f"localhost:5000/app:v1@{DIGEST}", f"localhost:5000/app:v1@{DIGEST}", f"docker://localhost:5000/app@{DIGEST}"),
    ("oci:/srv/images/app:v1", "oci:/srv/images/app:v1", "oci:/srv/images/app:v1"),
])
def test_references_are_normalised_and_read_from_where_docker_reads_them(text: str, canonical: str,
                                                                          source: str) -> None:
    ref = parse_reference(text)
    assert (str(ref), ref.source) == (canonical, source)


@pytest.mark.parametrize("text", ["busybox:tést", "busybox:١٢٣", "oci:/srv/app:ü"])
def test_a_tag_is_ascii_as_dockers(text: str) -> None:
    with pytest.raises(ReferenceError):
        parse_reference(text)


@pytest.mark.parametrize(("text", "host"), [("[::1]:5000/app:1.0", "[::1]:5000"), ("[fd00::1]/app", "[fd00::1]"),
                                            ("fd00::1:5000/app", "fd00::1:5000")])
def test_a_registry_named_by_its_ipv6_address_is_refused_saying_why(text: str, host: str) -> None:
    """skopeo cannot pull from one (its grammar has no IPv6 host): said at the field, not at the pull."""
    with pytest.raises(ReferenceError) as refused:
        parse_reference(text)
    assert str(refused.value) == (
        f"{host!r} is not a valid registry host[:port]: a registry cannot be named by its IPv6 address: "
        "skopeo's reference grammar (containers/image's) has no IPv6 host yet (containers/container-libs "
        "issue 195); name it by a host name that resolves to the address")


def test_skopeo_refuses_a_registry_named_by_its_ipv6_address() -> None:
    """What the refusal above stands on: when this fails, skopeo has learnt IPv6 hosts, and the
    references can be let through (its `inspect` answers before reaching for the network)."""
    inspected = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "docker://[::1]:1/app:1.0"],
                               capture_output=True, text=True, timeout=60)
    assert inspected.returncode != 0 and "invalid reference format" in inspected.stderr, inspected.stderr
