"""tmpfs mounts and /dev/shm's size end to end, from a Compose file, in a throwaway sandbox: the
usual hardening (`read_only: true` with a tmpfs at /tmp and /run) writes in its tmpfs and
nowhere else, each tmpfs has the size and mode asked and Docker's nosuid, nodev and noexec
(exec only where asked), a tmpfs lies on the volume it is mounted under, /dev/shm has
`shm_size`, a `userns: auto` container writes in its tmpfs as its own root, and a change of a
tmpfs recreates the container. Read from inside, through the CLI's exec."""

from __future__ import annotations

from pathlib import Path

from tests.compose_support import reconcile_ok, web_image
from tests.sandbox import Sandbox

HARDENED = """\
name: rc-tmpfs
services:
  app:
    image: "oci:{layout}:v1"
    read_only: true
    tmpfs: [/run, "/tmp:size=8m,mode=1770"]
    shm_size: 32m
    volumes:
      - "{data}:/data"
      - {{type: tmpfs, target: /data/cache, tmpfs: {{size: 2m, mode: 0o750}}}}
      - {{type: tmpfs, target: /opt/tools, tmpfs: {{size: {tools_size}}}}}
"""

PRIVATE_IDS = """\
name: rc-tmpfs-ns
containers:
  nobody:
    image: "oci:{layout}:v1"
    userns: auto
    read_only: true
    tmpfs: ["/scratch:size=4m", {{target: /tools, exec: true}}]
"""


def mounts(sandbox: Sandbox, name: str) -> dict[str, list[str]]:
    """The container's mount points and their options, as /proc/mounts has them."""
    table = sandbox.exec_in(name, "cat", "/proc/mounts").splitlines()
    return {fields[1]: fields[3].split(",") for fields in (line.split() for line in table)}


def denied(sandbox: Sandbox, name: str, script: str) -> str:
    """The error output of a command that must fail inside the container."""
    result = sandbox.reconcile("exec", name, "--", "sh", "-c", script)
    assert result.returncode != 0, result.stdout
    return result.stdout + result.stderr


def test_a_read_only_container_writes_in_its_tmpfs_mounts_only(sandbox: Sandbox, tmp_path: Path) -> None:
    layout = web_image(tmp_path / "layout").layout
    data = tmp_path / "data"
    data.mkdir()
    compose = sandbox.workdir / "tmpfs" / "compose.yaml"
    compose.parent.mkdir()
    compose.write_text(HARDENED.format(layout=layout, data=data, tools_size="1m"))
    reconcile_ok(sandbox, "apply", str(compose))
    app = "rc-tmpfs/app"

    # Written in the tmpfs mounts, refused on the read-only root.
    sandbox.exec_in(app, "sh", "-c", "echo t > /tmp/t && echo r > /run/r && echo c > /data/cache/c")
    assert "Read-only file system" in denied(sandbox, app, "echo x > /written")
    assert "Read-only file system" in denied(sandbox, app, "echo x > /opt/written")
    # The tmpfs lies on the volume: nothing written in it reaches the host, where only its mount
    # point was made (as Docker makes one in a bind-mounted directory).
    assert [p.name for p in data.iterdir()] == ["cache"] and not any((data / "cache").iterdir())

    # Size and mode as asked (busybox df in KiB; stat's octal mode), Docker's options on every one.
    table = mounts(sandbox, app)
    assert {"nosuid", "nodev", "noexec", "rw", "size=8192k", "mode=1770"} <= set(table["/tmp"])
    assert {"nosuid", "nodev", "noexec", "size=2048k", "mode=750"} <= set(table["/data/cache"])
    assert {"nosuid", "nodev", "noexec"} <= set(table["/run"])
    assert sandbox.exec_in(app, "stat", "-c", "%a %U", "/tmp", "/data/cache") == "1770 root\n750 root\n"
    assert sandbox.exec_in(app, "busybox", "df", "-k", "/tmp").splitlines()[1].split()[1] == "8192"
    assert sandbox.exec_in(app, "busybox", "df", "-k", "/dev/shm").splitlines()[1].split()[1] == "32768"
    assert "size=32768k" in table["/dev/shm"]

    # noexec holds by default: a program copied there does not run.
    assert "Permission denied" in denied(sandbox, app, "cp /bin/busybox /tmp/busybox && /tmp/busybox true")

    # A change of a tmpfs is a change of the container: recreated, the new size in force.
    compose.write_text(HARDENED.format(layout=layout, data=data, tools_size="4m"))
    plan = reconcile_ok(sandbox, "apply", str(compose))
    assert f"container {app}" in plan and "tmpfs" in plan, plan
    assert "size=4096k" in mounts(sandbox, app)["/opt/tools"]
    assert "No changes" in reconcile_ok(sandbox, "apply", str(compose))

    reconcile_ok(sandbox, "down", str(compose))
    assert sandbox.processes() == []


def test_a_userns_auto_container_owns_its_tmpfs_and_exec_is_asked_for(sandbox: Sandbox, tmp_path: Path) -> None:
    """The runtime mounts a tmpfs inside the container's user namespace: its root belongs to the
    container's root (an unprivileged uid outside), which writes in it."""
    layout = web_image(tmp_path / "layout").layout
    stack = sandbox.write("stack.yaml", PRIVATE_IDS.format(layout=layout))
    sandbox.apply(stack)
    nobody = "rc-tmpfs-ns/nobody"
    sandbox.exec_in(nobody, "sh", "-c", "echo n > /scratch/n")
    assert sandbox.exec_in(nobody, "stat", "-c", "%u %g %a", "/scratch") == "0 0 1777\n"
    table = mounts(sandbox, nobody)
    assert {"nosuid", "nodev", "noexec", "size=4096k"} <= set(table["/scratch"])
    # exec lifts noexec alone: a program copied there runs, still nosuid and nodev.
    assert {"nosuid", "nodev"} <= set(table["/tools"]) and "noexec" not in table["/tools"]
    assert sandbox.exec_in(nobody, "sh", "-c", "cp /bin/busybox /tools/busybox && /tools/busybox echo ran") == "ran\n"
    assert "Permission denied" in denied(sandbox, nobody, "cp /bin/busybox /scratch/busybox && /scratch/busybox true")
    assert sandbox.reconcile("down", str(stack)).returncode == 0
    assert sandbox.processes() == []
