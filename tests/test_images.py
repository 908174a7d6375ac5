"""Images end to end, as a user runs them: a real registry on loopback inside the sandbox,
images built offline from busybox-static and pushed with skopeo, the CLI pulling them into its
layer store and running containers on their layers."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from kernel import procs
from reconcile.engine import pinning
from reconcile.engine.session import Target
from reconcile.engine.settings import Settings
from specs.loader import load_path
from tests import registry as registry_fixtures
from tests.image_builder import BuiltImage, Layer, build, build_index, docker_archive, push
from tests.registry import Registry, StallingProxy
from tests.sandbox import Sandbox
from tests.waiting import eventually, scaled
from tests.watch_agent import Agent

registry = registry_fixtures.registry
"""The `registry` fixture, bound by assignment (pyflakes flags an imported fixture as unused)."""

STACK = """\
name: img
networks:
  net: {{subnet: 10.91.0.0/24}}
containers:
{containers}"""


def stack(sandbox: Sandbox, **containers: str) -> str:
    """A stack file of containers given as flow mappings (`a="{image: ...}"`); its path."""
    body = "".join(f"  {key}: {spec}\n" for key, spec in containers.items())
    return str(sandbox.write("stack.yaml", STACK.format(containers=body)))


def app_image(path: Path, greeting: str = "image", tag: str = "v1", **config: object) -> BuiltImage:
    return build(path, [Layer.busybox(), Layer(files={"/srv/greeting": f"{greeting}\n"},
                                               owners={"/srv/greeting": (1000, 1000)})],
                 entrypoint=["/bin/sh", "-c"], cmd=["exec sleep 100000"],
                 env={"PATH": "/bin", "GREETING": greeting, "FROM_IMAGE": "1"}, workdir="/srv", user="1000:1000",
                 exposed_ports=[80, "53/udp"], tag=tag, **config)


def apply(sandbox: Sandbox, path: str, *flags: str) -> str:
    result = sandbox.reconcile("apply", *flags, path)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def run_in(sandbox: Sandbox, name: str, script: str) -> str:
    result = sandbox.reconcile("exec", name, "--", "sh", "-c", script)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip()


def container(sandbox: Sandbox, name: str) -> dict:
    """The container's row of `status` ({} while it has none)."""
    return sandbox.containers().get(name, {})


def images(sandbox: Sandbox) -> list[dict]:
    return json.loads(sandbox.reconcile("image", "ls", "-o", "json", check=True).stdout)


def assert_nothing_started(sandbox: Sandbox) -> None:
    assert sandbox.netns_names() == [] and sandbox.our_links() == []


def test_an_image_runs_by_tag_with_its_config_as_docker_reads_it(sandbox: Sandbox, registry: Registry,
                                                                   tmp_path: Path) -> None:
    image = app_image(tmp_path / "layout")
    digest = push(image, registry.address, "team/app:v1", sandbox)
    path = stack(sandbox, a=f"{{image: {registry.address}/team/app:v1, networks: [net], env: {{GREETING: spec}}}}")

    plan = apply(sandbox, path)
    assert f"{registry.address}/team/app:v1@{digest}" in plan
    # Entrypoint + Cmd, Env under the spec's, WorkingDir, User; the root is the image's layers.
    assert run_in(sandbox, "img/a", "echo $GREETING $FROM_IMAGE $(pwd) $(id -u):$(id -g); cat greeting") == \
        "spec 1 /srv 1000:1000\nimage"
    assert run_in(sandbox, "img/a", "test -e /usr/bin || echo no-host-root") == "no-host-root"
    assert run_in(sandbox, "img/a", "cat /proc/1/cmdline | tr '\\0' ' '").endswith("/bin/sh -c exec sleep 100000")
    row = container(sandbox, "a")
    assert (row["state"], row["image_digest"], sorted(row["exposed_ports"])) == ("running", digest,
                                                                                ["53/udp", "80/tcp"])
    assert sandbox.reconcile("diff", path).returncode == 0
    assert "no changes" in apply(sandbox, path).lower()
    # The layers are the store's, shared and never written: the container writes to its own layer.
    run_in(sandbox, "img/a", "echo changed > /srv/greeting")
    layer_files = list((sandbox.state_dir / "images" / "layers").glob("*/srv/greeting"))
    assert [p.read_text() for p in layer_files] == ["image\n"]
    assert sandbox.reconcile("down", path).returncode == 0
    registry.stop()
    assert sandbox.processes() == []


def test_an_image_with_a_tag_and_a_digest_is_pulled_by_its_digest(sandbox: Sandbox, registry: Registry,
                                                                   tmp_path: Path) -> None:
    """`name:tag@sha256:...`, as Renovate pins Compose files: skopeo takes no reference with
    both, and Docker pulls it by the digest (the tag is a label)."""
    digest = push(app_image(tmp_path / "layout"), registry.address, "team/app:v1", sandbox)
    pinned = f"{registry.address}/team/app:v1@{digest}"
    pulled = sandbox.reconcile("image", "pull", pinned)
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    path = stack(sandbox, a=f"{{image: '{pinned}', pull: always, networks: [net]}}")
    assert pinned in apply(sandbox, path)
    assert container(sandbox, "a")["image_digest"] == digest
    assert sandbox.reconcile("down", path).returncode == 0


