"""Smoke tests of the image fixtures: images built offline (tests/image_builder.py) against a
real registry and real skopeo (tests/registry.py), all inside a sandbox. What these pin is
what later image tests rely on: digests survive a push, diff_ids survive a pull and a
docker-archive round trip, an index resolves to the host's platform, a broken config still
pushes, and a registry that dies mid-pull makes skopeo fail rather than hang."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests import registry as registry_fixtures
from tests.image_builder import (
    BUSYBOX_APPLETS,
    Layer,
    blob_path,
    build,
    build_index,
    docker_archive,
    layer_entries,
    layout_manifest,
    push,
    skopeo,
)
from tests.registry import Registry, StallingProxy
from tests.sandbox import Sandbox

registry = registry_fixtures.registry
"""The `registry` fixture, bound by assignment: pytest finds fixtures among a module's names,
and pyflakes (which ignores `# noqa`) flags an imported one as unused."""


def inspect(sandbox: Sandbox, reference: str, *flags: str) -> str:
    return skopeo("inspect", "--tls-verify=false", *flags, reference, sandbox=sandbox).stdout


def test_push_inspect_and_pull_back_by_digest(sandbox: Sandbox, registry: Registry, tmp_path: Path) -> None:
    image = build(tmp_path / "layout", [Layer.busybox()], entrypoint=["/bin/sh", "-c"], cmd=["sleep 1"],
                  env={"PATH": "/bin", "GREETING": "hi"}, workdir="/tmp", user="1000:1000",
                  exposed_ports=[8080, "53/udp"], tag="v1")
    digest = push(image.ref, registry.address, "busybox:v1", sandbox)
    assert digest == image.manifest_digest

    remote = f"docker://{registry.address}/busybox:v1"
    summary = json.loads(inspect(sandbox, remote))
    assert (summary["Digest"], summary["Architecture"], summary["Env"]) == \
        (image.manifest_digest, "amd64", ["PATH=/bin", "GREETING=hi"])
    assert inspect(sandbox, remote, "--raw").encode() == image.blob(image.manifest_digest)
    assert inspect(sandbox, remote, "--config", "--raw").encode() == image.blob(image.config_digest)
    assert image.config["config"] == {
        "User": "1000:1000", "ExposedPorts": {"8080/tcp": {}, "53/udp": {}}, "Env": ["PATH=/bin", "GREETING=hi"],
        "Entrypoint": ["/bin/sh", "-c"], "Cmd": ["sleep 1"], "WorkingDir": "/tmp",
    }

    pulled = tmp_path / "pulled"
    skopeo("copy", "--src-tls-verify=false", f"docker://{registry.address}/busybox@{digest}", f"oci:{pulled}:x",
           sandbox=sandbox)
    manifest = layout_manifest(pulled, "x")
    config = json.loads(blob_path(pulled, manifest["config"]["digest"]).read_bytes())
    assert config["rootfs"]["diff_ids"] == image.diff_ids
    assert [layer["digest"] for layer in manifest["layers"]] == image.layer_digests


def test_shared_base_layer_is_reused_and_stored_once(sandbox: Sandbox, registry: Registry,
                                                     tmp_path: Path) -> None:
    base = build(tmp_path / "layout", [Layer.busybox()], cmd=["sh"], tag="base")
    script = Layer(files={"/app/run.sh": "echo app\n"}, modes={"/app/run.sh": 0o755})
    app = build(tmp_path / "layout", [Layer.busybox(), script], cmd=["/app/run.sh"], tag="app")
    assert app.layer_digests[0] == base.layer_digests[0]
    push(base.ref, registry.address, "shop:base", sandbox)

    # Only skopeo's debug log says a blob was skipped: without a terminal it prints
    # "Copying blob <digest>" for a reused blob too.
    second = skopeo("--debug", "copy", "--dest-tls-verify=false", app.ref, f"docker://{registry.address}/shop:app",
                    sandbox=sandbox)
    assert f"Skipping blob {base.layer_digests[0]} (already present)" in second.stderr
    assert f"Copying blob {base.layer_digests[0]}" in second.stdout
    push(app.ref, registry.address, "elsewhere:app", sandbox)  # another repository: uploaded again

    expected = [*base.layer_digests, *app.layer_digests[1:], base.config_digest, app.config_digest,
                base.manifest_digest, app.manifest_digest]
    stored = [path.parent.name for path in registry.blob_paths()]
    assert sorted(stored) == sorted(digest.removeprefix("sha256:") for digest in expected)


def test_multi_arch_index_resolves_to_the_host_platform(sandbox: Sandbox, registry: Registry,
                                                        tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    amd64 = build(layout, [Layer.busybox()], cmd=["sh"], tag=None)
    arm64 = build(layout, [Layer.busybox(), Layer(files={"/etc/arch": "arm64\n"})], cmd=["sh"],
                  architecture="arm64", variant="v8", tag=None)
    index = build_index(layout, {"linux/amd64": amd64, "linux/arm64/v8": arm64})
    assert push(index.ref, registry.address, "multi:1", sandbox) == index.manifest_digest

    remote = f"docker://{registry.address}/multi:1"
    assert inspect(sandbox, remote, "--raw").encode() == index.blob(index.manifest_digest)
    on_this_host = json.loads(inspect(sandbox, remote))
    # skopeo reports the index's digest next to the resolved image's platform and layers.
    assert (on_this_host["Digest"], on_this_host["Architecture"], on_this_host["Layers"]) == \
        (index.manifest_digest, "amd64", amd64.layer_digests)
    assert inspect(sandbox, remote, "--config", "--raw").encode() == amd64.blob(amd64.config_digest)
    as_arm = json.loads(skopeo("--override-arch", "arm64", "inspect", "--tls-verify=false", remote,
                               sandbox=sandbox).stdout)
    assert (as_arm["Architecture"], as_arm["Layers"]) == ("arm64", arm64.layer_digests)

    # Without --multi-arch=all only the host's image is pushed.
    assert push(index.ref, registry.address, "single:1", sandbox, multi_arch="system") == amd64.manifest_digest


def test_bad_diff_id_image_pushes_and_pulls(sandbox: Sandbox, registry: Registry, tmp_path: Path) -> None:
    image = build(tmp_path / "layout", [Layer.busybox()], bad_diff_id=True)
    good = build(tmp_path / "good", [Layer.busybox()])
    assert image.config["rootfs"]["diff_ids"] != image.diff_ids == good.diff_ids
    assert image.layer_digests == good.layer_digests

    assert push(image.ref, registry.address, "bad:1", sandbox) == image.manifest_digest
    remote = f"docker://{registry.address}/bad:1"
    assert inspect(sandbox, remote, "--config", "--raw").encode() == image.blob(image.config_digest)
    skopeo("copy", "--src-tls-verify=false", remote, f"oci:{tmp_path / 'pulled'}:x", sandbox=sandbox)


def test_registry_dying_mid_pull_fails_the_copy(sandbox: Sandbox, registry: Registry, tmp_path: Path) -> None:
    image = build(tmp_path / "layout", [Layer.busybox(), Layer.random(8 << 20)], cmd=["sh"])
    assert image.layer_sizes[1] > 8 << 20  # seeded random data does not compress
    push(image.ref, registry.address, "big:1", sandbox)

    with StallingProxy.start(sandbox, registry.address) as proxy:
        skopeo("copy", "--src-tls-verify=false", f"docker://{proxy.address}/big:1", f"oci:{tmp_path / 'ok'}:x",
               sandbox=sandbox, timeout=60)
        proxy.arm(cut_after=256 << 10)
        cut = skopeo("copy", "--src-tls-verify=false", f"docker://{proxy.address}/big:1",
                     f"oci:{tmp_path / 'cut'}:x", sandbox=sandbox, check=False, timeout=30)
        assert cut.returncode != 0
        assert "EOF" in cut.stderr, cut.stderr
        refused = skopeo("inspect", "--tls-verify=false", f"docker://{proxy.address}/big:1",
                         sandbox=sandbox, check=False, timeout=30)
        assert "connection refused" in refused.stderr, refused.stderr
    assert json.loads(inspect(sandbox, f"docker://{registry.address}/big:1"))["Digest"] == image.manifest_digest


def test_docker_archive_reads_back_with_the_same_diff_ids(tmp_path: Path) -> None:
    image = build(tmp_path / "layout", [Layer.busybox(), Layer(files={"/etc/motd": "hi\n"})], cmd=["sh"])
    archive = docker_archive(image.layout, "latest", tmp_path / "image.tar")

    summary = json.loads(skopeo("inspect", f"docker-archive:{archive}", tmpdir=tmp_path).stdout)
    assert summary["Layers"] == image.diff_ids  # layers are stored uncompressed, named by diff_id
    config = json.loads(skopeo("inspect", "--config", "--raw", f"docker-archive:{archive}", tmpdir=tmp_path).stdout)
    assert config["rootfs"]["diff_ids"] == image.diff_ids
    assert config["config"]["Cmd"] == ["sh"]


@pytest.mark.parametrize("compression", ["gzip", "zstd", None])
def test_builds_are_deterministic(tmp_path: Path, compression: str | None) -> None:
    layers = [Layer.busybox(), Layer(files={"/etc/motd": "hi\n"}, whiteouts=["/bin/awk"]),
              Layer.random(1 << 20, seed=7)]
    first = build(tmp_path / "one", layers, cmd=["sh"], compression=compression)  # type: ignore[arg-type]
    again = build(tmp_path / "two", layers, cmd=["sh"], compression=compression)  # type: ignore[arg-type]
    assert (first.manifest_digest, first.diff_ids) == (again.manifest_digest, again.diff_ids)
    assert (tmp_path / "one" / "index.json").read_bytes() == (tmp_path / "two" / "index.json").read_bytes()
    for digest, size in zip(first.layer_digests, first.layer_sizes):
        blob = blob_path(first.layout, digest).read_bytes()
        assert ("sha256:" + hashlib.sha256(blob).hexdigest(), len(blob)) == (digest, size)
    assert list((tmp_path / "one").rglob(".tmp-*")) == []


def test_layer_entries_are_sorted_with_whiteouts_and_fixed_metadata(tmp_path: Path) -> None:
    layer = Layer(files={"/srv/b.txt": "b", "/srv/a.txt": b"a"}, hardlinks={"/srv/link": "/srv/b.txt"},
                  symlinks={"/srv/latest": "a.txt"}, directories={"/srv/private": 0o700},
                  owners={"/srv/private": (1000, 1000)}, whiteouts=["/etc/old.conf"], opaque=["/var/cache"])
    image = build(tmp_path / "layout", [layer])
    entries = [(e.name, e.type, oct(e.mode), e.uid, e.gid, e.linkname, e.mtime, e.uname)
               for e in layer_entries(image.layout, image.layer_digests[0])]
    assert entries == [
        ("etc", b"5", "0o755", 0, 0, "", 0, ""),
        ("etc/.wh.old.conf", b"0", "0o0", 0, 0, "", 0, ""),
        ("srv", b"5", "0o755", 0, 0, "", 0, ""),
        ("srv/a.txt", b"0", "0o644", 0, 0, "", 0, ""),
        ("srv/b.txt", b"0", "0o644", 0, 0, "", 0, ""),
        ("srv/latest", b"2", "0o777", 0, 0, "a.txt", 0, ""),
        ("srv/private", b"5", "0o700", 1000, 1000, "", 0, ""),
        ("var", b"5", "0o755", 0, 0, "", 0, ""),
        ("var/cache", b"5", "0o755", 0, 0, "", 0, ""),
        ("var/cache/.wh..wh..opq", b"0", "0o0", 0, 0, "", 0, ""),
        ("srv/link", b"1", "0o644", 0, 0, "srv/b.txt", 0, ""),
    ]


def test_busybox_layer_has_users_and_applets(tmp_path: Path) -> None:
    image = build(tmp_path / "layout", [Layer.busybox()])
    entries = {e.name: e for e in layer_entries(image.layout, image.layer_digests[0])}
    assert {name: oct(entries[name].mode) for name in ("tmp", "proc", "sys", "dev", "bin/busybox")} == \
        {"tmp": "0o1777", "proc": "0o555", "sys": "0o555", "dev": "0o755", "bin/busybox": "0o755"}
    assert {entries[f"bin/{applet}"].linkname for applet in BUSYBOX_APPLETS} == {"busybox"}
    assert (entries["home/app"].uid, entries["home/app"].gid) == (1000, 1000)


def test_registry_restarts_with_its_storage_and_stops_for_good(sandbox: Sandbox, tmp_path: Path) -> None:
    image = build(tmp_path / "layout", [Layer.busybox()])
    with Registry.start(sandbox, port=5050) as started:
        assert started.address == "127.0.0.1:5050"
        push(image.ref, started.address, "kept:1", sandbox)
        started.restart()
        assert json.loads(inspect(sandbox, f"docker://{started.address}/kept:1"))["Digest"] == image.manifest_digest
        with pytest.raises(RuntimeError, match="address already in use"):
            Registry.start(sandbox, port=5050)
        started.stop()
        started.stop()
        assert sandbox.processes() == []
