"""The OCI configuration of a container (pure): Docker's default confinement, and exactly what
each spec field widens or narrows."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import pytest

from controllers.container_bundle import (
    ALLOWED_DEVICES,
    MASKED_PATHS,
    READONLY_PATHS,
    RLIM_INFINITY,
    BundleInputs,
    exec_process,
    oci_config,
)
from kernel.inroot import MAX_READ, find_program, make_dirs, read_all_in_root, read_in_root, resolve
from kernel.oci import version_remounts_in_place
from kernel.users import Ids
from specs import capabilities, sysctls
from specs.model import Container
from specs.ulimits import DEFAULTS, UNLIMITED

DOCKER_CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_SETGID", "CAP_SETUID",
               "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW", "CAP_SYS_CHROOT", "CAP_MKNOD", "CAP_AUDIT_WRITE",
               "CAP_SETFCAP"]
HOST_CAPS = frozenset(capabilities.ALL) - {"SYS_RESOURCE"}  # as on our machines


THERMAL = "/sys/devices/system/cpu/cpu0/thermal_throttle"
VIEWS = {"/sys/fs/cgroup/pids": "/sys/fs/cgroup/pids/reconcile/s/c/ctr",
         "/sys/fs/cgroup/memory": "/sys/fs/cgroup/memory/reconcile/s/c/ctr"}


def _config(id_base: int | None = None, views: dict[str, str] | None = None, cgroup_tmpfs: bool = False,
            ceilings: dict[str, int] | None = None, defaults: dict[str, tuple[int, int]] | None = None,
            **fields: Any) -> dict[str, Any]:
    container = Container.model_validate({"command": ["sleep", "1"], "hostname": "c",
                                          "volumes": ["/srv/data:/data:ro"], **fields})
    held = capabilities.effective(container.cap_add, container.cap_drop, container.privileged, HOST_CAPS)
    inputs = BundleInputs("rc-s_c", "/run/netns/rc-s_c", "/reconcile/s/c/ctr", Ids(0, 0, ()), held,
                          None if container.privileged else b"\x06\x00\x00\x00\x00\x00\xff\x7f", True,
                          ("/var/lib/reconcile",), "/usr/bin/catatonit", "/dev/init", id_base,
                          cgroup_views=views or {}, remount_cgroup_tmpfs=cgroup_tmpfs, ulimit_ceilings=ceilings or {},
                          ulimit_defaults=DEFAULTS if defaults is None else defaults,
                          per_cpu_masked=(THERMAL,))
    return oci_config(container, inputs)


def _mount(config: dict[str, Any], destination: str) -> dict[str, Any]:
    return next(m for m in config["mounts"] if m["destination"] == destination)


def test_the_default_is_dockers_confinement() -> None:
    config = _config()
    process, linux = config["process"], config["linux"]
    assert process["capabilities"]["bounding"] == DOCKER_CAPS
    assert process["capabilities"]["effective"] == process["capabilities"]["permitted"] == DOCKER_CAPS
    assert process["noNewPrivileges"] is False
    assert process["args"] == ["/dev/init", "-g", "--", "sleep", "1"]
    assert linux["maskedPaths"] == [*MASKED_PATHS, THERMAL, "/var/lib/reconcile"]
    assert {"/proc/interrupts", "/proc/kcore", "/sys/firmware"} <= set(MASKED_PATHS)  # Docker's since moby#49560 too
    assert linux["readonlyPaths"] == list(READONLY_PATHS)
    assert process["oomScoreAdj"] == 0  # not whatever the starting process has
    devices = linux["resources"]["devices"]
    assert devices[0] == {"allow": False, "access": "rwm"} and len(devices) == 1 + len(ALLOWED_DEVICES)
    assert {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"} in devices
    assert "ro" in _mount(config, "/sys")["options"] and "ro" in _mount(config, "/sys/fs/cgroup")["options"]
    assert _mount(config, "/data")["options"] == ["rbind", "ro", "rprivate"]
    assert {"type": "network", "path": "/run/netns/rc-s_c"} in linux["namespaces"]
    assert not any(n["type"] == "user" for n in linux["namespaces"])
    assert base64.b64decode(config["annotations"]["run.oci.seccomp_bpf_data"]) == b"\x06\x00\x00\x00\x00\x00\xff\x7f"
    assert config["root"] == {"path": "rootfs", "readonly": False}
    assert {_mount(config, d)["type"] for d in ("/tmp", "/run")} == {"tmpfs"}  # the host's root: private


@pytest.mark.parametrize(("fields", "added", "removed"), [
    ({"cap_add": ["NET_ADMIN"]}, {"CAP_NET_ADMIN"}, set()),
    ({"cap_drop": ["MKNOD", "NET_RAW"]}, set(), {"CAP_MKNOD", "CAP_NET_RAW"}),
    ({"cap_drop": ["ALL"], "cap_add": ["KILL"]}, set(), set(DOCKER_CAPS) - {"CAP_KILL"}),
    ({"cap_add": ["ALL"]}, {f"CAP_{c}" for c in HOST_CAPS} - set(DOCKER_CAPS), set()),
    ({"cap_add": ["ALL"], "cap_drop": ["SYS_ADMIN", "CHOWN"]}, {f"CAP_{c}" for c in HOST_CAPS} - set(DOCKER_CAPS),
     {"CAP_SYS_ADMIN", "CAP_CHOWN"}),
])
def test_cap_add_and_cap_drop(fields: dict[str, Any], added: set[str], removed: set[str]) -> None:
    held = set(_config(**fields)["process"]["capabilities"]["bounding"])
    assert held == (set(DOCKER_CAPS) | added) - removed
    assert "CAP_SYS_RESOURCE" not in held  # never more than the host's bounding set


def test_privileged_is_the_whole_escape_hatch() -> None:
    config = _config(privileged=True)
    assert set(config["process"]["capabilities"]["bounding"]) == {f"CAP_{c}" for c in HOST_CAPS}
    assert config["linux"]["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    assert config["linux"]["maskedPaths"] == ["/var/lib/reconcile"]  # our state stays hidden
    assert "readonlyPaths" not in config["linux"] and config["annotations"] == {}
    assert "rw" in _mount(config, "/sys")["options"]


@pytest.mark.parametrize("privileged", [False, True])
def test_with_views_the_cgroup_directory_is_a_tmpfs_of_ours_with_each_view_bound_in_it(privileged: bool) -> None:
    """No hierarchy mounted afresh: a tmpfs (mode 755, as Docker's), then each view, all as
    read-only as /sys. Without views, or in a user namespace, crun's cgroup mount."""
    mounts = _config(views=VIEWS, privileged=privileged)["mounts"]
    destinations = [m["destination"] for m in mounts]
    at = destinations.index("/sys/fs/cgroup")
    mode = "rw" if privileged else "ro"
    assert mounts[at] == {"destination": "/sys/fs/cgroup", "type": "tmpfs", "source": "tmpfs",
                          "options": ["nosuid", "noexec", "nodev", "mode=755", "size=1024k", mode]}
    assert destinations[at + 1:at + 3] == ["/sys/fs/cgroup/memory", "/sys/fs/cgroup/pids"]
    assert mounts[at + 1] == {"destination": "/sys/fs/cgroup/memory", "type": "bind",
                              "source": VIEWS["/sys/fs/cgroup/memory"],
                              "options": ["bind", "nosuid", "noexec", "nodev", mode]}
    assert all(m["type"] != "cgroup" for m in mounts)
    for crun_mounts in (_config(privileged=privileged)["mounts"],
                        _config(1 << 30, VIEWS, userns="auto", privileged=privileged)["mounts"]):
        assert _mount({"mounts": crun_mounts}, "/sys/fs/cgroup") == {
            "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
            "options": ["nosuid", "noexec", "nodev", "relatime", mode]}
        assert "/sys/fs/cgroup/memory" not in [m["destination"] for m in crun_mounts]


@pytest.mark.parametrize(("views", "fields", "tmpfs", "remounted"), [
    ({}, {}, True, True),  # crun's tmpfs
    (VIEWS, {"userns": "auto"}, True, True),  # crun's own mounts, the tmpfs too
    ({}, {"privileged": True}, True, False),  # as Docker: all of it writable
    ({}, {}, False, False),  # a cgroup2 mount (read-only already), or a crun that would mount on top
    (VIEWS, {}, True, False),  # our tmpfs, read-only itself
    (VIEWS, {}, False, False),
])
def test_cruns_cgroup_tmpfs_is_remounted_read_only_right_after_it(views: dict[str, str], fields: dict[str, Any],
                                                                  tmpfs: bool, remounted: bool) -> None:
    """On v1 and hybrid hosts crun leaves its tmpfs at /sys/fs/cgroup writable: a remount of it
    (not a bind: no host source) follows the cgroup mount. Ours needs none: it is mounted
    read-only, which crun applies once every mount is made."""
    id_base = 1 << 30 if fields.get("userns") == "auto" else None
    mounts = _config(id_base, views, tmpfs, **fields)["mounts"]
    at = [i for i, m in enumerate(mounts) if m["destination"] == "/sys/fs/cgroup"]
    remount = {"destination": "/sys/fs/cgroup", "type": "tmpfs", "source": "tmpfs",
               "options": ["remount", "ro", "nosuid", "noexec", "nodev"]}
    if remounted:
        assert mounts[at[0]]["type"] == "cgroup" and at == [at[0], at[0] + 1] and mounts[at[1]] == remount
        return
    assert len(at) == 1 and remount not in mounts
    if views and id_base is None:
        assert mounts[at[0]]["type"] == "tmpfs" and mounts[at[0]]["options"][-1] == "ro"


@pytest.mark.parametrize(("version", "in_place"), [
    ("crun version 1.8.1\ncommit: f8a096be\nrundir: /run/crun\n", True),
    ("crun version 1.28\n", True),
    ("crun version 1.29\n", False),  # fsopen + move_mount: a fresh tmpfs on top of the hierarchies
    ("crun version 1.29.1\n", False),
    ("crun version 2.0\n", False),
    ("runc version 1.1.12\n", False),
    ("", False),
])
def test_the_remount_is_only_for_a_crun_that_remounts_in_place(version: str, in_place: bool) -> None:
    assert version_remounts_in_place(version) is in_place


def test_read_only_no_new_privileges_and_userns() -> None:
    assert _config(read_only=True)["root"]["readonly"] is True
    assert _config(security_opt=["no-new-privileges:true"])["process"]["noNewPrivileges"] is True
    config = _config(id_base=1 << 30, userns="auto")
    mapping = [{"containerID": 0, "hostID": 1 << 30, "size": 65536}]
    assert config["linux"]["uidMappings"] == config["linux"]["gidMappings"] == mapping
    assert {"type": "user"} in config["linux"]["namespaces"]
    assert "idmap" in _mount(config, "/data")["options"]


def test_sysctls_are_dockers_defaults_under_the_specs_and_a_user_namespace_leaves_the_networks_out() -> None:
    """The runtime writes them; in a user namespace it cannot write the network namespace's (made
    outside it): the container controller does, and they are left out of the runtime's."""
    asked = {"net.core.somaxconn": 1024, "net.ipv4.ip_unprivileged_port_start": "1024", "kernel.shmmax": "65536"}
    assert _config()["linux"]["sysctl"] == {"net.ipv4.ip_unprivileged_port_start": "0",
                                           "net.ipv4.ping_group_range": "0 2147483647"}
    assert _config(sysctls=asked)["linux"]["sysctl"] == {
        "net.ipv4.ip_unprivileged_port_start": "1024", "net.ipv4.ping_group_range": "0 2147483647",
        "net.core.somaxconn": "1024", "kernel.shmmax": "65536"}
    assert _config(id_base=1 << 30, userns="auto", sysctls=asked)["linux"]["sysctl"] == {"kernel.shmmax": "65536"}


@pytest.mark.parametrize(("name", "value", "written"), [
    ("net.ipv4.ping_group_range", "0 2147483647", "1073741824 1073807359"),
    ("net.ipv4.ping_group_range", "100\t200", "1073741924 1073742024"),
    ("net.ipv4.ping_group_range", "1 0", "1073741825 1073741824"),  # the kernel's to judge, as inside
    ("net.ipv4.ping_group_range", "100000 200000", "1 0"),  # beyond its groups: none
    ("net.ipv4.ping_group_range", "x", "x"),
    ("net.core.somaxconn", "1024", "1024"),
])
def test_a_user_namespaces_groups_are_written_as_the_hosts(name: str, value: str, written: str) -> None:
    assert sysctls.seen_from_outside(name, value, 1 << 30, 65536) == written


def test_a_tmpfs_is_nosuid_nodev_and_noexec_unless_exec_is_asked_for() -> None:
    """Moby's options for a tmpfs, then what the spec asks; `exec` lifts noexec and nothing else."""
    config = _config(tmpfs=["/cache", "/tools:exec,size=64m,mode=1770,uid=5,gid=6", {"target": "/ro", "read_only": True,
                                                                                    "size": 1000}])
    assert _mount(config, "/cache") == {"destination": "/cache", "type": "tmpfs", "source": "tmpfs",
                                        "options": ["nosuid", "nodev", "noexec", "rw"]}
    assert _mount(config, "/tools")["options"] == ["nosuid", "nodev", "exec", "rw", "mode=1770", "size=65536k",
                                                   "uid=5", "gid=6"]
    assert _mount(config, "/ro")["options"] == ["nosuid", "nodev", "noexec", "ro", "size=1000"]


@pytest.mark.parametrize(("shm_size", "option"), [(None, "size=65536k"), ("256Mi", "size=262144k"),
                                                  (1000, "size=1000")])
def test_dev_shm_is_64_mib_unless_shm_size_says(shm_size: int | str | None, option: str) -> None:
    assert _mount(_config(shm_size=shm_size), "/dev/shm")["options"] == ["nosuid", "noexec", "nodev", "mode=1777",
                                                                        option]


def test_a_mount_below_another_comes_after_it_whatever_the_order_written() -> None:
    """A tmpfs under a volume's target lies on the volume and a volume under a tmpfs's target on
    the tmpfs (Docker sorts its mounts by depth too); at one depth, the order written."""
    config = _config(volumes=["/srv/a:/data/sub", "/srv/b:/data", "/srv/c:/tmp/in"],
                     tmpfs=["/data/sub/cache", "/tmp", "/data/other"])
    spec_mounts = [m["destination"] for m in config["mounts"]][-6:]
    assert spec_mounts == ["/data", "/tmp", "/data/sub", "/tmp/in", "/data/other", "/data/sub/cache"]


def test_a_tmpfs_at_tmp_or_run_replaces_the_private_one_over_the_hosts_root() -> None:
    config = _config(tmpfs=["/tmp:size=1m"])
    assert [m["options"] for m in config["mounts"] if m["destination"] == "/tmp"] == [
        ["nosuid", "nodev", "noexec", "rw", "size=1024k"]]
    assert _mount(config, "/run")["options"] == ["nosuid", "nodev", "mode=755"]


def _rlimits(config: dict[str, Any]) -> dict[str, tuple[int, int]]:
    return {r["type"]: (r["soft"], r["hard"]) for r in config["process"]["rlimits"]}


DEFAULT_RLIMITS = {"RLIMIT_CORE": (0, RLIM_INFINITY), "RLIMIT_NOFILE": (1024, 524288),
                   "RLIMIT_NPROC": (RLIM_INFINITY, RLIM_INFINITY)}


def test_every_container_gets_the_default_limits_not_its_starters() -> None:
    """Docker 29's on a systemd host (core's soft limit aside: see specs.ulimits.DEFAULTS)."""
    assert _rlimits(_config()) == DEFAULT_RLIMITS
    assert _rlimits(_config(privileged=True, userns="auto")) == DEFAULT_RLIMITS


@pytest.mark.parametrize(("ulimits", "expected"), [
    ({"nofile": 65536, "memlock": -1}, {"RLIMIT_NOFILE": (65536, 65536), "RLIMIT_MEMLOCK": (RLIM_INFINITY,) * 2}),
    ({"nproc": {"soft": 1024, "hard": "unlimited"}, "core": 0}, {"RLIMIT_NPROC": (1024, RLIM_INFINITY),
                                                                  "RLIMIT_CORE": (0, 0)}),
])
def test_the_limits_asked_replace_the_defaults_of_their_names(ulimits: dict[str, Any],
                                                              expected: dict[str, tuple[int, int]]) -> None:
    assert _rlimits(_config(ulimits=ulimits)) == {**DEFAULT_RLIMITS, **expected}


def test_on_a_host_that_caps_hard_limits_the_defaults_are_lowered_to_the_cap_and_the_asked_are_not() -> None:
    """What the runtime could not set would fail the start; the spec's own limits are checked
    against the cap before anything changes (test_container_diff)."""
    ceilings = {"nofile": 20000, "nproc": 96367, "core": -1, "memlock": 8388608}
    assert _rlimits(_config(ceilings=ceilings)) == {"RLIMIT_CORE": (0, RLIM_INFINITY), "RLIMIT_NOFILE": (1024, 20000),
                                                    "RLIMIT_NPROC": (96367, 96367)}
    assert _rlimits(_config(ceilings={"nofile": 512})) == {**DEFAULT_RLIMITS, "RLIMIT_NOFILE": (512, 512)}
    assert _rlimits(_config(ceilings=ceilings, ulimits={"nofile": 1 << 20}))["RLIMIT_NOFILE"] == (1 << 20, 1 << 20)


def test_every_limit_is_set_so_none_is_the_starters() -> None:
    """The runtime leaves a limit it is not given as its caller's: each one the spec leaves out
    is given its default (kernel.rlimits.container_defaults: the host init's for most)."""
    host = {"stack": (8388608, UNLIMITED), "memlock": (65536, 65536), "nofile": (4096, 4096)}
    found = _rlimits(_config(defaults={**host, **DEFAULTS}, ulimits={"memlock": 1 << 20}))
    assert found == {**DEFAULT_RLIMITS, "RLIMIT_STACK": (8388608, RLIM_INFINITY), "RLIMIT_MEMLOCK": (1 << 20, 1 << 20)}


def test_an_exec_gets_the_containers_limits() -> None:
    config = _config(ulimits={"nofile": 100})
    assert exec_process(config, ["true"])["rlimits"] == config["process"]["rlimits"]


def test_capability_names_and_masks() -> None:
    assert capabilities.from_mask(0xA80425FB) == capabilities.DOCKER_DEFAULT
    assert capabilities.unavailable(["NET_ADMIN", "SYS_RESOURCE", "ALL"], HOST_CAPS) == ["SYS_RESOURCE"]
    assert capabilities.normalise("cap_net_admin") == "NET_ADMIN"


def test_paths_in_a_root_resolve_inside_it(tmp_path: Path) -> None:
    (tmp_path / "usr" / "bin").mkdir(parents=True)
    (tmp_path / "bin").symlink_to("usr/bin")
    (tmp_path / "usr" / "bin" / "busybox").write_text("")
    (tmp_path / "usr" / "bin" / "busybox").chmod(0o755)
    (tmp_path / "usr" / "bin" / "sh").symlink_to("/usr/bin/busybox")  # absolute: the root's own
    (tmp_path / "usr" / "bin" / "escape").symlink_to("../../../../etc/passwd")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text("root:x:0:0::/:/bin/sh\n")
    assert resolve(tmp_path, "/bin/sh") == tmp_path / "usr" / "bin" / "busybox"
    assert resolve(tmp_path, "/usr/bin/escape") == tmp_path / "etc" / "passwd"  # stays under the root
    assert find_program(tmp_path, "sh", "/usr/local/bin:/bin")
    assert not find_program(tmp_path, "missing", "/bin")
    assert find_program(tmp_path, "/vol/tool", "/bin", mounted=["/vol"])  # a volume's: on trust
    assert find_program(tmp_path, "./busybox", "/nowhere", workdir="/usr/bin")  # in the working directory
    assert not find_program(tmp_path, "./busybox", "/usr/bin", workdir="/")


def test_missing_workdirs_are_made_inside_the_root_without_following_links(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    root = tmp_path / "root"
    outside.mkdir()
    root.mkdir()
    make_dirs(root, "/srv/app/data")
    assert (root / "srv" / "app" / "data").is_dir()
    (root / "link").symlink_to(outside)
    with pytest.raises(OSError):
        make_dirs(root, "/link/made")
    assert list(outside.iterdir()) == []


def test_a_file_inside_a_root_is_read_whole_up_to_the_bound(tmp_path: Path) -> None:
    """/etc/hosts and resolv.conf as the observation reads them: whole, empty, or cut at
    MAX_READ (a container's own file may be any size); a link out of the root is read inside it."""
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "hosts").write_text("127.0.0.1\tlocalhost\n" * 1000)
    (etc / "empty").write_text("")
    (etc / "huge").write_bytes(b"x" * (MAX_READ + 10))
    (etc / "out").symlink_to("/etc/hostname")
    assert read_in_root(tmp_path, "/etc/hosts") == "127.0.0.1\tlocalhost\n" * 1000
    assert read_in_root(tmp_path, "/etc/empty") == ""
    assert read_in_root(tmp_path, "/etc/huge") == "x" * MAX_READ
    assert read_in_root(tmp_path, "/etc/out") is None  # resolved in the root: no /etc/hostname there
    assert read_in_root(tmp_path, "/etc/missing") is None
    os.mkfifo(etc / "fifo")  # never read: a read could block forever
    assert read_all_in_root(tmp_path, ["/etc/hosts", "/etc/fifo", "/etc/out", "/etc/empty"]) == [
        "127.0.0.1\tlocalhost\n" * 1000, None, None, ""]
    assert read_all_in_root(tmp_path / "gone", ["/etc/hosts", "/etc/empty"]) == [None, None]
