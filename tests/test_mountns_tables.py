"""Which of our directories kernel.mountns takes for its own mount points, from made-up mount
tables (pure): a bind of the directory on itself, of its parent's filesystem, with nothing
below it; never a filesystem or a bind of another directory that the host's owner put there."""

from __future__ import annotations

from pathlib import Path

import pytest

from controllers.container import roots_at
from kernel import overlay
from kernel.mountns import _own_mounts

STATE = Path("/srv/rc state")  # a space: mountinfo writes it \040
PIN = STATE / "runtime-ns" / "mnt"
CARRIED = STATE / "containers"
ROOT = "21 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw"


def line(mount_id: int, parent: int, device: str, root: str, point: str, tags: str = "") -> str:
    def written(path: str) -> str:
        return path.replace(" ", "\\040")
    return f"{mount_id} {parent} {device} {written(root)} {written(point)} rw,relatime {tags} - ext4 /dev/x rw"


OURS = [line(40, 21, "8:1", "/srv/rc state/containers", "/srv/rc state/containers", "shared:7"),
        line(41, 21, "8:1", "/srv/rc state/runtime-ns", "/srv/rc state/runtime-ns")]


@pytest.mark.parametrize(("table", "expected"), [
    ([ROOT, *OURS], [CARRIED, PIN.parent]),
    # a root below the carried directory: not yet (a detach would take it along)
    ([ROOT, *OURS, line(42, 40, "0:50", "/", "/srv/rc state/containers/s/c/rootfs")], [PIN.parent]),
    # the state dir on a filesystem of its own, mounted at /srv
    (["30 1 8:2 / /srv rw - ext4 /dev/sdb rw",
      line(40, 30, "8:2", "/rc state/containers", "/srv/rc state/containers", "shared:7")], [CARRIED]),
    # a btrfs root subvolume: the parent shows /@
    (["21 1 0:30 /@ / rw shared:1 - btrfs /dev/sda1 rw",
      line(40, 21, "0:30", "/@/srv/rc state/containers", "/srv/rc state/containers", "shared:7")], [CARRIED]),
    # the host owner's: a disk mounted there, a bind of another directory
    ([ROOT, line(40, 21, "8:5", "/", "/srv/rc state/containers", "shared:7")], []),
    ([ROOT, line(40, 21, "8:1", "/data", "/srv/rc state/containers", "shared:7")], []),
    # stacked: the one in effect counts (ours over ours; a disk over ours)
    ([ROOT, *OURS[:1], line(43, 40, "8:1", "/srv/rc state/containers", "/srv/rc state/containers")], [CARRIED]),
    ([ROOT, *OURS[:1], line(43, 40, "8:5", "/", "/srv/rc state/containers")], []),
    ([ROOT], []),
], ids=["both", "a root below", "state dir on its own disk", "btrfs subvolume", "a disk there",
        "another directory bound there", "ours stacked on ours", "a disk over ours", "none"])
def test_our_mount_points_are_binds_of_the_directory_on_itself_with_nothing_below(
        table: list[str], expected: list[Path]) -> None:
    assert _own_mounts(PIN, [CARRIED], "\n".join(table) + "\n") == expected


def test_a_bind_mount_of_a_container_root_is_not_the_root() -> None:
    """A root's mark (the overlay's source) is copied by a bind mount of it (someone looking
    into it, or `mount --rbind /` for a chroot): only the mount where the controller puts that
    container's root is its root, the one to unmount; without `at` (the image store keeping the
    layers any mount of a root holds) every one counts."""
    options = "rw,lowerdir=/,upperdir=/s/containers/web/a/upper,workdir=/s/containers/web/a/work"
    table = "\n".join([
        "25 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw",
        f"36 25 0:32 / /s/containers/web/a/bundle/rootfs rw,relatime shared:20 - overlay reconcile-v1:web/a {options}",
        f"41 25 0:32 / /mnt/inspect rw,relatime shared:20 - overlay reconcile-v1:web/a {options}",
    ])
    at = roots_at(Path("/s"))
    assert {key: root.path for key, root in overlay.mounted(table=table, at=at).items()} == \
        {("web", "a"): "/s/containers/web/a/bundle/rootfs"}
    assert {key: root.path for key, root in overlay.mounted(table=table).items()} == {("web", "a"): "/mnt/inspect"}
