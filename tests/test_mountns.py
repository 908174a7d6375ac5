"""kernel.mountns in a sandbox's mount namespace: a pinned namespace is a slave copy of ours that
keeps what its setup bound to itself, holds nothing of the directories it dropped nor the roots
below a carried directory, is current while it shows what ours shows apart from those (mounts
made since below a shared mount of ours reach it), lags once a mount or an unmount below a
private one does not, is replaced by a fresh pin, goes with `release`, and a fresh process
finds it by its pin alone."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from controllers.container import CONTAINERS_DIR, RUNTIME_DIR
from kernel.mountinfo import escape
from kernel.oci import is_hybrid_host
from tests.sandbox import Sandbox
from tests.waiting import eventually

pytestmark = pytest.mark.kernel

CALL = """\
import json, os, subprocess, sys
from pathlib import Path
from kernel import mountns
(pin, covered, dropped, shared_dir), verb = (Path(arg) for arg in sys.argv[1:5]), sys.argv[5]
setup = mountns.Setup(covered=(covered,), dropped=(dropped,))
if verb == "pin":
    mountns.pin(pin, setup, [shared_dir])
elif verb == "release":
    mountns.release(pin, [shared_dir])
pinned = mountns.is_pinned(pin)
def inside(*argv):
    return subprocess.run(["nsenter", f"--mount={pin}", *argv], capture_output=True, text=True).stdout
marks = inside("grep", "-o", "rc-mnt-[a-z]*", "/proc/self/mountinfo").split() if pinned else []
print(json.dumps({"ns": os.stat(pin).st_ino if pinned else None, "inside": sorted(marks),
                  "covered": inside("cat", str(covered)) if pinned else None,
                  "state": mountns.state(pin, setup, [shared_dir]).value}))
