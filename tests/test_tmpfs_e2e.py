"""tmpfs mounts end to end, in a throwaway sandbox: a `userns: auto` container writes in its
tmpfs as its own root, with Docker's nosuid, nodev and noexec (exec only where asked). Read
from inside, through the CLI's exec."""

from __future__ import annotations

from pathlib import Path

from tests.compose_support import web_image
from tests.sandbox import Sandbox

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
