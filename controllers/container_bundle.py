"""The OCI runtime configuration (config.json) of a container: pure, from the spec and where
its files live. Confinement is Docker's default unless the spec widens it (`privileged`,
`cap_add`): capabilities, seccomp, masked and read-only paths, read-only sysfs, a devices rule
of deny-all plus Docker's allow list (values from Moby's oci/defaults and the runtime spec)."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from kernel.idmap import RANGE_SIZE
from kernel.users import Ids
from specs import capabilities, sysctls
from specs.model import Container, Tmpfs, Ulimit
from specs.ulimits import UNLIMITED, at_most, resource_type

OCI_VERSION = "1.0.2"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

MASKED_PATHS = (
    "/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
    "/sys/devices/virtual/powercap",
)
"""Docker's, and with them, on the host, each CPU's thermal_throttle (BundleInputs.per_cpu_masked)."""
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
ALLOWED_DEVICES = (
    ("c", None, None, "m"), ("b", None, None, "m"),  # mknod any node; using one is another matter
    ("c", 1, 3, "rwm"), ("c", 1, 5, "rwm"), ("c", 1, 7, "rwm"), ("c", 1, 8, "rwm"), ("c", 1, 9, "rwm"),
    ("c", 5, 0, "rwm"), ("c", 5, 1, "rwm"), ("c", 5, 2, "rwm"), ("c", 136, None, "rwm"),
    ("c", 10, 200, "rwm"),
)
"""null, zero, full, random, urandom, tty, console, ptmx, pts/*, net/tun: Docker's list."""

_NOSUID_NOEXEC_NODEV = ["nosuid", "noexec", "nodev"]
DEFAULT_SHM_SIZE = 64 * 1024**2
"""/dev/shm's size unless the spec's shm_size says otherwise: Docker's default."""
RLIM_INFINITY = 2**64 - 1
"""No limit, as the OCI runtime reads a process.rlimits value (an unsigned 64-bit number)."""


@dataclass(frozen=True)
class BundleInputs:
    """What the configuration needs besides the spec: facts read from the host by the caller."""

    container_id: str
    netns_path: str
    cgroups_path: str  # the runtime's own cgroup, a child of ours (our limits stay on the parent)
    ids: Ids
    capabilities: frozenset[str]  # held by the process (spec names, without CAP_)
    seccomp_bpf: bytes | None  # None: privileged
    host_root: bool  # the lower layer is the host's root filesystem
    hidden: tuple[str, ...]  # host directories masked inside (our state dir)
    init: str  # the init binary on the host, bound read-only at init_target
    init_target: str
    id_base: int | None = None  # userns: auto: the host uid of the container's uid 0
    named_volumes: Mapping[str, str] = field(default_factory=dict)  # volume name -> its directory (state.volumes)
    hooks: Mapping[str, Any] = field(default_factory=dict)  # the runtime's own (kernel.oci.Runtime.start_hooks)
    cgroup_views: Mapping[str, str] = field(default_factory=dict)  # bound into /sys/fs/cgroup (CgroupDriver.views)
    remount_cgroup_tmpfs: bool = False
    """The runtime would make a tmpfs at /sys/fs/cgroup (CgroupDriver.runtime_cgroup_tmpfs) and
    applies a remount in place (kernel.oci.remounts_in_place): where it makes it (no views),
    remount it read-only."""
    ulimit_ceilings: Mapping[str, int] = field(kw_only=True)
    """The highest hard limit a start can set, by name (kernel.rlimits.ceilings; left out: no
    ceiling): a default above it is lowered to it (the spec's own limits were checked against
    it). No default: a start that forgot it would fail where root may not raise a limit."""
    ulimit_defaults: Mapping[str, tuple[int, int]] = field(kw_only=True)
    """Every limit a spec's ulimits leave out (kernel.rlimits.container_defaults)."""
    per_cpu_masked: tuple[str, ...] = ()
    """Each CPU's `thermal_throttle` directory in sysfs, masked as Docker does since
    moby#49560 (GHSA-6fw5-f8r9-fgfm: a side channel): how many there are is the host's."""


def _device_rule(kind: str, major: int | None, minor: int | None, access: str) -> dict[str, Any]:
    rule: dict[str, Any] = {"allow": True, "type": kind, "access": access}
    if major is not None:
        rule["major"] = major
    if minor is not None:
        rule["minor"] = minor
    return rule


def _cgroup_views(inputs: BundleInputs) -> Mapping[str, str]:
    """Empty for a container in a user namespace: crun opens a bind's source before it makes the
    cgroup, and binds it afterwards by path from inside the namespace, where every directory
    on the way must be open to others; its own mounts need neither."""
    return inputs.cgroup_views if inputs.id_base is None else {}


def _cgroup_mounts(inputs: BundleInputs, privileged: bool, sys_mode: str) -> list[dict[str, Any]]:
    """The container's /sys/fs/cgroup: where the driver has a view of every hierarchy the runtime
    would mount, a tmpfs of ours (mode 755, as Docker's) with those views bound in it, as
    read-only as /sys (crun makes a read-only mount so once every mount is made, the views'
    mount points in it included); else the runtime's own cgroup mount."""
    views = _cgroup_views(inputs)
    if not views:
        return [{"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                 "options": [*_NOSUID_NOEXEC_NODEV, "relatime", sys_mode]},
                *_cgroup_tmpfs_remount(inputs, privileged)]
    return [{"destination": "/sys/fs/cgroup", "type": "tmpfs", "source": "tmpfs",
             "options": [*_NOSUID_NOEXEC_NODEV, "mode=755", "size=1024k", sys_mode]},
            *({"destination": inside, "type": "bind", "source": host,
               "options": ["bind", *_NOSUID_NOEXEC_NODEV, sys_mode]} for inside, host in sorted(views.items()))]


def _cgroup_tmpfs_remount(inputs: BundleInputs, privileged: bool) -> list[dict[str, Any]]:
    """crun's tmpfs at /sys/fs/cgroup made read-only, as Docker has it: crun mounts it writable
    whatever the cgroup mount's options say (so that it can make the hierarchies' directories
    in it). A remount of that very tmpfs, after the mounts in it: crun makes it read-only once
    every mount is made, as every read-only mount. Not a bind: crun would open a bind's source
    (the host's /sys/fs/cgroup) for a container in a user namespace and move it in. Never on a
    cgroup2 mount (a remount there would reconfigure the cgroup2 file system itself), nor with a
    crun that would mount a fresh tmpfs on top (BundleInputs says)."""
    if not inputs.remount_cgroup_tmpfs or privileged:
        return []
    return [{"destination": "/sys/fs/cgroup", "type": "tmpfs", "source": "tmpfs",
             "options": ["remount", "ro", *_NOSUID_NOEXEC_NODEV]}]


def _mounts(container: Container, inputs: BundleInputs) -> list[dict[str, Any]]:
    sys_mode = "rw" if container.privileged else "ro"
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": list(_NOSUID_NOEXEC_NODEV)},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": [*_NOSUID_NOEXEC_NODEV, "mode=1777", _size_option(container.shm_size or DEFAULT_SHM_SIZE)]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": list(_NOSUID_NOEXEC_NODEV)},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": [*_NOSUID_NOEXEC_NODEV, sys_mode]},
        *_cgroup_mounts(inputs, container.privileged, sys_mode),
        {"destination": inputs.init_target, "type": "bind", "source": inputs.init,
         "options": ["bind", "ro", "nosuid", "nodev"]},
    ]
    if inputs.host_root:
        # The host's /tmp and /run are not the container's, as the v1 contract promises (a tmpfs
        # of the spec's at either is that one).
        own = {tmpfs.target for tmpfs in container.tmpfs}
        mounts += [{"destination": d, "type": "tmpfs", "source": "tmpfs",
                    "options": ["nosuid", "nodev", f"mode={mode}"]}
                   for d, mode in (("/tmp", "1777"), ("/run", "755")) if d not in own]
    return mounts + _spec_mounts(container, inputs)


def _spec_mounts(container: Container, inputs: BundleInputs) -> list[dict[str, Any]]:
    """Volumes and tmpfs mounts, a parent before what is mounted below it (Docker sorts its
    mounts by their number of path components too): a tmpfs under a volume's target lies on the
    volume, a volume under a tmpfs's target on the tmpfs, whatever order the spec lists them."""
    # In a user namespace a volume is idmapped to the container's ids (crun's `idmap`): what its
    # root writes there is owned by root on the host, as without one. A tmpfs needs nothing: the
    # runtime mounts it inside the namespace, so its root belongs to the container's root.
    idmap = ["idmap"] if inputs.id_base is not None else []
    mounts: list[dict[str, Any]] = []
    for volume in container.volumes:
        source = str(volume.source) if volume.volume_name is None else inputs.named_volumes[volume.volume_name]
        mounts.append({"destination": volume.target, "type": "bind", "source": source,
                       "options": ["rbind", "ro" if volume.read_only else "rw", "rprivate", *idmap]})
    mounts += [_tmpfs_mount(tmpfs) for tmpfs in container.tmpfs]
    return sorted(mounts, key=lambda mount: len(PurePosixPath(mount["destination"]).parts))


def _tmpfs_mount(tmpfs: Tmpfs) -> dict[str, Any]:
    """Moby's options for a tmpfs (nosuid, nodev, noexec, then the user's): `exec` lifts noexec
    alone; nosuid and nodev stay (specs.tmpfs refuses suid and dev)."""
    options = ["nosuid", "nodev", "exec" if tmpfs.exec else "noexec", "ro" if tmpfs.read_only else "rw"]
    if tmpfs.mode is not None:
        options.append(f"mode={tmpfs.mode:o}")
    if tmpfs.size is not None:
        options.append(_size_option(tmpfs.size))
    options += [f"{name}={value}" for name, value in (("uid", tmpfs.uid), ("gid", tmpfs.gid)) if value is not None]
    return {"destination": tmpfs.target, "type": "tmpfs", "source": "tmpfs", "options": options}


def _size_option(size: int) -> str:
    """A tmpfs's size= in KiB when it is whole ones, as Docker writes it (the kernel takes both)."""
    return f"size={size // 1024}k" if size % 1024 == 0 else f"size={size}"


def _process(container: Container, inputs: BundleInputs, env: Mapping[str, str]) -> dict[str, Any]:
    caps = capabilities.kernel_names(inputs.capabilities)
    user: dict[str, Any] = {"uid": inputs.ids.uid, "gid": inputs.ids.gid}
    if inputs.ids.groups:
        user["additionalGids"] = list(inputs.ids.groups)
    return {
        "terminal": False,
        "user": user,
        "args": [inputs.init_target, "-g", "--", *container.command],
        "env": [f"{k}={v}" for k, v in env.items()],
        "cwd": container.workdir,
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
        "noNewPrivileges": "no-new-privileges" in container.security_opt,
        "oomScoreAdj": 0,  # as Docker's, whatever the process that starts it has (an agent may have less)
        "rlimits": rlimits(container.ulimits, inputs.ulimit_ceilings, inputs.ulimit_defaults),  # and every exec's
    }


def rlimits(asked: Mapping[str, Ulimit], ceilings: Mapping[str, int],
            defaults: Mapping[str, tuple[int, int]]) -> list[dict[str, Any]]:
    """process.rlimits: the spec's limits, and the defaults of the names it leaves out (all of
    them: the runtime leaves a limit it is not given as its caller's), each default lowered to
    what this host lets a start set."""
    limits = {name: tuple(at_most(limit, ceilings.get(name, UNLIMITED)) for limit in (soft, hard))
              for name, (soft, hard) in defaults.items()}
    limits |= {name: (ulimit.soft, ulimit.hard) for name, ulimit in asked.items()}
    return [{"type": resource_type(name), "soft": _oci_limit(soft), "hard": _oci_limit(hard)}
            for name, (soft, hard) in sorted(limits.items())]


def _oci_limit(limit: int) -> int:
    return RLIM_INFINITY if limit == UNLIMITED else limit


def environment(hostname: str, env: Mapping[str, str]) -> dict[str, str]:
    """As Docker: a default PATH and HOSTNAME, then the spec's variables (which win). `exec`
    gets the same: the runtime replaces the process environment with what it is given."""
    return {"PATH": DEFAULT_PATH, "HOSTNAME": hostname, "container": "reconcile", **env}


def exec_process(config: Mapping[str, Any], argv: list[str]) -> dict[str, Any]:
    """The process of an exec: the container's own (user and groups, workdir, environment,
    capabilities, no_new_privs, OOM score, resource limits: the runtime sets them on the exec as
    on the container, whatever the caller's own), running argv instead of its init."""
    return {**config["process"], "args": argv, "terminal": False}


def sysctls_of(container: Container, in_user_namespace: bool) -> tuple[dict[str, str], dict[str, str]]:
    """Every sysctl a container starts with, its spec's over Docker's defaults, as (the
    runtime's to write, reconcile's). The runtime writes them all but the network namespace's of
    a container in a user namespace: that namespace's root has no say over a network namespace
    made outside it (EACCES), so reconcile writes those from outside (ContainerController)."""
    runtimes: dict[str, str] = {}
    ours: dict[str, str] = {}
    for name, value in {**sysctls.DEFAULTS, **container.sysctls}.items():
        (ours if in_user_namespace and sysctls.of_network(name) else runtimes)[name] = value
    return runtimes, ours


def oci_config(container: Container, inputs: BundleInputs) -> dict[str, Any]:
    linux: dict[str, Any] = {
        "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "cgroup"},
                       {"type": "network", "path": inputs.netns_path}],
        "cgroupsPath": inputs.cgroups_path,
        "rootfsPropagation": "rprivate",
    }
    if inputs.id_base is not None:
        mapping = [{"containerID": 0, "hostID": inputs.id_base, "size": RANGE_SIZE}]
        linux["namespaces"].append({"type": "user"})
        linux["uidMappings"], linux["gidMappings"] = mapping, mapping
    annotations: dict[str, str] = {}
    if container.privileged:
        linux["resources"] = {"devices": [{"allow": True, "access": "rwm"}]}
        linux["maskedPaths"] = list(inputs.hidden)
    else:
        linux["resources"] = {"devices": [{"allow": False, "access": "rwm"},
                                          *(_device_rule(*rule) for rule in ALLOWED_DEVICES)]}
        linux["maskedPaths"] = [*MASKED_PATHS, *inputs.per_cpu_masked, *inputs.hidden]
        linux["readonlyPaths"] = list(READONLY_PATHS)
    if container.resources.memory is not None:
        # crun's v1 manager writes the memory limit of the cgroup it starts the container in,
        # unlimited unless given: given ours, it keeps the one the cgroup controller showed there
        # (CgroupDriver.show_limits). Ours, on the parent, is the one that holds.
        linux["resources"]["memory"] = {"limit": container.resources.memory}
    linux["sysctl"] = sysctls_of(container, inputs.id_base is not None)[0]
    if inputs.seccomp_bpf is not None:
        annotations["run.oci.seccomp_bpf_data"] = base64.b64encode(inputs.seccomp_bpf).decode()
    return {
        "ociVersion": OCI_VERSION,
        "process": _process(container, inputs, environment(container.hostname, container.env)),
        "root": {"path": "rootfs", "readonly": container.read_only},
        "hostname": container.hostname,
        "mounts": _mounts(container, inputs),
        "linux": linux,
        "annotations": annotations,
        **({"hooks": dict(inputs.hooks)} if inputs.hooks else {}),
    }


def lower_of(container: Container) -> Path:
    """The layer under the container's own: its rootfs directory, or the host's root."""
    return container.rootfs if container.rootfs is not None else Path("/")
