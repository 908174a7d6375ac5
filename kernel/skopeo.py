"""skopeo, the containers project's image copier: what reconcile fetches images with.

Why skopeo: it speaks the registry protocol with everything users expect (TLS, the usual
credential files: `auth.json`, Docker's `config.json`; token auth; retries; multi-arch
indexes resolved to this host's platform) and writes OCI image layouts, skipping blobs the
layout already holds. reconcile keeps the layout and unpacks the layers itself (state.images).

Sources are skopeo transports: `docker://REF`, `oci:/DIR[:TAG]`, `docker-archive:/FILE`.
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

SKOPEO = ["skopeo"]
"""skopeo keeps a cache of which blobs registries hold in /var/lib/containers/cache (for root),
as every tool of the containers family does; the layout under the state dir is ours."""
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json")
_ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le",
                  "s390x": "s390x", "riscv64": "riscv64", "i686": "386"}
_BLOB_LINE = re.compile(r"Copying blob (sha256:[0-9a-f]{64})(.*)")


class SkopeoError(Exception):
    """skopeo failed; the message is its own last words."""


def host_architecture() -> str:
    machine = platform.machine()
    return _ARCHITECTURES.get(machine, machine)


def source_digest(source: str, tls_verify: bool) -> str:
    """The digest of the manifest `source` names for this host's platform, as the registry
    holds it (an index is resolved to its linux/<arch> entry), without pulling anything."""
    raw = _run(["inspect", "--raw", f"--tls-verify={str(tls_verify).lower()}", source])
    try:
        document = json.loads(raw)
    except ValueError:
        document = None
    if not isinstance(document, dict):
        raise SkopeoError(f"{source}: the registry answered something that is not a manifest")
    if document.get("mediaType") in INDEX_TYPES or "manifests" in document:
        return _platform_entry(source, document)
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def _platform_entry(source: str, index: dict) -> str:
    arch = host_architecture()
    entries = index.get("manifests")
    for entry in entries if isinstance(entries, list) else []:
        found = entry.get("platform") if isinstance(entry, dict) else None
        if isinstance(found, dict) and found.get("os") == "linux" and found.get("architecture") == arch \
                and isinstance(entry.get("digest"), str):
            return str(entry["digest"])
    raise SkopeoError(f"{source}: no image for linux/{arch} in this multi-platform image")


def copy(source: str, layout: Path, ref_name: str, tls_verify: bool, tmpdir: Path,
         on_blob: Callable[[str, bool], None]) -> str:
    """Copy `source` into the OCI layout under `ref_name`; returns the digest of the manifest
    as written there. `on_blob(digest, already_there)` is called as skopeo reports each blob;
    skopeo's temporary files go to `tmpdir`."""
    with tempfile.NamedTemporaryFile(prefix="digest-", dir=layout.parent) as digest_file:
        argv = [*SKOPEO, "--tmpdir", str(tmpdir), "copy", "--digestfile", digest_file.name]
        if source.startswith("docker://"):
            argv.append(f"--src-tls-verify={str(tls_verify).lower()}")
        argv += [source, f"oci:{layout}:{ref_name}"]
        proc = _start(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                      text=True, errors="replace")
        assert proc.stdout is not None
        output: list[str] = []
        for line in proc.stdout:
            output.append(line)
            blob = _BLOB_LINE.search(line)
            if blob:
                on_blob(blob.group(1), "skipped" in blob.group(2) or "exists" in blob.group(2))
        if proc.wait() != 0:
            raise SkopeoError(_last_words("".join(output)) or f"skopeo exited {proc.returncode}")
        return Path(digest_file.name).read_text().strip()


def _start(argv: list[str], **options: Any) -> subprocess.Popen[Any]:
    try:
        return subprocess.Popen(argv, **options)
    except FileNotFoundError:
        raise SkopeoError("skopeo is not installed (Debian package skopeo; scripts/setup.sh installs it)") from None


def _run(args: list[str]) -> bytes:
    """skopeo's output; SkopeoError with its last words if it fails."""
    with _start([*SKOPEO, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as started:
        stdout, stderr = started.communicate()
    if started.returncode != 0:
        raise SkopeoError(_last_words(stderr.decode(errors="replace")) or f"skopeo exited {started.returncode}")
    return bytes(stdout)


def _last_words(stderr: str) -> str:
    """skopeo's error, one line, without its log prefix (`time="..." level=fatal msg="..."`)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    if not lines:
        return ""
    last = lines[-1]
    message = re.search(r'msg="(.*)"\s*$', last)
    text = message.group(1).replace('\\"', '"') if message else last
    return " ".join(text.split())