def test_a_moved_tag_is_kept_until_pulled_then_recreates_with_old_and_new_digests(
        sandbox: Sandbox, registry: Registry, tmp_path: Path) -> None:
    old = push(app_image(tmp_path / "one"), registry.address, "app:stable", sandbox)
    path = stack(sandbox, a=f"{{image: {registry.address}/app:stable, networks: [net]}}")
    apply(sandbox, path)
    pid = container(sandbox, "a")["pid"]
    new = push(app_image(tmp_path / "two", greeting="moved"), registry.address, "app:stable", sandbox)
    assert new != old

    # pull: missing keeps the digest this host has.
    assert sandbox.reconcile("diff", path).returncode == 0
    assert "no changes" in apply(sandbox, path).lower() and container(sandbox, "a")["pid"] == pid

    # pull: always asks the registry: diff shows the recreate with both digests, touching nothing.
    always = stack(sandbox, a=f"{{image: {registry.address}/app:stable, pull: always, networks: [net]}}")
    shown = sandbox.reconcile("diff", always)
    assert shown.returncode == 2 and old in shown.stdout and new in shown.stdout, shown.stdout
    assert container(sandbox, "a")["pid"] == pid

    # `image pull` moves the tag here; the running container's image stays until nothing runs it.
    sandbox.reconcile("image", "pull", f"{registry.address}/app:stable", check=True)
    sandbox.reconcile("image", "prune", check=True)
    assert {row["digest"] for row in images(sandbox)} == {old, new}
    assert run_in(sandbox, "img/a", "cat /srv/greeting") == "image"
    assert sandbox.reconcile("diff", path).returncode == 2

    apply(sandbox, path, "--pull")
    assert container(sandbox, "a")["image_digest"] == new
    assert run_in(sandbox, "img/a", "cat /srv/greeting") == "moved"
    sandbox.reconcile("image", "prune", check=True)
    assert [row["digest"] for row in images(sandbox)] == [new]


def test_layers_are_shared_and_image_verbs_keep_what_runs(sandbox: Sandbox, registry: Registry,
                                                          tmp_path: Path) -> None:
    first = app_image(tmp_path / "layout", tag="one")
    second = build(tmp_path / "layout", [Layer.busybox(), Layer(files={"/srv/other": "x\n"})],
                   cmd=["sleep", "100000"], env={"PATH": "/bin"}, tag="two")
    push(first, registry.address, "first:1", sandbox)
    digest = push(second, registry.address, "second:1", sandbox)
    assert first.diff_ids[0] == second.diff_ids[0]

    pulled = sandbox.reconcile("image", "pull", f"{registry.address}/first:1", check=True).stdout
    assert "unpacked" in pulled
    by_digest = sandbox.reconcile("image", "pull", "-o", "json", f"{registry.address}/second@{digest}", check=True)
    events = [json.loads(line) for line in by_digest.stdout.splitlines() if line.startswith("{")]
    layers = [e for e in events if e.get("event") == "layer"]
    assert [e["status"] for e in layers] == ["exists", "done"], events  # the base is unpacked once
    assert len(list((sandbox.state_dir / "images" / "layers").iterdir())) == 3

    path = stack(sandbox, a=f"{{image: {registry.address}/first:1, networks: [net]}}")
    apply(sandbox, path)
    rows = {row["image"]: row for row in images(sandbox)}
    assert rows[f"{registry.address}/first:1"]["used_by"] == ["img/a"]
    refused = sandbox.reconcile("image", "rm", f"{registry.address}/first:1")
    assert refused.returncode == 1 and "img/a" in refused.stderr
    # Another tag of what runs is only a name: it goes, as `docker rmi` untags.
    push(first, registry.address, "first:2", sandbox)
    sandbox.reconcile("image", "pull", f"{registry.address}/first:2", check=True)
    untagged = sandbox.reconcile("image", "rm", f"{registry.address}/first:2")
    assert untagged.returncode == 0, untagged.stderr
    assert sandbox.reconcile("image", "rm", f"{registry.address}/first:1").returncode == 1  # the last name of it

    removed = sandbox.reconcile("image", "rm", digest, check=True).stdout  # the digest `image ls` shows
    assert f"{registry.address}/second@{digest}" in removed and len(images(sandbox)) == 1
    assert "nothing to remove" in sandbox.reconcile("image", "prune", check=True).stdout
    assert len(list((sandbox.state_dir / "images" / "layers").iterdir())) == 2
    assert run_in(sandbox, "img/a", "cat /srv/greeting") == "image"

    assert sandbox.reconcile("down", path).returncode == 0
    sandbox.reconcile("image", "rm", f"{registry.address}/first:1", check=True)
    assert images(sandbox) == [] and list((sandbox.state_dir / "images" / "layers").iterdir()) == []


def test_whiteouts_and_opaque_directories_hide_lower_layers(sandbox: Sandbox, registry: Registry,
                                                            tmp_path: Path) -> None:
    image = build(tmp_path / "layout", [
        Layer.busybox(),
        Layer(files={"/etc/secret": "x", "/data/a": "a", "/data/b": "b", "/keep/k": "k"}),
        Layer(whiteouts=["/etc/secret"], opaque=["/data"], files={"/data/c": "c"}),
    ], cmd=["sleep", "100000"], env={"PATH": "/bin"})
    push(image, registry.address, "layered:1", sandbox)
    apply(sandbox, stack(sandbox, a=f"{{image: {registry.address}/layered:1, networks: [net]}}"))
    assert run_in(sandbox, "img/a", "ls /data; ls /keep; test -e /etc/secret || echo gone") == "c\nk\ngone"


def test_userns_auto_runs_an_image_as_an_unprivileged_range(sandbox: Sandbox, registry: Registry,
                                                             tmp_path: Path) -> None:
    image = build(tmp_path / "layout", [Layer.busybox(), Layer(files={"/srv/greeting": "hi\n"})],
                  cmd=["sleep", "100000"], env={"PATH": "/bin"})
    push(image, registry.address, "plain:1", sandbox)
    path = stack(sandbox, a=f"{{image: {registry.address}/plain:1, userns: auto, networks: [net]}}")
    apply(sandbox, path)
    # Root inside, owning the image's files as it sees them, and writing to its own layer...
    assert run_in(sandbox, "img/a", "id -u; stat -c %u /srv/greeting; echo x > /srv/greeting && cat /srv/greeting") \
        == "0\n0\nx"
    # ...an unprivileged uid of its own range outside.
    status = Path(f"/proc/{container(sandbox, 'a')['pid']}/status").read_text()
    uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
    assert uid >= 2 ** 30
    assert [p.read_text() for p in (sandbox.state_dir / "images" / "layers").glob("*/srv/greeting")] == ["hi\n"]
    assert sandbox.reconcile("down", path).returncode == 0
    mounts = Path(f"/proc/{sandbox.pid}/mountinfo").read_text()
    assert str(sandbox.state_dir / "containers") not in mounts.replace(f"{sandbox.state_dir}/containers ", "")


