"""kernel.mountns in a sandbox's mount namespace: a pinned namespace is a slave copy of ours that
keeps what its setup command mounted to itself, is current while it shows what ours shows
(mounts made since below a shared mount of ours reach it), lags once a mount or an unmount
below a private one does not, is replaced by a fresh pin, goes with `release`, and a fresh
process finds it by its pin alone."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from controllers.container import CONTAINERS_DIR, RUNTIME_DIR
from kernel.oci import is_hybrid_host
from tests.sandbox import Sandbox
from tests.waiting import eventually

pytestmark = pytest.mark.kernel

CALL = """\
import json, os, subprocess, sys
from pathlib import Path
from kernel import mountns
pin, private_dir, shared_dir, verb = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
if verb == "pin":
    mountns.ensure_own_mount(private_dir, shared=False)
    mountns.pin(pin, ["mount", "-t", "tmpfs", "rc-mnt-own", str(private_dir)], [shared_dir])
elif verb == "release":
    mountns.release(pin)
pinned = mountns.is_pinned(pin)
inside = subprocess.run(["nsenter", f"--mount={pin}", "grep", "-o", "rc-mnt-[a-z]*", "/proc/self/mountinfo"],
                        capture_output=True, text=True).stdout.split() if pinned else []
print(json.dumps({"ns": os.stat(pin).st_ino if pinned else None, "inside": sorted(inside),
                  "state": mountns.state(pin, {str(private_dir)}, [shared_dir]).value}))
"""


def pin_of(sandbox: Sandbox) -> Path:
    return sandbox.workdir / "state" / "runtime-ns" / "mnt"


def call(sandbox: Sandbox, verb: str) -> dict:
    argv = [str(pin_of(sandbox)), str(sandbox.workdir / "private"), str(sandbox.workdir / "shared"), verb]
    return json.loads(sandbox.run(sys.executable, "-c", CALL, *argv).stdout)


def mount_tmpfs(sandbox: Sandbox, name: str, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    sandbox.run("mount", "-t", "tmpfs", name, str(target))


def test_a_pinned_namespace_is_current_until_a_mount_does_not_reach_it(sandbox: Sandbox) -> None:
    first = call(sandbox, "pin")
    assert first["state"] == "current"
    # its setup's own mount is in it, and not in ours
    assert first["inside"] == ["rc-mnt-own"]
    assert "rc-mnt-own" not in sandbox.run("cat", "/proc/self/mountinfo").stdout
    # a process in it (a running container's runtime): the namespace cannot go, nor its number
    # be given to a new one, while it lives
    runtime = sandbox.spawn("nsenter", f"--mount={pin_of(sandbox)}", "sleep", "60")
    try:
        first_ns = f"mnt:[{first['ns']}]"
        eventually(lambda: os.readlink(f"/proc/{runtime.pid}/ns/mnt"), first_ns)

        # a mount made since below a shared mount of ours reaches it: still current
        mount_tmpfs(sandbox, "rc-mnt-shared", sandbox.workdir / "shared" / "below")
        again = call(sandbox, "look")
        assert (again["ns"], again["state"]) == (first["ns"], "current")
        assert again["inside"] == ["rc-mnt-own", "rc-mnt-shared"]

        # one made below a private mount does not: it lags, and a fresh pin shows it; the old
        # one lives on with the process in it
        mount_tmpfs(sandbox, "rc-mnt-private", sandbox.workdir / "elsewhere")
        assert call(sandbox, "look")["state"] == "stale"
        repinned = call(sandbox, "pin")
        assert repinned["ns"] != first["ns"]
        assert repinned["state"] == "current"
        assert repinned["inside"] == ["rc-mnt-own", "rc-mnt-private", "rc-mnt-shared"]
        assert os.readlink(f"/proc/{runtime.pid}/ns/mnt") == first_ns

        # and so does an unmount below a private mount: the pinned copy would keep it alive
        sandbox.run("umount", str(sandbox.workdir / "elsewhere"))
        assert call(sandbox, "look")["state"] == "stale"
        assert call(sandbox, "pin")["state"] == "current"

        # and a carried directory no longer shared: what is mounted below it would not reach it
        sandbox.run("mount", "--make-private", str(sandbox.workdir / "shared"))
        assert call(sandbox, "look")["state"] == "stale"
        assert call(sandbox, "pin")["state"] == "current"
    finally:
        runtime.kill()
        runtime.wait()

    assert call(sandbox, "release")["state"] == "absent"


def runtime_namespace(sandbox: Sandbox) -> str:
    """The product's own look at its runtime's namespace, as a whole pass takes it."""
    code = ("import sys; from pathlib import Path; from kernel.oci import Runtime; "
            "print(Runtime.at(Path(sys.argv[1])).namespace_state([Path(sys.argv[2])]).value)")
    return sandbox.run(sys.executable, "-c", code, str(sandbox.state_dir / RUNTIME_DIR),
                       str(sandbox.state_dir / CONTAINERS_DIR)).stdout.strip()


@pytest.mark.skipif(not is_hybrid_host(), reason="crun runs in a pinned namespace on hybrid cgroup hosts only")
def test_a_lagging_runtime_namespace_is_pinned_afresh_by_apply_and_goes_with_down(sandbox: Sandbox) -> None:
    """A volume from a mount made after the runtime's namespace was pinned (below a private
    mount, so it never reached it) is what the container sees, once `apply` has pinned afresh."""
    data = sandbox.workdir / "data"
    data.mkdir()
    path = sandbox.write("stack.yaml", f"""\
name: pin
containers:
  first:
    command: [sleep, "600"]
  second:
    command: [sh, -c, "cat /data/marker; exec sleep 600"]
    volumes: ["{data}:/data:ro"]
""")
    first = path.read_text().split("  second:")[0]
    sandbox.write("first.yaml", first)
    assert sandbox.reconcile("apply", str(sandbox.workdir / "first.yaml")).returncode == 0
    assert runtime_namespace(sandbox) == "current"

    mount_tmpfs(sandbox, "rc-mnt-data", data)
    sandbox.sh(f"echo from-the-new-mount > {data}/marker")
    assert runtime_namespace(sandbox) == "stale"
    plan = sandbox.reconcile("diff", str(sandbox.workdir / "first.yaml"))
    assert plan.returncode == 2 and "~ runtime mount-namespace" in plan.stdout, plan.stdout

    applied = sandbox.reconcile("apply", "--take-over", str(path))
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert eventually(lambda: sandbox.reconcile("logs", "second").stdout.strip(), "from-the-new-mount")
    assert sandbox.reconcile("diff", str(path)).returncode == 0

    assert runtime_namespace(sandbox) == "current"
    assert sandbox.reconcile("down", str(path)).returncode == 0
    assert runtime_namespace(sandbox) == "absent"
