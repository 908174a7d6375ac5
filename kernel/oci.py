"""The OCI runtime (crun): the command lines that run a container in the foreground and run a
command in one, and the runtime's own state, which is a cache like our store.

Why crun: it is the runtime Podman ships, applies the whole OCI confinement (capabilities,
seccomp, masked paths, devices cgroup, pivot_root), accepts a seccomp filter compiled once
(`run.oci.seccomp_bpf_data`), and costs less per start than runc (a C program; its foreground
process keeps ~3 MB resident against runc's ~10 MB). See README "Containers".

Hybrid cgroup hosts (v1 hierarchies plus a cgroup2 tree that has controllers, as ours): crun
refuses them ("cgroups in hybrid mode not supported") because it reads
/sys/fs/cgroup/unified/cgroup.controllers. There it runs in a mount namespace of its own (a
slave copy of ours, pinned once and entered by every start: kernel.mountns) in which /dev/null
is bound over that file: the host's file is never touched. Pure v1 and pure v2 hosts run crun
as it is.

That namespace is kept lean (each start copies its mount table: kernel.mountns): it holds no
sandbox's namespace file (crun opens one through our own root, /proc/<our pid>/root/run/netns/..,
which crosses into our mount namespace; a start's caller lives until crun has created the
container), and it lets go of a container's root once the container has started (a poststart
hook, which crun runs in its own namespace).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from kernel import crashpoints, mountns, netns

CRUN = "crun"
UNIFIED_CONTROLLERS = Path("/sys/fs/cgroup/unified/cgroup.controllers")
SH = "/bin/sh"
_LET_GO = 'cat >/dev/null; exec umount --lazy -- "$@"'
"""The poststart hook. It reads the container's state crun writes to it first: crun 1.8.1 fails
the start when the write finds the hook gone ("writing to pipe: Broken pipe", measured on 3-7
of 1,000 starts with a bare `umount` as the hook). With `cat`, not the shell's `read`: the state
(~10 KB, the seccomp filter's annotation in it) has no newline, and the shell reads a pipe a
byte at a time (10,437 reads a start, traced; 7.0 ms of CPU against 2.7 with `cat`, measured)."""
NAMESPACE_PIN = "runtime-ns"  # DO NOT RENAME: <runtime root>/../runtime-ns/mnt pins crun's mount namespace
_NAMESPACE_SETUP = mountns.Setup(covered=(UNIFIED_CONTROLLERS,), dropped=(netns.NETNS_DIR,))


REMOUNTS_IN_PLACE_BEFORE = (1, 29)
"""The crun release from which every file system mount entry is made with the new mount API
(fsopen, move_mount; its commit 9259e891): a `remount` entry then puts a fresh mount on top of
the one at its destination instead of changing it."""


@cache
def remounts_in_place() -> bool:
    """Whether this host's crun applies a `remount` mount entry to the mount already at its
    destination (before 1.29). Asked once a process, when a container is first started."""
    try:
        answer = subprocess.run([CRUN, "--version"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return version_remounts_in_place(answer.stdout)


def version_remounts_in_place(version: str) -> bool:
    """The answer for `crun --version`'s text; False for one it does not recognise."""
    found = re.match(r"crun version (\d+)\.(\d+)", version)
    return found is not None and (int(found[1]), int(found[2])) < REMOUNTS_IN_PLACE_BEFORE


class OCIError(Exception):
    """The OCI runtime failed; the message is its own."""


def is_hybrid_host() -> bool:
    """A cgroup2 tree beside v1 hierarchies that has controllers of its own."""
    try:
        return bool(UNIFIED_CONTROLLERS.read_text().strip())
    except OSError:
        return False


@dataclass(frozen=True)
class Runtime:
    root: Path  # crun --root: the runtime's state, one directory per container id
    hybrid: bool

    @classmethod
    def at(cls, root: Path) -> Runtime:
        return cls(root, is_hybrid_host())

    def _crun(self) -> list[str]:
        return [CRUN, "--root", str(self.root)]

    @property
    def namespace_pin(self) -> Path:
        """Where crun's mount namespace is pinned on a hybrid host."""
        return self.root.parent / NAMESPACE_PIN / "mnt"

    def namespace_state(self, carried: Collection[Path], ours: str | None = None) -> mountns.PinState | None:
        """On a hybrid host, whether the namespace containers start in is pinned and shows what
        ours shows (what was mounted since under a private mount is not in it), with the
        `carried` directories (where roots are mounted) shared mount points that reach it.
        `ours`: our mount table, just read (mountns.state)."""
        if not self.hybrid:
            return None
        return mountns.state(self.namespace_pin, _NAMESPACE_SETUP, carried, ours)

    def pin_namespace(self, carried: Collection[Path], fresh: bool = False) -> None:
        """On a hybrid host, before containers are started: pin their namespace if none is, or
        a `fresh` one in place of one that lags (see `namespace_state`)."""
        if self.hybrid and (fresh or not mountns.is_pinned(self.namespace_pin)):
            mountns.pin(self.namespace_pin, _NAMESPACE_SETUP, carried)

    def netns_path(self, name: str) -> str:
        """A sandbox's namespace file as crun opens it from where it runs (see the module's
        docstring): valid while this process lives."""
        path = netns.path_of(name)
        return f"/proc/{os.getpid()}/root{path}" if self.hybrid else path

    def start_hooks(self, mounts: Sequence[Path]) -> dict[str, list[dict[str, object]]]:
        """The OCI hooks of a start: on a hybrid host, crun's namespace lets go of the container's
        `mounts` (its root, its idmapped lowers) once it has started (its own namespace holds
        its own copies)."""
        if not self.hybrid:
            return {}
        return {"poststart": [{"path": SH, "args": ["sh", "-c", _LET_GO, "rc-let-go", *map(str, mounts)]}]}

    def release_namespace(self, carried: Collection[Path]) -> None:
        """Once no container is left: the pinned namespace no longer holds a copy of our mounts,
        and the mount points pinning made of the `carried` directories go."""
        if self.hybrid:
            mountns.release(self.namespace_pin, carried)

    def run_command(self, container_id: str, bundle: Path, pid_file: Path) -> list[str]:
        """Create and start, staying in the foreground until the container's init exits, with
        its exit status (128+N for a signal): crun is the container's parent, so no code is lost.
        On a hybrid host, in the namespace `pin_namespace` made sure of."""
        run = [*self._crun(), "run", "--bundle", str(bundle), "--pid-file", str(pid_file), container_id]
        if self.hybrid:
            return ["nsenter", f"--mount={self.namespace_pin}", "--", *run]
        return run

    def exec_command(self, container_id: str, process_file: Path, pid_file: Path, log_file: Path) -> list[str]:
        """Run the process described in `process_file` (an OCI process object) in the container:
        crun joins its namespaces and cgroups and loads its seccomp filter. Its own errors go to
        `log_file` too (JSON lines; still to stderr, for the user): exec_status reads them."""
        return [*self._crun(), f"--log=file:{log_file}", "--log-format=json", "exec", "--process", str(process_file),
                "--pid-file", str(pid_file), container_id]

    def ids(self) -> list[str]:
        """Containers the runtime has state for (running or not)."""
        try:
            return sorted(entry.name for entry in os.scandir(self.root) if entry.is_dir())
        except FileNotFoundError:
            return []

    def has_state(self, container_id: str) -> bool:
        return (self.root / container_id).is_dir()

    def delete(self, container_id: str) -> None:
        """Forget a container whose process is gone (a runtime killed before it cleaned up)."""
        crashpoints.step("runtime-delete")
        if not self.has_state(container_id):
            return
        proc = subprocess.run([*self._crun(), "delete", "--force", container_id],
                              capture_output=True, text=True)
        if proc.returncode != 0 and self.has_state(container_id):
            raise OCIError(f"crun delete {container_id}: {proc.stderr.strip()}")


EXEC_NOT_FOUND = 127
EXEC_CANNOT_RUN = 126
_RUNTIME_FAILED = 255


def exec_start_errors(status: int, log_file: Path) -> list[str]:
    """The runtime's errors when an exec's command never started; [] when it ran. crun ends
    with 255 both when the command exited 255 and when the command never started; only then
    has it logged an error ("executable file `x` not found in $PATH: ...", "open executable:
    Permission denied", a directory, a bad workdir)."""
    if status != _RUNTIME_FAILED:
        return []
    try:
        lines = log_file.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return []
    return [record.get("msg", "") for record in map(_json_record, lines) if record.get("level") == "error"]


def exec_status(status: int, log_file: Path) -> int:
    """The exit status of an exec as `docker exec` (and a shell) gives it: a command that never
    started (exec_start_errors) is 127 when not found ("executable file `x` not found in
    $PATH", for a path too), 126 for any other start failure. Any other status is the
    command's own (3, 137, 143, 255, ...)."""
    errors = exec_start_errors(status, log_file)
    if not errors:
        return status
    not_found = any(m.startswith("executable file ") and " not found" in m for m in errors)
    return EXEC_NOT_FOUND if not_found else EXEC_CANNOT_RUN


def _json_record(line: str) -> dict[str, str]:
    """One line of crun's JSON log ({"msg", "level", "time"}); {} for anything else."""
    try:
        record = json.loads(line)
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in record.items()} if isinstance(record, dict) else {}