def test_local_sources_run_offline(sandbox: Sandbox, tmp_path: Path) -> None:
    image = app_image(tmp_path / "layout", greeting="offline")
    archive = docker_archive(image.layout, "v1", tmp_path / "app.tar")
    path = stack(sandbox, a=f"{{image: 'oci:{image.layout}:v1', networks: [net]}}",
                 b=f"{{image: 'docker-archive:{archive}', networks: [net]}}")
    apply(sandbox, path)
    assert run_in(sandbox, "img/a", "cat greeting") == run_in(sandbox, "img/b", "cat greeting") == "offline"
    assert "no changes" in apply(sandbox, path).lower()


SIGNALS_SCRIPT = ("trap 'echo got INT >> /out/signals; exit 0' INT; trap 'echo got USR1 >> /out/signals; exit 0' USR1; "
                  "trap 'echo got TERM >> /out/signals' TERM; echo ready >> /out/signals; "
                  "while :; do sleep 0.1; done")
"""Exits 0 on INT and USR1, ignores TERM (as postgres's fast shutdown is SIGINT): a stop with
SIGTERM waits out the grace period and kills it."""


def test_a_container_is_stopped_with_its_images_stop_signal_unless_its_spec_names_one(
        sandbox: Sandbox, tmp_path: Path) -> None:
    """As Docker: the image's STOPSIGNAL (nginx's SIGQUIT, postgres's SIGINT), else SIGTERM; the
    spec's stop_signal over both. A process is stopped with the signal it was started to be
    stopped with, whatever the spec says since (its program expects that one)."""
    out = tmp_path / "out"
    out.mkdir()
    image = build(tmp_path / "layout", [Layer.busybox()], entrypoint=["/bin/sh", "-c"], cmd=[SIGNALS_SCRIPT],
                  env={"PATH": "/bin"}, tag="v1", stop_signal="SIGINT")

    def spec(run: str, signal: str = "") -> str:
        return stack(sandbox, a=f"{{image: 'oci:{image.layout}:v1', networks: [net], stop_grace: 3, {signal}"
                                f"volumes: ['{out}:/out'], env: {{RUN: '{run}'}}}}")

    def signals() -> str:
        return (out / "signals").read_text() if (out / "signals").exists() else ""

    apply(sandbox, spec("1"))
    eventually(signals, "ready\n")
    apply(sandbox, spec("2", "stop_signal: USR1, "))  # a recreate: the old process takes the image's INT
    eventually(signals, "ready\ngot INT\nready\n")
    assert container(sandbox, "a")["state"] == "running"
    assert sandbox.reconcile("down", spec("2", "stop_signal: USR1, ")).returncode == 0
    assert signals() == "ready\ngot INT\nready\ngot USR1\n"


