"""Containers: cold apply, no-op apply, no-op diff and down for N confined containers (Docker's
default confinement on crun, a root overlay each, a published port and limits each) on one
network, beside the floor: the same kernel and runtime work with no reconciler, same run: one
`ip -batch` for the bridge, namespaces and veths (and a small one inside each namespace), an
overlay root per container and `crun run` of a prebuilt configuration (seccomp filter included),
waiting until each container exists. The table also gives the floor's cost per container start
and per overlay mount + unmount. bench/scale.py also times the floor's repairs (`floor`'s
`repair_trials`): the same kernel and runtime work as the watch agent's, with no reconciler.

Run as root: `.venv/bin/python bench/containers.py` (it re-executes itself in a throwaway host).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from ipaddress import IPv4Interface
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import print_table, reexec_in_throwaway_host, time_cli_round, unmount_below  # noqa: E402
from controllers.container_bundle import BundleInputs, oci_config  # noqa: E402
from controllers.network import mac_of  # noqa: E402
from kernel import netns, overlay, rlimits, runtime, seccomp, sysctl  # noqa: E402
from kernel import rtnl_wire as wire  # noqa: E402
from kernel.cgroups import detect  # noqa: E402
from kernel.events import RTMGRP_LINK  # noqa: E402
from kernel.events_wire import messages  # noqa: E402
from kernel.netlink import AF_UNSPEC, RTM_DELLINK, Netlink, host_netlink  # noqa: E402
from kernel.oci import Runtime, remounts_in_place  # noqa: E402
from kernel.users import Ids  # noqa: E402
from specs import capabilities  # noqa: E402
from specs.model import Container  # noqa: E402
from specs.names import LINK_GROUP  # noqa: E402

SIZES = tuple(int(n) for n in os.environ.get("BENCH_SIZES", "10,50").split(","))
LIMITS = "    resources: {memory: 64Mi, pids: 100}\n"


def stack_text(n: int) -> str:
    containers = "".join(f"  c{i}:\n    command: sleep 100000\n    networks: [net]\n"
                         f"    ports: [\"{20000 + i}:80\"]\n{LIMITS}" for i in range(n))
    return f"name: bench\nnetworks:\n  net:\n    subnet: 10.60.0.0/22\ncontainers:\n{containers}"


GATEWAY = "10.61.0.1"


def _networks(n: int) -> None:
    """The bridge, and per container a namespace and a veth pair on the bridge, the container end
    addressed, up and routed through the bridge; both ends with IPv6 off, as the sandbox
    controller makes them (with it on, each end's link-local address and routes would slow
    every port's removal)."""
    bridge = f"f{n}br"
    subprocess.run(["ip", "-batch", "-"], text=True, check=True,
                   input=f"link add {bridge} type bridge\naddr add {GATEWAY}/22 dev {bridge}\nlink set {bridge} up\n")
    batch = []
    for i in range(n):
        batch += [f"netns add f{n}n{i}", f"link add f{n}v{i} type veth peer name eth0 netns f{n}n{i}",
                  f"link set f{n}v{i} master {bridge} up"]
    default = ("net", "ipv6", "conf", "default", "disable_ipv6")
    ipv6_default = sysctl.read(*default)
    sysctl.write("1", *default)  # this throwaway host's, for the host ends made meanwhile
    try:
        subprocess.run(["ip", "-batch", "-"], input="\n".join(batch) + "\n", text=True, check=True)
    finally:
        sysctl.write(ipv6_default, *default)
    for i in range(n):  # `ip -batch` cannot switch namespaces: one small batch inside each
        netns.write_sysctl(f"f{n}n{i}", "1", *sysctl.disable_ipv6_key("eth0"))
        subprocess.run(["ip", "-n", f"f{n}n{i}", "-batch", "-"], text=True, check=True,
                       input=f"addr add {_address(i)} dev eth0\nlink set eth0 up\nlink set lo up\n"
                             f"route add default via {GATEWAY}\n")


def _address(i: int) -> IPv4Interface:
    return IPv4Interface(f"10.61.{i // 250}.{i % 250 + 2}/22")


@dataclass(frozen=True)
class Floor:
    up: float
    down: float
    started: float
    """Seconds: all containers up (networks included), all torn down, all started alone."""
    veth_repairs: tuple[float, ...] = ()
    restarts: tuple[float, ...] = ()
    """Seconds of each repair trial (`repair_trials`): a deleted veth's, a killed container's."""


SETTLE = 0.6
"""Seconds between two repair trials, as the drift bench leaves the agent quiet."""


def _deleted(events: socket.socket, index: int) -> None:
    """Return once the kernel announces link `index` itself deleted (its AF_UNSPEC RTM_DELLINK:
    the bridge's AF_BRIDGE one, for the port, comes first); a timeout raises."""
    while True:
        for kind, _port, body in messages(events.recv(1 << 16)):
            if kind == RTM_DELLINK:
                family, _type, deleted, _flags, _change = wire.IFINFO.unpack_from(body)
                if family == AF_UNSPEC and deleted == index:
                    return


def _veth_repairs(n: int, i: int, trials: int) -> tuple[float, ...]:
    """c{i}'s host end deleted with `ip link del`, and, once the kernel announces it, made
    again with the sandbox controller's requests in its order (the pair born with its peer in
    the namespace, both ends' IPv6 off, the host end's alias, bridge and up, hairpin, the
    container end's alias, up and MAC, its address, the default route): seconds from just
    before the command to the last answer, as the drift bench times the agent's repair up to
    its log line."""
    host_name, ns_name = f"f{n}v{i}", f"f{n}n{i}"
    samples = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as events, \
            host_netlink() as host:
        events.bind((0, RTMGRP_LINK))
        events.settimeout(5)
        bridge = host.index_of(f"f{n}br")
        for _ in range(trials):
            index = host.index_of(host_name)
            before = time.perf_counter()
            deleting = subprocess.Popen(["ip", "link", "del", host_name])
            try:
                _deleted(events, index)
                with netns.netlink_in(ns_name) as inner:
                    _make_pair(host, inner, ns_name, host_name, bridge, _address(i))
                samples.append(time.perf_counter() - before)
            finally:
                if deleting.wait() != 0:
                    raise RuntimeError(f"ip link del {host_name} failed")
            time.sleep(SETTLE)
    return tuple(samples)


def _make_pair(host: Netlink, inner: Netlink, ns_name: str, host_name: str, bridge: int,
               address: IPv4Interface) -> None:
    """The sandbox controller's requests for a new pair, written out: a floor measures the
    kernel's work, so it does not call the code it is the floor of."""
    with netns.open_fd(ns_name) as ns_fd:
        made = host.create_veth(host_name, "eth0", ns_fd, 1500, LINK_GROUP)
    inner_index = inner.index_of("eth0")
    netns.write_sysctl(ns_name, "1", *sysctl.disable_ipv6_key("eth0"))
    sysctl.write("1", *sysctl.disable_ipv6_key(host_name))
    host.set_link(made, alias=f"floor {host_name}", master=bridge, up=True)
    host.set_hairpin(made, True)
    inner.set_link(inner_index, alias=f"floor {host_name}", up=True, mac=mac_of(address.ip))
    inner.add_address(inner_index, address)
    inner.replace_default_route(GATEWAY, inner_index)


def _await_pids(procs: Sequence[subprocess.Popen[bytes]], pid_files: Sequence[Path]) -> None:
    """Until every container's init has its pid file (crun's start done)."""
    while not all(p.exists() and p.read_text().strip() for p in pid_files):
        failed = [proc.args for proc, pid_file in zip(procs, pid_files) if proc.poll() is not None
                  and not pid_file.exists()]
        if failed:  # crun said why on stderr; waiting on would be for ever
            raise RuntimeError(f"the floor's crun run ended before its container started: {failed[0]!r}")
        time.sleep(0.002)


def floor(n: int, work: Path, lowers: Sequence[Path] = (Path("/"),), repair_trials: int = 0) -> Floor:
    """The same kernel and runtime work with no reconciler; the roots over `lowers` (the host's
    root, or an image's layers). With `repair_trials`, once all are up and settled, c{n/2}'s
    veth is deleted and made again that many times, then its process killed and started again
    as many (`_restarts`)."""
    oci = Runtime.at(work / "runtime")
    spec = Container.model_validate({"command": ["sleep", "100000"], "hostname": "c", "workdir": "/"})
    bpf = seccomp.filter_for(frozenset(capabilities.kernel_names(capabilities.DOCKER_DEFAULT)), work / "seccomp")
    cgroups = detect()
    ceilings, defaults = rlimits.ceilings().highest, rlimits.container_defaults()  # as the controller's
    pid_files = [work / f"c{i}" / "bundle" / "pid" for i in range(n)]

    def run(i: int) -> subprocess.Popen[bytes]:
        bundle = work / f"c{i}" / "bundle"
        overlay.mount("floor", f"c{i}", lowers, work / f"c{i}" / "upper", work / f"c{i}" / "work", bundle / "rootfs")
        inputs = BundleInputs(f"floor{n}-{i}", oci.netns_path(f"f{n}n{i}"), f"/rc-bench-floor-{n}/c{i}",
                              Ids(0, 0, ()), capabilities.DOCKER_DEFAULT, bpf, list(lowers) == [Path("/")], (),
                              runtime.INIT, runtime.INIT_IN_CONTAINER, hooks=oci.start_hooks([bundle / "rootfs"]),
                              cgroup_views=cgroups.views(f"/rc-bench-floor-{n}/c{i}"),
                              remount_cgroup_tmpfs=cgroups.runtime_cgroup_tmpfs and remounts_in_place(),
                              ulimit_ceilings=ceilings, ulimit_defaults=defaults)
        (bundle / "config.json").write_text(json.dumps(oci_config(spec, inputs)))
        return subprocess.Popen(oci.run_command(inputs.container_id, bundle, pid_files[i]),
                                start_new_session=True, stdout=subprocess.DEVNULL)

    start = time.perf_counter()
    _networks(n)
    oci.pin_namespace([work])  # as the container controller: roots mounted below reach it
    starts = time.perf_counter()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs += [run(i) for i in range(n)]
        _await_pids(procs, pid_files)
        now = time.perf_counter()
        up, started = now - start, now - starts
        veth_repairs: tuple[float, ...] = ()
        restarts: tuple[float, ...] = ()
        if repair_trials:
            os.sync()  # the starts' writes: a restart's unmount would sync them (~0.4 s beside 1,000)
            time.sleep(SETTLE)
            veth_repairs = _veth_repairs(n, n // 2, repair_trials)
            restarts = _restarts(procs, pid_files, n // 2, repair_trials, run,
                                 lambda i: overlay.unmount(work / f"c{i}" / "bundle" / "rootfs"))
    finally:
        start = time.perf_counter()
        for pid_file in pid_files:
            with suppress(OSError, ValueError):  # not started, or gone
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
        for p in procs:
            p.wait()
        for i in range(n):
            overlay.unmount(work / f"c{i}" / "bundle" / "rootfs")
        subprocess.run(["ip", "-batch", "-"], check=True, text=True,
                       input="".join(f"netns del f{n}n{i}\n" for i in range(n)) + f"link del f{n}br\n")
        oci.release_namespace([work])
        down = time.perf_counter() - start
        for directory in Path("/sys/fs/cgroup").glob(f"*/rc-bench-floor-{n}"):
            for sub in sorted(directory.rglob("*"), reverse=True):
                if sub.is_dir():
                    sub.rmdir()
            directory.rmdir()
        unmount_below(work)  # its own shared mount (on hybrid hosts): the pin's directory was below it
    return Floor(up, down, started, veth_repairs, restarts)


def _restarts(procs: list[subprocess.Popen[bytes]], pid_files: Sequence[Path], i: int, trials: int,
              run: Callable[[int], subprocess.Popen[bytes]], unmount: Callable[[int], None]) -> tuple[float, ...]:
    """c{i}'s init SIGKILLed, `crun run` waited out, its root unmounted in full and mounted again,
    its configuration written, `crun run` anew (`procs[i]` replaced): seconds from just before
    the kill to the new pid file, `trials` times."""
    samples = []
    for _ in range(trials):
        pid = int(pid_files[i].read_text())
        before = time.perf_counter()
        os.kill(pid, signal.SIGKILL)
        procs[i].wait()
        pid_files[i].unlink(missing_ok=True)
        unmount(i)
        procs[i] = run(i)
        _await_pids(procs[i:i + 1], pid_files[i:i + 1])
        samples.append(time.perf_counter() - before)
        time.sleep(SETTLE)
    return tuple(samples)


def overlay_cost(work: Path, rounds: int = 50) -> float:
    """Mean seconds of one root overlay mount + unmount (host root as the lower)."""
    start = time.perf_counter()
    for i in range(rounds):
        target = work / f"o{i}" / "root"
        overlay.mount("cost", f"o{i}", [Path("/")], work / f"o{i}" / "upper", work / f"o{i}" / "work", target)
        overlay.unmount(target)
    return (time.perf_counter() - start) / rounds


def main() -> None:
    reexec_in_throwaway_host()
    rows = []
    for n in SIZES:
        times = time_cli_round(stack_text(n))
        work = Path(tempfile.mkdtemp(prefix="rc-floor-"))
        try:
            floor_run = floor(n, work)
            floor_up, floor_down, starts = floor_run.up, floor_run.down, floor_run.started
            per_overlay = overlay_cost(work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        rows.append([n, times.cold_apply, times.noop_apply, times.noop_diff, times.down, floor_up, floor_down,
                     f"{starts / n * 1000:.1f}", f"{per_overlay * 1000:.2f}"])
    print_table(["containers", "cold apply s", "no-op apply s", "no-op diff s", "down s", "floor up s",
                 "floor down s", "floor ms/start", "overlay ms (mount+umount)"], rows)


if __name__ == "__main__":
    main()
