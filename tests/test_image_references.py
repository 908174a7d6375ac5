"""Image references as Docker reads them (pure): what `image:` may say, how it is normalised,
and where skopeo is told to read it."""

from __future__ import annotations

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