def test_a_docker_format_image_runs_pinned_to_the_registrys_digest(sandbox: Sandbox, registry: Registry,
                                                                   tmp_path: Path) -> None:
    """As Docker Hub serves most images: a Docker v2 manifest (pushed from a Docker archive),
    which skopeo converts to OCI, config included; the pin is the registry's digest."""
    archive = docker_archive(app_image(tmp_path / "layout", greeting="docker").layout, "v1", tmp_path / "app.tar")
    digest = push(f"docker-archive:{archive}", registry.address, "docker:1", sandbox)
    manifest = sandbox.run("skopeo", "inspect", "--raw", "--tls-verify=false",
                           f"docker://{registry.address}/docker:1").stdout
    assert json.loads(manifest)["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    path = stack(sandbox, a=f"{{image: {registry.address}/docker:1, networks: [net]}}")
    apply(sandbox, path)
    assert container(sandbox, "a")["image_digest"] == digest
    assert run_in(sandbox, "img/a", "cat greeting; echo $GREETING") == "docker\ndocker"
    assert "no changes" in apply(sandbox, path).lower()


def test_an_image_whose_blobs_are_damaged_is_skipped_and_pruned(sandbox: Sandbox, tmp_path: Path) -> None:
    image = app_image(tmp_path / "layout")
    sandbox.reconcile("image", "pull", f"oci:{image.layout}:v1", check=True)
    assert len(images(sandbox)) == 1
    layout = sandbox.state_dir / "images" / "oci"
    (layout / "blobs" / "sha256" / image.config_digest.split(":")[1]).unlink()
    assert images(sandbox) == []  # listed no more, and nothing fails on it
    sandbox.reconcile("image", "prune", check=True)
    assert json.loads((layout / "index.json").read_text())["manifests"] == []
    assert list((sandbox.state_dir / "images" / "layers").iterdir()) == []


def test_a_multi_platform_image_runs_this_hosts_platform(sandbox: Sandbox, registry: Registry,
                                                         tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    amd64 = build(layout, [Layer.busybox(), Layer(files={"/arch": "amd64"})], cmd=["sleep", "100000"],
                  env={"PATH": "/bin"}, tag=None)
    arm64 = build(layout, [Layer(files={"/arch": "arm64"})], cmd=["false"], architecture="arm64", tag=None)
    push(build_index(layout, {"linux/amd64": amd64, "linux/arm64": arm64}), registry.address, "multi:1", sandbox)
    apply(sandbox, stack(sandbox, a=f"{{image: {registry.address}/multi:1, networks: [net]}}"))
    assert container(sandbox, "a")["image_digest"] == amd64.manifest_digest
    assert run_in(sandbox, "img/a", "cat /arch") == "amd64"
    # A variant listed first: `diff` plans what a pull takes (skopeo's choice: no variant on
    # amd64), not the first entry of this architecture.
    v3 = build(layout, [Layer(files={"/arch": "v3"})], cmd=["false"], variant="v3", tag=None)
    push(build_index(layout, {"linux/amd64/v3": v3, "linux/amd64": amd64}), registry.address, "multi:2", sandbox)
    planned = sandbox.reconcile("diff", stack(sandbox, a=f"{{image: {registry.address}/multi:2, pull: always, "
                                                       "networks: [net]}"))
    assert planned.returncode == 2 and f"multi:2@{amd64.manifest_digest}" in planned.stdout, planned.stdout


def test_losing_the_state_store_restarts_nothing(sandbox: Sandbox, registry: Registry, tmp_path: Path) -> None:
    push(app_image(tmp_path / "layout"), registry.address, "app:v1", sandbox)
    path = stack(sandbox, a=f"{{image: {registry.address}/app:v1, networks: [net]}}")
    apply(sandbox, path)
    pid = container(sandbox, "a")["pid"]
    (sandbox.state_dir / "state.db").unlink()
    registry.stop()  # and the registry is gone too: the pin comes from the host
    apply(sandbox, path)
    assert container(sandbox, "a")["pid"] == pid
    assert sandbox.reconcile("diff", path).returncode == 0


def test_pull_failures_are_clear_errors_that_change_nothing(sandbox: Sandbox, registry: Registry,
                                                            tmp_path: Path) -> None:
    good = push(app_image(tmp_path / "good"), registry.address, "good:1", sandbox)
    push(app_image(tmp_path / "bad", bad_diff_id=True), registry.address, "corrupt:1", sandbox)
    running = stack(sandbox, a=f"{{image: {registry.address}/good:1, networks: [net]}}")
    apply(sandbox, running)
    pid = container(sandbox, "a")["pid"]
    layers = sorted(p.name for p in (sandbox.state_dir / "images" / "layers").iterdir())

    cases = {
        "unknown": (f"{registry.address}/nothing:1", "nothing"),
        "bad digest": (f"{registry.address}/good@sha256:{'0' * 64}", "manifest unknown"),
        "corrupt layer": (f"{registry.address}/corrupt:1", "does not match its diff_id"),
    }
    for case, (reference, words) in cases.items():
        path = stack(sandbox, a=f"{{image: {registry.address}/good:1, networks: [net]}}",
                     b=f"{{image: '{reference}', networks: [net]}}")
        result = sandbox.reconcile("apply", path)
        assert result.returncode == 1, case
        assert "stack.yaml:" in result.stderr and "containers.b.image" in result.stderr, (case, result.stderr)
        assert words in result.stderr, (case, result.stderr)
        assert "Traceback" not in result.stderr
        assert set(sandbox.containers()) == {"a"} and container(sandbox, "a")["pid"] == pid, case
        assert sorted(p.name for p in (sandbox.state_dir / "images" / "layers").iterdir()) == layers, case
        assert [row["digest"] for row in images(sandbox)] == [good], case

    registry.stop()
    down = stack(sandbox, a=f"{{image: {registry.address}/good:1, networks: [net]}}",
                 b=f"{{image: {registry.address}/other:1, networks: [net]}}")
    result = sandbox.reconcile("apply", down)
    assert result.returncode == 1 and "containers.b.image" in result.stderr
    assert container(sandbox, "a")["pid"] == pid
    registry.restart()
    push(app_image(tmp_path / "other"), registry.address, "other:1", sandbox)
    apply(sandbox, down)
    assert container(sandbox, "b")["state"] == "running" and container(sandbox, "a")["pid"] == pid


def test_a_registry_cut_mid_pull_leaves_no_partial_layer(sandbox: Sandbox, registry: Registry,
                                                         tmp_path: Path) -> None:
    image = build(tmp_path / "layout", [Layer.busybox(), Layer.random(8 * 1024 * 1024)],
                  cmd=["sleep", "100000"], env={"PATH": "/bin"})
    push(image, registry.address, "big:1", sandbox)
    with StallingProxy.start(sandbox, registry.address, cut_after=2 * 1024 * 1024) as proxy:
        path = stack(sandbox, a=f"{{image: {proxy.address}/big:1, networks: [net]}}")
        result = sandbox.reconcile("apply", path, timeout=120)
    assert result.returncode == 1 and "containers.a.image" in result.stderr, result.stderr
    assert_nothing_started(sandbox)
    assert images(sandbox) == []
    assert [p.name for p in (sandbox.state_dir / "images" / "layers").iterdir()
            if not p.name.startswith(".")] in ([], [Path(image.diff_ids[0]).name.split(":")[1]])

    apply(sandbox, stack(sandbox, a=f"{{image: {registry.address}/big:1, networks: [net]}}"))
    assert container(sandbox, "a")["state"] == "running"


def test_a_pull_killed_mid_stream_takes_skopeo_with_it_and_leaves_no_layer(sandbox: Sandbox, registry: Registry,
                                                                            tmp_path: Path) -> None:
    """kill -9 while a layer streams in (the registry stalled mid-blob): skopeo's image proxy
    ends with its socket, no layer is left under its name, and the next pull completes."""
    image = build(tmp_path / "layout", [Layer.busybox(), Layer.random(8 * 1024 * 1024)],
                  cmd=["sleep", "100000"], env={"PATH": "/bin"})
    push(image, registry.address, "big:1", sandbox)
    layers = sandbox.state_dir / "images" / "layers"
    with StallingProxy.start(sandbox, registry.address, cut_after=2 * 1024 * 1024, hold=600) as proxy:
        puller = sandbox.spawn(sys.executable, "-m", "reconcile", "image", "pull", f"{proxy.address}/big:1")
        try:
            eventually(lambda: any(p.name.startswith(".tmp-") for p in layers.glob("*")) if layers.is_dir() else False,
                       True, timeout=60)
            proxies = children(puller.pid)
            assert proxies, "no skopeo under the pull"
        finally:
            puller.kill()
            puller.wait()
        # read_proc: None once gone or a zombie
        eventually(lambda: [pid for pid in proxies if procs.read_proc(pid) is not None], [], timeout=5)
    sandbox.reconcile("image", "pull", f"{registry.address}/big:1", check=True)
    assert sorted(p.name for p in layers.iterdir()) == sorted(d.split(":")[1] for d in image.diff_ids)


def children(pid: int) -> list[int]:
    """The processes `pid` started (every thread's), by pid."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def test_a_full_disk_fails_the_pull_cleanly(sandbox: Sandbox, registry: Registry, tmp_path: Path) -> None:
    """A layer bigger than the store's free space (a 6 MiB tmpfs): the unpack fails, not the fetch."""
    image = build(tmp_path / "layout", [Layer.busybox(), Layer.random(8 * 1024 * 1024)],
                  cmd=["sleep", "100000"], env={"PATH": "/bin"})
    push(image, registry.address, "big:1", sandbox)
    store = sandbox.state_dir / "images"
    store.mkdir(parents=True)
    sandbox.run("mount", "-t", "tmpfs", "-o", "size=6m", "rc-test-full", str(store))
    path = stack(sandbox, a=f"{{image: {registry.address}/big:1, networks: [net]}}")
    result = sandbox.reconcile("apply", path)
    assert result.returncode == 1 and "containers.a.image" in result.stderr, result.stderr
    assert "space" in result.stderr.lower(), result.stderr
    assert_nothing_started(sandbox)
    assert sandbox.run("sh", "-c", f"ls {store}/layers | grep -v '^[.]' || true").stdout.strip() in (
        "", image.diff_ids[0].split(":")[1])
    sandbox.run("umount", str(store))
    apply(sandbox, path)
    assert container(sandbox, "a")["state"] == "running"


def test_image_spec_errors_name_the_field(sandbox: Sandbox) -> None:
    cases = {
        "{image: 'Busybox:1', networks: [net]}": "containers.a.image: invalid image reference",
        "{image: busybox, rootfs: /srv, networks: [net]}": "containers.a.rootfs: image and rootfs are exclusive",
        "{networks: [net]}": "missing required field 'command'",
        "{image: busybox, pull: sometimes, networks: [net]}": "containers.a.pull",
    }
    for spec, words in cases.items():
        result = sandbox.reconcile("apply", stack(sandbox, a=spec))
        assert result.returncode == 1 and words in result.stderr, (spec, result.stderr)
        assert "stack.yaml:" in result.stderr
    assert_nothing_started(sandbox)


def _big_image_and_a_stack_directory(sandbox: Sandbox, registry: Registry, tmp_path: Path) -> Path:
    """`big:1` pushed to the registry (4 MiB over busybox: a pull a stalling proxy can hold),
    and an empty directory for an agent to watch."""
    image = build(tmp_path / "layout", [Layer.busybox(), Layer.random(4 * 1024 * 1024)],
                  cmd=["sleep", "100000"], env={"PATH": "/bin"})
    push(image, registry.address, "big:1", sandbox)
    specs = sandbox.workdir / "specs"
    specs.mkdir()
    return specs


def test_the_watch_agent_pulls_in_the_background_and_repairs_meanwhile(sandbox: Sandbox, registry: Registry,
                                                                        tmp_path: Path) -> None:
    specs = _big_image_and_a_stack_directory(sandbox, registry, tmp_path)
    host_container = "{command: sleep 100000, networks: [net]}"
    with StallingProxy.start(sandbox, registry.address, cut_after=1024 * 1024, hold=30.0) as proxy:
        (specs / "stack.yaml").write_text(STACK.format(
            containers=f"  a: {host_container}\n  b: {{image: {proxy.address}/big:1, networks: [net]}}\n"))
        agent = Agent(sandbox, specs, "--resync", "1", "--debounce", "50")
        try:
            assert eventually(lambda: container(sandbox, "a").get("state"), "running", timeout=30) == "running"
            assert eventually(lambda: agent.saw("pulling", image=f"{proxy.address}/big:1"), True)
            veth = next(link["ifname"] for link in sandbox.our_links() if link["ifname"].startswith("rcv"))
            sandbox.run("ip", "link", "del", veth)  # drift while the pull hangs: repaired at once
            assert eventually(lambda: sandbox.link(veth) is not None, True, timeout=10)
            assert container(sandbox, "b").get("state") != "running" and not agent.saw("pulled")

            (specs / "stack.yaml").write_text(STACK.format(  # the same image, from the registry itself
                containers=f"  a: {host_container}\n  b: {{image: {registry.address}/big:1, networks: [net]}}\n"))
            assert eventually(lambda: container(sandbox, "b").get("state"), "running", timeout=60) == "running"
            assert agent.saw("pulled", image=f"{registry.address}/big:1")
            # Beside the hung pull, not after it: pulls share the image store (it waited only
            # for the layer the hung pull held, until the proxy let it go).
            assert not agent.saw("waiting", image=f"{registry.address}/big:1")
        finally:
            agent.stop()


def test_the_watch_agent_pulls_in_a_process_of_its_own_which_ends_with_it(sandbox: Sandbox, registry: Registry,
                                                                         tmp_path: Path) -> None:
    """reconcile/watch/pulls.py: the agent hashes no layer itself; stopped, it leaves no pull behind."""
    specs = _big_image_and_a_stack_directory(sandbox, registry, tmp_path)
    with StallingProxy.start(sandbox, registry.address, cut_after=1024 * 1024, hold=120.0) as proxy:
        (specs / "stack.yaml").write_text(STACK.format(containers=f"  b: {{image: {proxy.address}/big:1}}\n"))
        agent = Agent(sandbox, specs, "--resync", "600", "--debounce", "50")
        try:
            assert eventually(lambda: len(pulls(sandbox, proxy.address)), 1, timeout=30) == 1
        finally:
            assert agent.stop() == 0
        assert pulls(sandbox, proxy.address) == []  # ended before the agent was
        assert agent.lines[-1]["event"] == "agent stopped"  # no failed pull reported after it


def test_a_pull_its_registry_stops_feeding_is_given_up_and_frees_the_store(sandbox: Sandbox, registry: Registry,
                                                                           tmp_path: Path) -> None:
    """kernel/skopeo.py's stall watch: a registry silent on an open connection (the proxy holds
    it for 120 s) ends the pull after RECONCILE_PULL_STALL_TIMEOUT, not after the run's 60 s
    timeout, and the image store's lock is free for the next pull."""
    _big_image_and_a_stack_directory(sandbox, registry, tmp_path)
    with StallingProxy.start(sandbox, registry.address, cut_after=1024 * 1024, hold=120.0) as proxy:
        stalled = sandbox.run("env", "RECONCILE_PULL_STALL_TIMEOUT=2", sys.executable, "-m", "reconcile", "image",
                              "pull", f"{proxy.address}/big:1", check=False, timeout=60)
        assert stalled.returncode == 1, stalled.stdout + stalled.stderr
        assert "no data from the registry for 2 s (RECONCILE_PULL_STALL_TIMEOUT)" in stalled.stderr, stalled.stderr
        assert sandbox.reconcile("image", "pull", f"{registry.address}/big:1", timeout=60).returncode == 0
    assert [row["image"] for row in images(sandbox)] == [f"{registry.address}/big:1"]


def pulls(sandbox: Sandbox, address: str) -> list[int]:
    """The pids of the agent's pulls (reconcile/watch/pulls.py) of images behind `address`, in
    this sandbox (another's registry or proxy may have the same address in its own netns)."""
    return [pid for pid, argv in sandbox.command_lines().items()
            if "reconcile.watch.pulls" in argv and any(argument.startswith(address) for argument in argv)]


def test_a_focused_resolution_pins_its_containers_and_their_dependencies_as_a_whole_one(
        sandbox: Sandbox, tmp_path: Path) -> None:
    """The watch agent's focused pass resolves the images of its containers and of what they
    depend on (a start waits on a dependency's healthcheck, here its image's) exactly as a pass
    over everything does, and leaves the stack's other containers as the spec has them."""
    checked = build(tmp_path / "layout", [Layer.busybox()], cmd=["sleep", "100000"], env={"PATH": "/bin"},
                    healthcheck={"Test": ["CMD", "true"], "Interval": 1_000_000_000}, tag="v1")
    image = f"oci:{checked.layout}:v1"
    sandbox.reconcile("image", "pull", image, check=True)
    waits = "depends_on: {db: {condition: service_healthy}}"
    path = stack(sandbox, web=f"{{image: '{image}', networks: [net], {waits}}}",
                 db=f"{{image: '{image}', networks: [net]}}", other=f"{{image: '{image}', networks: [net]}}")
    target = Target.of_files(load_path(Path(path)))
    settings = Settings.resolve(str(sandbox.state_dir), None)
    whole = pinning.resolve(target, settings, pinning.Pulling(allowed=False)).stacks["img"].containers
    focused = pinning.resolve(target, settings, pinning.Pulling(allowed=False),
                              [("img", "web")]).stacks["img"].containers
    assert whole["db"].healthcheck is not None and "@sha256:" in (whole["web"].image or "")
    assert focused["web"] == whole["web"] and focused["db"] == whole["db"]
    assert focused["other"] == target.stacks["img"].containers["other"] != whole["other"]

    # The agent's repair of a killed `web` is such a pass: it waits on db's health and restarts it.
    specs = sandbox.workdir / "specs"
    specs.mkdir()
    (specs / "stack.yaml").write_text(Path(path).read_text())
    agent = Agent(sandbox, specs, "--resync", "600", "--debounce", "50")
    try:
        assert eventually(lambda: container(sandbox, "web").get("state"), "running", timeout=60) == "running"
        killed, mark = container(sandbox, "web")["pid"], len(agent.lines)
        os.kill(killed, signal.SIGKILL)
        assert eventually(lambda: container(sandbox, "web").get("pid") not in (None, killed), True, timeout=30)
        assert eventually(lambda: [(r["event"], r.get("object")) for r in agent.lines[mark:]
                                   if r.get("event") in ("change", "error")], [("change", "img/web")])
    finally:
        agent.stop()


def test_an_image_that_cannot_be_had_is_its_containers_only_error(sandbox: Sandbox) -> None:
    """A container whose image is missing is reported for that, not also judged for the
    healthcheck its image would have given a dependent."""
    missing = "{image: 'oci:/nonexistent/layout:v1', pull: never, networks: [net]}"
    path = stack(sandbox, web="{image: 'oci:/nonexistent/layout:v1', pull: never, networks: [net], "
                              "depends_on: {db: {condition: service_healthy}}}", db=missing)
    result = sandbox.reconcile("diff", path)
    assert result.returncode == 1
    assert result.stderr.count("is not on this host (pull: never)") == 2 and "healthcheck" not in result.stderr


def test_prune_keeps_the_images_of_a_stack_whose_recorded_spec_no_longer_validates(
        sandbox: Sandbox, tmp_path: Path) -> None:
    """A recorded spec a newer release refuses still names its images: prune neither fails on it
    nor removes an image its stopped container starts from again."""
    image = app_image(tmp_path / "layout")
    path = stack(sandbox, a=f"{{image: 'oci:{image.layout}:v1', networks: [net]}}")
    apply(sandbox, path)
    pid = container(sandbox, "a")["pid"]
    with sqlite3.connect(sandbox.state_dir / "state.db") as db:
        db.execute("UPDATE stacks SET spec_json = json_set(spec_json, '$.bogus', 1) WHERE name = 'img'")
    os.kill(pid, signal.SIGKILL)
    assert eventually(lambda: os.path.exists(f"/proc/{pid}"), False) is False
    pruned = sandbox.reconcile("image", "prune")
    assert (pruned.returncode, pruned.stdout, pruned.stderr) == (0, "nothing to remove\n", "")
    assert [row["image"] for row in images(sandbox)] == [f"oci:{image.layout}:v1"]
    assert sandbox.reconcile("down", path).returncode == 0


def test_prune_keeps_the_layers_mounted_roots_use_when_the_store_lost_their_image(
        sandbox: Sandbox, tmp_path: Path) -> None:
    """The mark of a root names its image's digest, but an image the store can no longer read
    (its config blob lost) is no image: only the mounted roots' lowers keep its layers. A
    `userns: auto` root's lowers are idmapped binds of the layers under the container's
    `lower/`, not the store's paths: they count as the store's layers all the same."""
    plain = app_image(tmp_path / "plain", greeting="plain")
    shifted = app_image(tmp_path / "shifted", greeting="shifted")
    path = stack(sandbox, a=f"{{image: 'oci:{plain.layout}:v1', networks: [net]}}",
                 b=f"{{image: 'oci:{shifted.layout}:v1', userns: auto, networks: [net]}}")
    apply(sandbox, path)
    layers = sandbox.state_dir / "images" / "layers"
    kept = sorted(p.name for p in layers.iterdir())
    assert len(kept) == 3  # busybox shared, one greeting layer each
    blobs = sandbox.state_dir / "images" / "oci" / "blobs" / "sha256"
    for image in (plain, shifted):
        (blobs / image.config_digest.split(":")[1]).unlink()
    assert images(sandbox) == []

    pruned = sandbox.reconcile("image", "prune")
    assert pruned.returncode == 0, pruned.stderr
    assert sorted(p.name for p in layers.iterdir()) == kept
    assert run_in(sandbox, "img/a", "cat greeting") == "plain"
    assert run_in(sandbox, "img/b", "cat greeting") == "shifted"
    assert sandbox.reconcile("down", path).returncode == 0
    sandbox.reconcile("image", "prune", check=True)
    assert list(layers.iterdir()) == []


# --- pulls side by side -------------------------------------------------------------------

SLOW_BLOB = scaled(1.0)
"""Seconds the proxy holds each blob GET: a window wide enough for pulls under way at once to
be seen side by side on a busy machine."""


def small_images(path: Path, *names: str) -> dict[str, BuiltImage]:
    """Images sharing the busybox layer, each with one small layer of its own, by name (and tag)."""
    return {name: build(path, [Layer.busybox(), Layer(files={f"/srv/{name}": f"{name}\n"})],
                        cmd=["sleep", "100000"], env={"PATH": "/bin"}, tag=name) for name in names}


def layer_names(sandbox: Sandbox) -> list[str]:
    return sorted(p.name for p in (sandbox.state_dir / "images" / "layers").iterdir())


def hexes(*built: BuiltImage) -> list[str]:
    return sorted({diff_id.split(":")[1] for image in built for diff_id in image.diff_ids})


def pull_process(sandbox: Sandbox, reference: str) -> subprocess.Popen[str]:
    return sandbox.spawn(sys.executable, "-m", "reconcile", "image", "pull", reference)


def finished(process: subprocess.Popen[str], timeout: float = 120) -> int:
    code = process.wait(scaled(timeout))
    assert code == 0, process.stderr.read() if process.stderr else code
    return code


def test_two_pulls_at_once_run_side_by_side_and_fetch_their_shared_layer_once(
        sandbox: Sandbox, registry: Registry, tmp_path: Path) -> None:
    built = small_images(tmp_path / "layout", "first", "second")
    for name, image in built.items():
        push(image, registry.address, f"{name}:1", sandbox)
    with StallingProxy.start(sandbox, registry.address) as proxy:
        proxy.delay(SLOW_BLOB)
        pulls = [pull_process(sandbox, f"{proxy.address}/{name}:1") for name in built]
        for process in pulls:
            finished(process)
        seen = proxy.seen()
    assert seen["most_repositories"] == 2, seen  # neither waited for the other
    shared_layer = built["first"].layer_digests[0]
    assert seen["gets"][shared_layer] == 1, seen  # the other pull waited for it, then found it in
    assert sorted(row["image"] for row in images(sandbox)) == [f"{proxy.address}/{name}:1" for name in built]
    assert layer_names(sandbox) == hexes(*built.values())  # each whole, nothing left over


def test_a_removal_waits_for_the_pulls_under_way_and_a_pull_for_a_removal(
        sandbox: Sandbox, registry: Registry, tmp_path: Path) -> None:
    built = small_images(tmp_path / "layout", "kept", "doomed")
    for name, image in built.items():
        push(image, registry.address, f"{name}:1", sandbox)
    sandbox.reconcile("image", "pull", f"{registry.address}/doomed:1", check=True)
    with StallingProxy.start(sandbox, registry.address) as proxy:
        proxy.delay(2 * SLOW_BLOB)
        puller = pull_process(sandbox, f"{proxy.address}/kept:1")
        eventually(lambda: bool(proxy.seen()["gets"]), True, timeout=30)  # under way: it holds the lock
        removal = sandbox.reconcile("image", "rm", f"{registry.address}/doomed:1")
        assert removal.returncode == 0, removal.stderr
        assert f"waiting for the image pulls under way (pid {puller.pid}) to finish..." in removal.stderr
        finished(puller)
    assert [row["image"] for row in images(sandbox)] == [f"{proxy.address}/kept:1"]
    assert layer_names(sandbox) == hexes(built["kept"])

    # A removal holding the store (a process holding its lock exclusive stands in for it): a
    # pull waits, says so, then runs.
    holder = sandbox.spawn(sys.executable, "-c", "import fcntl, os, sys, time; "
                           "fcntl.flock(os.open(sys.argv[1], os.O_RDWR), fcntl.LOCK_EX); time.sleep(600)",
                           str(sandbox.state_dir / "images.lock"))
    try:
        eventually(lambda: sandbox.run("flock", "-n", "-s", str(sandbox.state_dir / "images.lock"), "true",
                                       check=False).returncode, 1, timeout=10)
        puller = pull_process(sandbox, f"{registry.address}/doomed:1")
        assert puller.stderr is not None
        assert "waiting for an image removal (pid " in puller.stderr.readline()
        assert puller.poll() is None
    finally:
        holder.kill()
        holder.wait()
    finished(puller)
    assert len(images(sandbox)) == 2


def test_apply_pulls_a_stacks_images_side_by_side_and_reports_every_failure_at_its_field(
        sandbox: Sandbox, registry: Registry, tmp_path: Path) -> None:
    """Docker's `max-concurrent-downloads` (3): four images, never more than three at once."""
    built = small_images(tmp_path / "layout", "app", "db", "cache", "web")
    for name, image in built.items():
        push(image, registry.address, f"{name}:1", sandbox)
    push(app_image(tmp_path / "bad", bad_diff_id=True), registry.address, "corrupt:1", sandbox)
    with StallingProxy.start(sandbox, registry.address) as proxy:
        proxy.delay(SLOW_BLOB)
        good = {name: f"{{image: {proxy.address}/{name}:1, networks: [net]}}" for name in built}
        failing = stack(sandbox, **good, nothing=f"{{image: {proxy.address}/nothing:1, networks: [net]}}",
                        corrupt=f"{{image: {proxy.address}/corrupt:1, networks: [net]}}")
        result = sandbox.reconcile("apply", failing)
        assert result.returncode == 1
        assert "containers.nothing.image" in result.stderr and "containers.corrupt.image" in result.stderr, \
            result.stderr
        assert "does not match its diff_id" in result.stderr
        assert_nothing_started(sandbox)
        assert sorted(row["image"] for row in images(sandbox)) == sorted(f"{proxy.address}/{n}:1" for n in built)
        seen = proxy.seen()
        assert 2 <= seen["most_repositories"] <= 3, seen

        apply(sandbox, stack(sandbox, **good))
    assert {name: container(sandbox, name).get("state") for name in built} == dict.fromkeys(built, "running")


def test_the_watch_agent_pulls_side_by_side_three_at_once_as_apply_does(sandbox: Sandbox, registry: Registry,
                                                                          tmp_path: Path) -> None:
    """Four missing images: the agent's pull processes, like an apply's pass, fetch at most three
    at once; the fourth waits its turn and then runs."""
    built = small_images(tmp_path / "layout", "app", "db", "cache", "web")
    for name, image in built.items():
        push(image, registry.address, f"{name}:1", sandbox)
    specs = sandbox.workdir / "specs"
    specs.mkdir()
    with StallingProxy.start(sandbox, registry.address) as proxy:
        proxy.delay(SLOW_BLOB)
        (specs / "stack.yaml").write_text(STACK.format(containers="".join(
            f"  {name}: {{image: {proxy.address}/{name}:1, networks: [net]}}\n" for name in built)))
        agent = Agent(sandbox, specs, "--resync", "600", "--debounce", "50")
        try:
            for name in built:
                assert eventually(lambda: container(sandbox, name).get("state"), "running",
                                  timeout=scaled(60)) == "running", name
        finally:
            agent.stop()
        seen = proxy.seen()
    assert 2 <= seen["most_repositories"] <= 3, seen


def test_a_pull_killed_beside_another_leaves_it_to_finish_and_the_store_whole(
        sandbox: Sandbox, registry: Registry, tmp_path: Path) -> None:
    """The killed pull held the lock of the big layer both images have: the other fetches its
    own layer meanwhile, waits for that one, then fetches it itself (never twice at once)."""
    base = [Layer.busybox(), Layer.random(8 * 1024 * 1024)]
    big = build(tmp_path / "layout", base, cmd=["sleep", "100000"], env={"PATH": "/bin"}, tag="big")
    bigger = build(tmp_path / "layout", [*base, Layer(files={"/srv/more": "more\n"})],
                   cmd=["sleep", "100000"], env={"PATH": "/bin"}, tag="bigger")
    push(big, registry.address, "big:1", sandbox)
    push(bigger, registry.address, "bigger:1", sandbox)
    layers = sandbox.state_dir / "images" / "layers"
    own = layers / bigger.diff_ids[2].split(":")[1]
    with StallingProxy.start(sandbox, registry.address, cut_after=2 * 1024 * 1024, hold=600) as proxy:
        stalled = pull_process(sandbox, f"{proxy.address}/big:1")
        try:
            eventually(lambda: any(p.name.startswith(".tmp-") for p in layers.glob("*")) if layers.is_dir() else False,
                       True, timeout=60)
            other = pull_process(sandbox, f"{registry.address}/bigger:1")
            eventually(own.is_dir, True, timeout=60)
            assert other.poll() is None  # waiting for the big layer the stalled pull holds
        finally:
            stalled.kill()
            stalled.wait()
        finished(other)
    assert [row["image"] for row in images(sandbox)] == [f"{registry.address}/bigger:1"]
    assert [name for name in layer_names(sandbox) if not name.startswith(".")] == hexes(bigger)
    sandbox.reconcile("image", "pull", f"{registry.address}/big:1", check=True)  # clears the killed one's leftover
    assert layer_names(sandbox) == hexes(bigger)
    pruned = sandbox.reconcile("image", "prune", check=True)
    assert "waiting" not in pruned.stderr and images(sandbox) == []
