"""A throwaway host for kernel tests: a fresh network + mount namespace with tmpfs over
/run/netns, a private state dir and a per-run cgroup parent. The machine's own network,
netfilter rules, namespaces and cgroups are never touched; killing the holder process
frees every link, netns mount and rule made inside.

The firewall backend is not pinned: commands run with the product's default (`auto`), unless
RECONCILE_FIREWALL_BACKEND is set by the caller or a test's `env_overrides`. So one run of the
suite exercises `auto`'s own choice: nftables in a fresh sandbox, iptables in one where a
Docker-like canary set FORWARD's policy to DROP before the first apply; test_ports_e2e.py runs
both explicitly, the firewall kernel and traffic tests name their backend."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_fixed

from controllers.container import CONTAINERS_DIR, REMOVED_DIR
from specs.names import ALIAS_PREFIX, LINK_GROUP
from tests.cgroupfs import hierarchy_roots
from tests.waiting import StillWaiting, eventually, scaled

REPO = Path(__file__).resolve().parent.parent

_HOLDER_SCRIPT = """
set -e
mount -t tmpfs -o mode=755 rc-test-netns /run/netns
mount --make-shared /run/netns 2>/dev/null || true
# skopeo keeps its blob-info cache in /var/lib/containers: a fresh one per sandbox, gone with it.
mount -t tmpfs -o mode=755 rc-test-varlib /var/lib
# Containers' resolv.conf derives from the host's: the same one whatever the machine's resolver.
mount --bind "$1" /etc/resolv.conf
ip link set lo up
# A new netns starts with the host's IPv4 settings, whatever ran there before: the kernel's own
# defaults for those the product sets or the tests count on.
sysctl -qw net.ipv4.ip_forward=0 net.ipv4.conf.all.route_localnet=0 net.ipv4.conf.default.route_localnet=0 \
  net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
