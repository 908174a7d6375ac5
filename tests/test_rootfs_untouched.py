"""A `rootfs` directory is the user's: the container writes to a layer of its own, so the
directory stays byte-identical through apply, writes inside, exec, restarts and down (no
`etc/hosts`, `proc`, `dev` or volume target planted there)."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from tests.rootfs import busybox_rootfs
from tests.sandbox import Sandbox
from tests.waiting import eventually

STACK = """\
name: untouched
networks:
  net: {{subnet: 10.85.1.0/24}}
containers:
  box:
    command: ["sh", "-c", "echo planted > /etc/hosts.extra; touch /www/new; sleep 100000"]
    rootfs: {rootfs}
    workdir: /not/in/the/rootfs
    networks: [net]
    volumes: ["{volume}:/data/mounted"]
"""


def tree(root: Path) -> dict[str, tuple[object, ...]]:
    """Every entry under `root` with what a write would change (atime aside)."""
    found: dict[str, tuple[object, ...]] = {}
    for directory, dirs, files in os.walk(root):
        for name in [".", *dirs, *files]:
            path = Path(directory, name)
            info = path.lstat()
            content: object = None
            if stat.S_ISLNK(info.st_mode):
                content = os.readlink(path)
            elif stat.S_ISREG(info.st_mode):
                content = hashlib.sha256(path.read_bytes()).hexdigest()
            found[str(path.relative_to(root))] = (info.st_mode, info.st_uid, info.st_gid, info.st_size,
                                                  info.st_mtime_ns, info.st_ctime_ns, content)
    return found


def test_a_rootfs_directory_stays_byte_identical(sandbox: Sandbox) -> None:
    (sandbox.workdir / "rootfs").mkdir()
    mine = busybox_rootfs(sandbox.workdir / "rootfs")
    volume = sandbox.workdir / "volume"
    volume.mkdir()
    before = tree(mine)
    path = str(sandbox.write("stack.yaml", STACK.format(rootfs=mine, volume=volume)))
    sandbox.reconcile("apply", path, check=True)
    assert eventually(lambda: sandbox.containers()["box"]["state"], "running") == "running"
    for argv in (["touch", "/etc/passwd", "/bin/new"], ["sh", "-c", "echo x >> /etc/group; mkdir -p /run/x"],
                 ["sh", "-c", "pwd > /data/mounted/pwd"]):
        result = sandbox.reconcile("exec", "box", "--", *argv)
        assert result.returncode == 0, result.stderr
    assert (volume / "pwd").read_text() == "/not/in/the/rootfs\n"
    assert tree(mine) == before  # while it runs
    os.kill(sandbox.containers()["box"]["pid"], 9)
    assert eventually(lambda: sandbox.containers()["box"]["state"], "exited") == "exited"
    sandbox.reconcile("apply", path, check=True)  # a restart keeps the layer, not the directory
    sandbox.reconcile("down", path, check=True)
    assert tree(mine) == before
