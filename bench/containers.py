"""Containers: cold apply, no-op apply, no-op diff and down for N confined containers (Docker's
default confinement on crun, a root overlay each, a published port and limits each) on one
network, beside the floor: the same kernel and runtime work with no reconciler, same run: one
`ip -batch` for the bridge, namespaces and veths (and a small one inside each namespace), an
overlay root per container and `crun run` of a prebuilt configuration (seccomp filter included),
waiting until each container exists. The table also gives the floor's cost per container start
and per overlay mount + unmount.

Run as root: `.venv/bin/python bench/containers.py` (it re-executes itself in a throwaway host).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import print_table, reexec_in_throwaway_host, time_cli_round, unmount_below  # noqa: E402
from controllers.container_bundle import BundleInputs, oci_config  # noqa: E402
from kernel import overlay, rlimits, runtime, seccomp  # noqa: E402
from kernel.cgroups import detect  # noqa: E402
from kernel.oci import Runtime, remounts_in_place  # noqa: E402
from kernel.users import Ids  # noqa: E402
from specs import capabilities  # noqa: E402
from specs.model import Container  # noqa: E402

SIZES = tuple(int(n) for n in os.environ.get("BENCH_SIZES", "10,50").split(","))
LIMITS = "    resources: {memory: 64Mi, pids: 100}\n"


def stack_text(n: int) -> str:
    containers = "".join(f"  c{i}:\n    command: sleep 100000\n    networks: [net]\n"
                         f"    ports: [\"{20000 + i}:80\"]\n{LIMITS}" for i in range(n))
    return f"name: bench\nnetworks:\n  net:\n    subnet: 10.60.0.0/22\ncontainers:\n{containers}"


def _networks(n: int) -> None:
    bridge = f"f{n}br"
    batch = [f"link add {bridge} type bridge", f"addr add 10.61.0.1/22 dev {bridge}", f"link set {bridge} up"]
    for i in range(n):
        batch += [f"netns add f{n}n{i}", f"link add f{n}v{i} type veth peer name eth0 netns f{n}n{i}",
                  f"link set f{n}v{i} master {bridge} up"]
    subprocess.run(["ip", "-batch", "-"], input="\n".join(batch) + "\n", text=True, check=True)
    for i in range(n):  # `ip -batch` cannot switch namespaces: one small batch inside each
        subprocess.run(["ip", "-n", f"f{n}n{i}", "-batch", "-"], text=True, check=True,
                       input=f"addr add 10.61.{i // 250}.{i % 250 + 2}/22 dev eth0\nlink set eth0 up\nlink set lo up\n")


def floor(n: int, work: Path, lowers: Sequence[Path] = (Path("/"),)) -> tuple[float, float, float]:
    """The same kernel and runtime work with no reconciler: (up, down, start seconds of all
    containers alone); the roots over `lowers` (the host's root, or an image's layers)."""
    oci = Runtime.at(work / "runtime")
    spec = Container.model_validate({"command": ["sleep", "100000"], "hostname": "c", "workdir": "/"})
    bpf = seccomp.filter_for(frozenset(capabilities.kernel_names(capabilities.DOCKER_DEFAULT)), work / "seccomp")
    cgroups = detect()
    ceilings, defaults = rlimits.ceilings().highest, rlimits.container_defaults()  # as the controller's
    start = time.perf_counter()
    _networks(n)
    oci.pin_namespace([work])  # as the container controller: roots mounted below reach it
    starts = time.perf_counter()
    procs, pid_files = [], []
    for i in range(n):
        bundle = work / f"c{i}" / "bundle"
        overlay.mount("floor", f"c{i}", lowers, work / f"c{i}" / "upper", work / f"c{i}" / "work", bundle / "rootfs")
        inputs = BundleInputs(f"floor{n}-{i}", oci.netns_path(f"f{n}n{i}"), f"/rc-bench-floor-{n}/c{i}",
                              Ids(0, 0, ()), capabilities.DOCKER_DEFAULT, bpf, list(lowers) == [Path("/")], (),
                              runtime.INIT, runtime.INIT_IN_CONTAINER, hooks=oci.start_hooks([bundle / "rootfs"]),
                              cgroup_views=cgroups.views(f"/rc-bench-floor-{n}/c{i}"),
                              remount_cgroup_tmpfs=cgroups.runtime_cgroup_tmpfs and remounts_in_place(),
                              ulimit_ceilings=ceilings, ulimit_defaults=defaults)
        (bundle / "config.json").write_text(json.dumps(oci_config(spec, inputs)))
        pid_files.append(bundle / "pid")
        procs.append(subprocess.Popen(oci.run_command(inputs.container_id, bundle, bundle / "pid"),
                                      start_new_session=True, stdout=subprocess.DEVNULL))
    while not all(p.exists() and p.read_text().strip() for p in pid_files):
        failed = [proc.args for proc, pid_file in zip(procs, pid_files) if proc.poll() is not None
                  and not pid_file.exists()]
        if failed:  # crun said why on stderr; waiting on would be for ever
            raise RuntimeError(f"the floor's crun run ended before its container started: {failed[0]!r}")
        time.sleep(0.002)
    now = time.perf_counter()
    up, started = now - start, now - starts
    start = time.perf_counter()
    for pid_file in pid_files:
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
    return up, down, started


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
            floor_up, floor_down, starts = floor(n, work)
            per_overlay = overlay_cost(work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        rows.append([n, times.cold_apply, times.noop_apply, times.noop_diff, times.down, floor_up, floor_down,
                     f"{starts / n * 1000:.1f}", f"{per_overlay * 1000:.2f}"])
    print_table(["containers", "cold apply s", "no-op apply s", "no-op diff s", "down s", "floor up s",
                 "floor down s", "floor ms/start", "overlay ms (mount+umount)"], rows)


if __name__ == "__main__":
    main()