# New links with IPv6 on, as the kernel's default (some hosts make their namespaces inherit
# theirs); -e: a host without IPv6 has no such key.
sysctl -qew net.ipv6.conf.default.disable_ipv6=0
echo ready
exec sleep infinity
"""


ONE_AT_A_TIME = pytest.mark.xdist_group("host-wide")
"""For a test that sandboxes do not isolate: it writes host-wide settings and checks them after,
or judges what the host's `userns: auto` ranges hold (user namespaces are the host's). Such
tests run one at a time, on one worker, when the suite runs in parallel (scripts/test.sh)."""


class Sandbox:
    """Run commands and `reconcile` as if on a fresh host."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.state_dir = workdir / "state"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.cgroup_parent = f"rc-test-{uuid.uuid4().hex[:10]}"
        os.makedirs("/run/netns", exist_ok=True)
        resolv = workdir / "resolv.conf"
        resolv.write_text("nameserver 192.0.2.53\nsearch example.test\n")
        self._holder = subprocess.Popen(
            ["unshare", "--net", "--mount", "--propagation", "private", "sh", "-c", _HOLDER_SCRIPT, "rc-sandbox",
             str(resolv)],
            stdout=subprocess.PIPE, text=True,
        )
        assert self._holder.stdout is not None
        line = self._holder.stdout.readline().strip()
        if line != "ready":
            self._holder.kill()
            raise RuntimeError(f"sandbox holder failed to start: {line!r}")
        self.pid = self._holder.pid
        self.env_overrides: dict[str, str] = {}
        """Environment set for every command run inside, over the caller's (a test's choice of
        firewall backend)."""

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "RECONCILE_STATE_DIR": str(self.state_dir),
            "RECONCILE_CGROUP_PARENT": self.cgroup_parent,
            "NO_COLOR": "1",
            "PYTHONPATH": str(REPO),
            **self.env_overrides,
        }

    def run(self, *cmd: str, check: bool = True, input: str | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run a command inside the sandbox's network and mount namespaces, killed after
        `timeout` seconds on our hosts (scaled to this machine)."""
        proc = subprocess.run(
            ["nsenter", "-t", str(self.pid), "-n", "-m", "--", *cmd],
            capture_output=True, text=True, env=self.env, input=input, timeout=scaled(timeout),
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"{cmd} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def spawn(self, *cmd: str) -> subprocess.Popen[str]:
        """Start a long-running command inside the sandbox (an agent); stdout and stderr are
        pipes. close() kills whatever is left of it with the sandbox's processes."""
        return subprocess.Popen(["nsenter", "-t", str(self.pid), "-n", "-m", "--", *cmd],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=self.env)

    def sh(self, script: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("sh", "-c", script, check=check)

    def reconcile(self, *args: str, check: bool = False,
                  timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """The CLI as a user runs it, inside the sandbox."""
        return self.run(sys.executable, "-m", "reconcile", *args, check=check, timeout=timeout)

    def apply(self, path: str | Path) -> str:
        """`reconcile apply PATH`, which must succeed: its output."""
        result = self.reconcile("apply", str(path))
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def exec_in(self, name: str, *argv: str) -> str:
        """`reconcile exec NAME -- ARGV`, which must succeed: its output."""
        result = self.reconcile("exec", name, "--", *argv)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def status(self) -> dict:
        """`reconcile status -o json`, parsed."""
        return json.loads(self.reconcile("status", "-o", "json").stdout)

    def containers(self) -> dict[str, dict]:
        """Every container row of `status`, by container name."""
        return {c["name"]: c for s in self.status()["stacks"] for c in s["containers"]}

    def python(self, code: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run(sys.executable, "-c", code, check=check)

    def links(self, netns: str | None = None) -> list[dict]:
        """`ip -j -d addr show` inside the sandbox (or one of its named namespaces)."""
        prefix = ["ip", "-n", netns] if netns else ["ip"]
        return json.loads(self.run(*prefix, "-j", "-d", "addr", "show").stdout)

    def link(self, name: str, netns: str | None = None) -> dict | None:
        return next((link for link in self.links(netns) if link["ifname"] == name), None)

    def write(self, name: str, text: str) -> Path:
        """A stack file in the sandbox's work dir (visible inside: same filesystem)."""
        path = self.workdir / name
        path.write_text(text)
        return path

    def our_links(self) -> list[dict]:
        """Links that carry any of reconcile's marks (alias prefix or link group)."""
        return [link for link in self.links()
                if (link.get("ifalias") or "").startswith(ALIAS_PREFIX) or link.get("group") == str(LINK_GROUP)]

    def snapshot(self, *ifnames: str) -> str:
        """Byte-comparable state of foreign links: every detail and address, minus the bridge
        timers and counters that tick by themselves."""
        def static(value: object) -> object:
            if isinstance(value, dict):
                return {k: static(v) for k, v in value.items() if "timer" not in k and "stats" not in k}
            if isinstance(value, list):
                return [static(v) for v in value]
            return value

        return json.dumps([static(json.loads(self.run("ip", "-j", "-d", "addr", "show", "dev", n).stdout))
                           for n in ifnames], sort_keys=True)

    def netns_names(self) -> list[str]:
        return sorted(os.listdir(f"/proc/{self.pid}/root/run/netns"))

    def purged(self) -> None:
        """Back once the purge of removed containers' files is done (or after 30 s, whatever is
        left then is for the caller to see): it outlives the run that started it, and its
        processes live in the sandbox's network namespace until they exit, one waiting for the
        lock of another (naming the directory it will delete) among them."""
        containers = self.state_dir / CONTAINERS_DIR
        trash = str(containers / REMOVED_DIR).encode()

        def purging() -> bool:
            for entry in os.listdir("/proc"):
                with contextlib.suppress(OSError):
                    if entry.isdigit() and trash in Path(f"/proc/{entry}/cmdline").read_bytes():
                        return True
            return False

        def done() -> bool:
            if (containers / REMOVED_DIR).exists() or purging():
                return False
            try:
                fd = os.open(containers, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return True
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # let go at once, with the fd
                return True
            except BlockingIOError:
                return False
            finally:
                os.close(fd)

        with contextlib.suppress(StillWaiting):
            eventually(done, True, timeout=30)

    def processes(self) -> list[int]:
        """Pids living in the sandbox's network namespace or in one of its named namespaces
        (container processes and their waiting wrappers), the holder excepted; once any purge
        is done (`purged`)."""
        self.purged()
        inodes = {os.stat(f"/proc/{self.pid}/ns/net").st_ino}
        netns_dir = f"/proc/{self.pid}/root/run/netns"
        inodes |= {os.stat(f"{netns_dir}/{n}").st_ino for n in os.listdir(netns_dir)}
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) != self.pid:
                try:
                    if os.stat(f"/proc/{entry}/ns/net").st_ino in inodes:
                        found.append(int(entry))
                except OSError:
                    continue
        return found

    def command_lines(self) -> dict[int, list[str]]:
        """The argv of each of the sandbox's processes (`processes`), by pid; one gone meanwhile
        is left out."""
        found = {}
        for pid in self.processes():
            try:
                found[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").decode().split("\0")
            except OSError:
                continue
        return found

    def proxies(self) -> dict[int, str]:
        """reconcile's proxies (and the children relaying their flows) in the sandbox: pid ->
        command line, whose first word is the mark (see kernel.proxy)."""
        lines = {pid: " ".join(argv) for pid, argv in self.command_lines().items()}
        return {pid: line for pid, line in lines.items() if line.startswith(f"{ALIAS_PREFIX} port ")}

    def close(self) -> None:
        """Kill whatever a failed test left running, then the namespaces with the holder."""
        for pid in self.processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._holder.send_signal(signal.SIGKILL)
        self._remove_cgroups()

    def cgroup_dirs(self) -> list[Path]:
        """The per-run cgroup parent in every hierarchy where it exists (v1), or in the unified
        tree (v2): where the product's driver makes it."""
        return [top for top in (root / self.cgroup_parent for root in hierarchy_roots()) if top.is_dir()]

    def _remove_cgroups(self) -> None:
        for top in self.cgroup_dirs():
            purge_cgroup(top)
        self._holder.wait()


def purge_cgroup(top: Path) -> None:
    """Kill every process below `top`, then rmdir bottom-up (by hand, not through the driver
    under test)."""
    for directory, _, _ in os.walk(top, topdown=False):
        _kill_all(Path(directory))
        _rmdir_soon(Path(directory))


def _kill_all(cgroup: Path) -> None:
    for pid in (cgroup / "cgroup.procs").read_text().split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass


@retry(retry=retry_if_exception_type(OSError), stop=stop_after_delay(scaled(5)), wait=wait_fixed(0.01), reraise=True)
def _rmdir_soon(path: Path) -> None:
    """cgroupfs keeps a cgroup busy (EBUSY) for a moment after its last process died."""
    path.rmdir()