"""


def pin_of(sandbox: Sandbox) -> Path:
    return sandbox.workdir / "state" / "runtime-ns" / "mnt"


def call(sandbox: Sandbox, verb: str) -> dict:
    argv = [str(pin_of(sandbox)), str(sandbox.workdir / "covered"), str(sandbox.workdir / "dropped"),
            str(sandbox.workdir / "shared"), verb]
    return json.loads(sandbox.run(sys.executable, "-c", CALL, *argv).stdout)


def mount_tmpfs(sandbox: Sandbox, name: str, target: Path) -> None:
    sandbox.run("mkdir", "-p", str(target))  # inside: it may be below one of the sandbox's mounts
    sandbox.run("mount", "-t", "tmpfs", name, str(target))


def test_a_pinned_namespace_is_current_until_a_mount_does_not_reach_it(sandbox: Sandbox) -> None:
    (sandbox.workdir / "covered").write_text("ours\n")
    # what the namespace must not hold: a directory it drops (the sandboxes' namespace files),
    # stacked and with a mount below, and a root already mounted below the carried directory
    mount_tmpfs(sandbox, "rc-mnt-dropped", sandbox.workdir / "dropped")
    sandbox.run("mount", "--make-shared", str(sandbox.workdir / "dropped"))
    sandbox.run("mount", "--bind", str(sandbox.workdir / "dropped"), str(sandbox.workdir / "dropped"))
    mount_tmpfs(sandbox, "rc-mnt-netns", sandbox.workdir / "dropped" / "one")
    shared = str(sandbox.workdir / "shared")
    sandbox.run("mkdir", "-p", shared)
    sandbox.run("mount", "--bind", shared, shared)  # as the controller makes it, before any root
    sandbox.run("mount", "--make-shared", shared)
    mount_tmpfs(sandbox, "rc-mnt-root", sandbox.workdir / "shared" / "old" / "rootfs")

    first = call(sandbox, "pin")
    assert first["state"] == "current"
    # its setup's own mount is in it (and not in ours), nothing dropped nor any root below
    # the carried directory
    assert (first["inside"], first["covered"]) == ([], "")
    assert (sandbox.workdir / "covered").read_text() == "ours\n"
    # a process in it (a running container's runtime): the namespace cannot go, nor its number
    # be given to a new one, while it lives
    runtime = sandbox.spawn("nsenter", f"--mount={pin_of(sandbox)}", "sleep", "60")
    try:
        first_ns = f"mnt:[{first['ns']}]"
        eventually(lambda: os.readlink(f"/proc/{runtime.pid}/ns/mnt"), first_ns)

        # a mount made since below a shared mount of ours reaches it: still current; and still
        # once it lets go of it (a root, once its container has started); one below a dropped
        # directory does not reach it, and does not count
        mount_tmpfs(sandbox, "rc-mnt-shared", sandbox.workdir / "shared" / "below")
        mount_tmpfs(sandbox, "rc-mnt-later", sandbox.workdir / "dropped" / "two")
        again = call(sandbox, "look")
        assert (again["ns"], again["state"], again["inside"]) == (first["ns"], "current", ["rc-mnt-shared"])
        sandbox.run("nsenter", f"--mount={pin_of(sandbox)}", "umount", str(sandbox.workdir / "shared" / "below"))
        assert call(sandbox, "look")["state"] == "current"

        # one made below a private mount does not: it lags, and a fresh pin shows it; the old
        # one lives on with the process in it
        mount_tmpfs(sandbox, "rc-mnt-private", sandbox.workdir / "elsewhere")
        assert call(sandbox, "look")["state"] == "stale"
        repinned = call(sandbox, "pin")
        assert repinned["ns"] != first["ns"]
        assert repinned["state"] == "current"
        assert repinned["inside"] == ["rc-mnt-private"]
        assert os.readlink(f"/proc/{runtime.pid}/ns/mnt") == first_ns

        # and so does an unmount below a private mount: the pinned copy would keep it alive
        sandbox.run("umount", str(sandbox.workdir / "elsewhere"))
        assert call(sandbox, "look")["state"] == "stale"
        assert call(sandbox, "pin")["state"] == "current"

        # and a carried directory no longer shared: what is mounted below it would not reach it;
        # nor once shared again, in a peer group the pinned copy is no slave of
        sandbox.run("mount", "--make-private", shared)
        assert call(sandbox, "look")["state"] == "stale"
        sandbox.run("mount", "--make-shared", shared)
        assert call(sandbox, "look")["state"] == "stale"
        assert call(sandbox, "pin")["state"] == "current"

        # a pin left beside it by a run killed before its move is let go by the next pin
        staging = pin_of(sandbox).with_name("mnt.new")
        pin_beside(sandbox, staging)
        assert call(sandbox, "pin")["state"] == "current"
        assert "mnt.new" not in host_table(sandbox)
    finally:
        runtime.kill()
        runtime.wait()

    # release lets go of a pin left beside it too, and of the pin's directory bound on itself;
    # not of the carried directory while something is mounted below it
    pin_beside(sandbox, staging)
    assert call(sandbox, "release")["state"] == "absent"
    assert written(pin_of(sandbox).parent) not in host_table(sandbox)
    assert written(Path(shared)) in host_table(sandbox)
    # once nothing is: its mount point is left (by an earlier release), and the next one takes
    # it away; the host's table is as it was before the first pin
    for below in ("old/rootfs", "below"):
        sandbox.run("umount", str(sandbox.workdir / "shared" / below))
    assert call(sandbox, "look")["state"] == "left"
    assert call(sandbox, "release")["state"] == "absent"
    assert written(Path(shared)) not in host_table(sandbox)
    # and so is a pin a run killed before its move left beside none
    pin_beside(sandbox, staging)
    assert call(sandbox, "look")["state"] == "left"
    assert call(sandbox, "release")["state"] == "absent"
    assert written(staging) not in host_table(sandbox)


def test_release_leaves_a_carried_directory_that_is_another_filesystem(sandbox: Sandbox) -> None:
    """A disk the host's owner mounted at the state dir's containers directory is not ours."""
    (sandbox.workdir / "covered").write_text("ours\n")
    mount_tmpfs(sandbox, "rc-mnt-disk", sandbox.workdir / "shared")
    assert call(sandbox, "pin")["state"] == "current"
    assert call(sandbox, "release")["state"] == "absent"
    assert "rc-mnt-disk" in host_table(sandbox)
    assert written(pin_of(sandbox).parent) not in host_table(sandbox)


def pin_beside(sandbox: Sandbox, staging: Path) -> None:
    """A pin as a run killed before its move leaves it: on whichever CPU the kernel accepts it
    (kernel.mountns.pin says why one may refuse it in a nested namespace)."""
    for cpu in sorted(os.sched_getaffinity(0)):
        if sandbox.run("taskset", "--cpu-list", str(cpu), "unshare", f"--mount={staging}", "true",
                       check=False).returncode == 0:
            return
    raise AssertionError(f"no CPU pins a namespace at {staging}")


def host_table(sandbox: Sandbox) -> str:
    return sandbox.run("cat", "/proc/self/mountinfo").stdout


def written(path: Path) -> str:
    """A mount point as the mount table names it, between its spaces."""
    return f" {escape(str(path.resolve()))} "


def runtime_namespace(sandbox: Sandbox) -> str:
    """The product's own look at its runtime's namespace, as a whole pass takes it."""
    code = ("import sys; from pathlib import Path; from kernel.oci import Runtime; "
            "print(Runtime.at(Path(sys.argv[1])).namespace_state([Path(sys.argv[2])]).value)")
    return sandbox.run(sys.executable, "-c", code, str(sandbox.state_dir / RUNTIME_DIR),
                       str(sandbox.state_dir / CONTAINERS_DIR)).stdout.strip()


def inside_runtime_namespace(sandbox: Sandbox) -> str:
    """Its mount table."""
    return sandbox.run("nsenter", f"--mount={pin_of(sandbox)}", "cat", "/proc/self/mountinfo").stdout


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
    # lean: no sandbox's namespace file in it, and the root let go of once the container started
    roots = f" {sandbox.state_dir / CONTAINERS_DIR}/"
    assert " /run/netns" not in inside_runtime_namespace(sandbox)
    assert eventually(lambda: roots not in inside_runtime_namespace(sandbox), True)
    assert roots in host_table(sandbox)

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
    # nothing of ours is left mounted: no mount point below the state dir
    assert written(sandbox.state_dir)[:-1] + "/" not in host_table(sandbox)



OBSERVATION_READS = """\
from pathlib import Path
from kernel.mountinfo import MOUNTINFO
from reconcile.engine.session import open_session
from reconcile.engine.settings import Settings
reads = []
read_text = Path.read_text
def counted(self, *args, **kwargs):
    reads.append(self == MOUNTINFO)
    return read_text(self, *args, **kwargs)
with open_session(Settings.resolve(None, None), writable=False) as session:
    Path.read_text = counted
    session.observe()
print(sum(reads))
"""


def test_a_whole_observation_reads_our_mount_table_once(sandbox: Sandbox) -> None:
    """The containers' roots and the runtime's namespace come from one read of our mount table
    (~6 ms at 2,000 mounts), which the namespace's own is compared with. The namespace is
    pinned on hybrid hosts only (as ours): elsewhere the roots alone read the table."""
    assert sandbox.run(sys.executable, "-c", OBSERVATION_READS).stdout == "1\n"
