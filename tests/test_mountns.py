"""kernel.mountns in a sandbox's mount namespace: a pinned namespace is a slave copy of ours that
keeps what its setup command mounted to itself, is kept while it shows what ours shows (mounts
made since below a shared mount of ours reach it), is pinned again once it lags (a mount made
below a private one), goes with `release`, and a fresh process finds it by its pin alone."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tests.sandbox import Sandbox
from tests.waiting import eventually

pytestmark = pytest.mark.kernel

CALL = """\
import json, os, subprocess, sys
from pathlib import Path
from kernel import mountns
pin, private_dir, shared_dir, verb = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
if verb == "pin":
    mountns.ensure_own_mount(shared_dir, shared=True)
    mountns.ensure_own_mount(private_dir, shared=False)
    mountns.ensure_pinned(pin, ["mount", "-t", "tmpfs", "rc-mnt-own", str(private_dir)], {str(private_dir)})
elif verb == "release":
    mountns.release(pin)
pinned = pin.exists() and os.stat(pin).st_dev == os.stat("/proc/self/ns/mnt").st_dev
inside = subprocess.run(["nsenter", f"--mount={pin}", "grep", "-o", "rc-mnt-[a-z]*", "/proc/self/mountinfo"],
                        capture_output=True, text=True).stdout.split() if pinned else []
print(json.dumps({"ns": os.stat(pin).st_ino if pinned else None, "inside": sorted(inside), "pinned": pinned}))
"""


def pin_of(sandbox: Sandbox) -> Path:
    return sandbox.workdir / "state" / "runtime-ns" / "mnt"


def call(sandbox: Sandbox, verb: str) -> dict:
    argv = [str(pin_of(sandbox)), str(sandbox.workdir / "private"), str(sandbox.workdir / "shared"), verb]
    return json.loads(sandbox.run(sys.executable, "-c", CALL, *argv).stdout)


def mount_tmpfs(sandbox: Sandbox, name: str, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    sandbox.run("mount", "-t", "tmpfs", name, str(target))


def test_a_pinned_namespace_follows_ours_and_goes_with_release(sandbox: Sandbox) -> None:
    first = call(sandbox, "pin")
    assert first["pinned"]
    # its setup's own mount is in it, and not in ours
    assert first["inside"] == ["rc-mnt-own"]
    assert "rc-mnt-own" not in sandbox.run("cat", "/proc/self/mountinfo").stdout
    # a process in it (a running container's runtime): the namespace cannot go, nor its number
    # be given to a new one, while it lives
    runtime = sandbox.spawn("nsenter", f"--mount={pin_of(sandbox)}", "sleep", "60")
    try:
        first_ns = f"mnt:[{first['ns']}]"
        eventually(lambda: os.readlink(f"/proc/{runtime.pid}/ns/mnt"), first_ns)

        # a fresh process finds it current: the same namespace, not a new one
        assert call(sandbox, "pin")["ns"] == first["ns"]

        # a mount made since below a shared mount of ours reaches it: still the same one
        mount_tmpfs(sandbox, "rc-mnt-shared", sandbox.workdir / "shared" / "below")
        again = call(sandbox, "pin")
        assert (again["ns"], again["inside"]) == (first["ns"], ["rc-mnt-own", "rc-mnt-shared"])

        # one made below a private mount does not: it is pinned again, and then shows it; the
        # old one lives on with the process in it
        mount_tmpfs(sandbox, "rc-mnt-private", sandbox.workdir / "elsewhere")
        repinned = call(sandbox, "pin")
        assert repinned["ns"] != first["ns"]
        assert repinned["inside"] == ["rc-mnt-own", "rc-mnt-private", "rc-mnt-shared"]
        assert os.readlink(f"/proc/{runtime.pid}/ns/mnt") == first_ns
    finally:
        runtime.kill()
        runtime.wait()

    released = call(sandbox, "release")
    assert not released["pinned"]
