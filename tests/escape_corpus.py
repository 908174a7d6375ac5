"""An escape corpus for container confinement (issue 12): small programs that each try one way
out of a container, and a runner that executes them all inside one and prints a verdict per
attempt. tests/test_confinement.py runs the same corpus as a container's own program and through
`reconcile exec`, under the default confinement (every attempt must fail) and under
`privileged: true` (most must succeed, which shows the corpus can tell).

Each attempt prints one verdict line as its last word:
- `ESCAPED (detail)`: the attempt got what it was after, or the kernel's permission check for a
  privileged operation passed (arguments are chosen so that nothing happens past that check);
- `blocked (detail)`: refused, with the reason the kernel gave;
- `n/a (detail)`: this kernel lacks the feature (no modules, no /dev/mem driver, no sysrq), so
  the attempt cannot tell either way;
- `HOSTCHECK (detail)`: only the host can tell (a write to `/` that must stay in the
  container's own layer); the test decides.
An attempt that prints none of these is reported as `error`: a broken probe, never a pass.

Nothing here harms the host even when it escapes: sysctl and sysfs values are written back as
they were (the test restores the sysctl too), the clock is set to the time it already is, the
hostname change is undone, reboot/swapon/module calls carry arguments the kernel rejects right
after the permission check, sysrq-trigger is opened but never written, the host's disk is read
or mounted (its superblock is read-write already) and listed, never written, what gets mounted
is unmounted, a cgroup made is removed, and only a short-lived child is moved between cgroups.

The attempts learn where things are from the file `env` next to the runner (written by the
test): RC_MARK (unique per test run), RC_STATE_DIR, RC_DISK (major:minor of the host's root
filesystem), RC_DISK_FS, RC_HOSTONLY (a tmpfs that exists only in the host's mount namespace,
holding `marker`; the volume at VOLUME_TARGET is its subdirectory `vol`), RC_SENTINEL and
RC_SENTINEL_PID (a process running on the host, outside every container); write_corpus adds
RC_CORPUS and RC_VOL (the targets).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

CORPUS_TARGET = "/srv"
VOLUME_TARGET = "/media"
"""Where the corpus and the escape volume are mounted (read-only) in the containers under test:
directories every Debian root has, for runtimes that cannot create a missing target."""
HOSTONLY_TOKEN = "RC-HOSTONLY-"
"""Prefix of the host-only marker's content; seeing it inside a container is an escape (probe.py
spells it too, as it does VOLUME_TOKEN)."""
VOLUME_TOKEN = "RC-VOLUME-OK"
"""Content of a file inside the volume: proves the volume is mounted where the attempts look."""
VERDICTS = ("ESCAPED", "blocked", "n/a", "HOSTCHECK", "error")


@dataclass(frozen=True)
class Attempt:
    name: str
    language: str  # "py" (python3, with probe.py importable) or "sh"
    script: str


PROBE = r'''
"""Shared helpers of the corpus' Python attempts: raw system calls and verdicts."""
import contextlib
import ctypes
import errno
import os
import stat
import sys
import tempfile

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
NR = {  # x86_64
    "ptrace": 101, "syslog": 103, "acct": 163, "swapon": 167, "reboot": 169, "sethostname": 170,
    "ioperm": 173, "init_module": 175, "settimeofday": 164, "add_key": 248, "keyctl": 250,
    "perf_event_open": 298, "open_by_handle_at": 304, "finit_module": 313, "bpf": 321, "fsopen": 430,
    "socket": 41, "io_uring_setup": 425,
}
DENIED = {errno.EPERM, errno.EACCES, errno.EROFS}


def _arg(value):
    if value is None:
        return ctypes.c_void_p(None)
    if isinstance(value, int):
        return ctypes.c_long(value)
    if isinstance(value, bytes):
        return ctypes.c_char_p(value)
    return value


def syscall(name, *args):
    """(result, errno) of a raw system call."""
    if os.uname().machine != "x86_64":
        unsupported(f"{name}: the corpus only knows x86_64 syscall numbers")
    ctypes.set_errno(0)
    result = libc.syscall(ctypes.c_long(NR[name]), *(_arg(a) for a in args))
    return result, (ctypes.get_errno() if result < 0 else 0)


def ename(err):
    return errno.errorcode.get(err, str(err))


def verdict(word, detail):
    print(f"{word} ({detail})", flush=True)
    sys.exit(0)


def escaped(detail):
    verdict("ESCAPED", detail)


def blocked(detail):
    verdict("blocked", detail)


def unsupported(detail):
    verdict("n/a", detail)


def judge_errno(what, err, success):
    """A privileged call made with harmless arguments: EPERM/EACCES is the confinement saying
    no, ENOSYS a kernel without the feature, and any other errno means the permission check
    passed and the kernel went on to reject the arguments."""
    if err == 0:
        escaped(success)
    if err in DENIED:
        blocked(f"{what}: {ename(err)}")
    if err == errno.ENOSYS:
        unsupported(f"{what}: ENOSYS, not in this kernel")
    escaped(f"{what}: the permission check passed, then {ename(err)}")


def scratch():
    """A fresh writable directory (the root may be read-only; /dev is always a tmpfs)."""
    for base in ("/tmp", "/run", "/dev/shm", "/dev"):
        try:
            return tempfile.mkdtemp(prefix="rc-escape-", dir=base)
        except OSError:
            continue
    blocked("no writable scratch directory")


@contextlib.contextmanager
def device_node(kind, major, minor, required=True):
    """A fresh device node under /dev (a tmpfs without nodev), removed afterwards. A refused
    mknod is the verdict `blocked`, or yields None if not `required`."""
    path = f"/dev/rc-escape-{os.getpid()}-{kind}{major}-{minor}"
    mode = (stat.S_IFBLK if kind == "b" else stat.S_IFCHR) | 0o600
    try:
        os.mknod(path, mode, os.makedev(major, minor))
    except OSError as exc:
        if required:
            blocked(f"mknod {kind} {major}:{minor}: {exc.strerror}")
        yield None
        return
    try:
        yield path
    finally:
        os.unlink(path)


def open_node(kind, major, minor, flags=os.O_RDONLY):
    """A descriptor of a device made with mknod; refusals are verdicts."""
    with device_node(kind, major, minor) as path:
        try:
            return os.open(path, flags)
        except OSError as exc:
            if exc.errno in (errno.ENXIO, errno.ENODEV):
                unsupported(f"open {kind} {major}:{minor}: {exc.strerror} (no driver in this kernel)")
            blocked(f"mknod {kind} {major}:{minor} worked, open refused: {exc.strerror}")


def host_disk():
    major, minor = os.environ["RC_DISK"].split(":")
    return int(major), int(minor)


def mount(source, target, fstype, flags=0, data=None):
    """mount(2): the errno, 0 on success."""
    enc = lambda s: None if s is None else s.encode()
    ctypes.set_errno(0)
    if libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)) == 0:
        return 0
    return ctypes.get_errno()


def remount_rw(target):
    """Clear read-only on a mount, as a bind (per-mount flag) or as a whole filesystem."""
    return mount(None, target, None, 0x20 | 0x1000) == 0 or mount(None, target, None, 0x20) == 0


def umount(target):
    libc.umount2(target.encode(), 2)  # MNT_DETACH


def try_mount(fstype, source):
    target = scratch()
    err = mount(source, target, fstype)
    if err == 0:
        names = sorted(os.listdir(target))[:5]
        umount(target)
        escaped(f"mounted a new {fstype} (it lists {names})")
    blocked(f"mount -t {fstype}: {ename(err)}")


def open_socket(family_name, family, kind):
    """socket(2) of an address family Docker's seccomp profile denies."""
    r, err = syscall("socket", family, kind, 0)
    if r >= 0:
        os.close(r)
    if err == errno.EAFNOSUPPORT:
        unsupported(f"socket({family_name}): not in this kernel")
    judge_errno(f"socket({family_name})", err, f"an {family_name} socket was opened")


def read_masked(path):
    """A /proc file Docker masks: reading the real one is the escape; /dev/null over it (or
    nothing there) is not."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        unsupported(f"no {path} in this kernel")
    except OSError as exc:
        blocked(f"open {path}: {exc.strerror}")
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_dev != os.stat("/proc/self").st_dev:
        blocked(f"{path} is masked (mode {stat.filemode(info.st_mode)})")
    try:
        data = os.read(fd, 4096)
    except OSError as exc:
        blocked(f"{path} is the real one but read fails: {exc.strerror}")
    escaped(f"read the real {path} ({len(data)} bytes)")


def escape_volume():
    """Where the volume of the escape attempts is; not finding it is a broken test, not a pass."""
    vol = os.environ["RC_VOL"]
    try:
        if open(vol + "/inside").read().strip() == "RC-VOLUME-OK":
            return vol
    except OSError:
        pass
    verdict("error", f"the escape volume is not at {vol}")


def reveals_marker(paths):
    """The first of `paths` that reads the host-only marker, or None."""
    for path in paths:
        try:
            if open(path).read().startswith("RC-HOSTONLY-"):
                return path
        except OSError:
            continue
    return None


def find_files(root, name, limit=20000):
    """Every file called `name` below `root` (bounded walk)."""
    found = []
    for seen, (directory, _, files) in enumerate(os.walk(root)):
        if seen > limit:
            break
        if name in files:
            found.append(os.path.join(directory, name))
    return found
'''

RUNNER = r'''#!/bin/sh
# Runs every attempt of the corpus and prints "RESULT MODE NAME: VERDICT (detail)" for each.
# usage: run.sh MODE   (MODE names the run in the output: program or exec)
mode=$1
set -a
. "$(dirname "$0")/env"
RC_MODE=$mode
set +a
for f in "$(dirname "$0")"/attempts/*; do
  name=$(basename "$f"); name=${name#*-}; name=${name%.*}
  case "$f" in
    *.py) out=$(timeout -s KILL 20 python3 -B "$f" 2>&1); rc=$? ;;
    *) out=$(timeout -s KILL 20 sh "$f" 2>&1); rc=$? ;;
  esac
  line=$(printf '%s\n' "$out" | grep -E '^(ESCAPED|blocked|n/a|HOSTCHECK|error) \(' | tail -n 1)
  if [ -z "$line" ]; then
    line="error (exit $rc: $(printf '%s' "$out" | tr '\n' ' ' | cut -c 1-300))"
  fi
  echo "RESULT $mode $name: $line"
done
echo "CORPUS-DONE $mode"
'''

_SH_HEADER = "flat() { tr '\\n' ' ' | cut -c 1-200; }  # output on the verdict's one line\n"
_PY_HEADER = ("import os, sys\n"
              "sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))\n"
              "from probe import *\n")


def _py(name: str, body: str) -> Attempt:
    return Attempt(name, "py", body.strip("\n") + "\n")


def _sh(name: str, body: str) -> Attempt:
    return Attempt(name, "sh", body.strip("\n") + "\n")


CORPUS: tuple[Attempt, ...] = (
    _sh("root-write-reaches-host", '''
how="/ not remounted"
mount -o remount,rw / 2>/dev/null && how="remounted / rw"
if echo escape > "/$RC_MARK-$RC_MODE" 2>/dev/null; then
  echo "HOSTCHECK (wrote /$RC_MARK-$RC_MODE; $how)"
else
  echo "blocked (cannot write to /; $how)"
fi
'''),
    _py("sysctl-write", '''
import subprocess
path = "/proc/sys/kernel/printk_ratelimit"  # host-global; its own value is written back: nothing changes
old = open(path).read().strip()
def write(value):
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError as exc:
        return exc.strerror
    return None
how = "a plain write"
error = write(old)
if error is not None and subprocess.run(["mount", "-o", "remount,rw", "/proc/sys"],
                                        capture_output=True).returncode == 0:
    how = "a write after remounting /proc/sys rw"
    error = write(old)
if error is None:
    escaped(f"kernel.printk_ratelimit writable by {how} (its own value written back)")
blocked(f"{path}: {error}")
'''),
    _py("sysrq-trigger", '''
try:
    fd = os.open("/proc/sysrq-trigger", os.O_WRONLY)  # opened, never written
except FileNotFoundError:
    unsupported("no /proc/sysrq-trigger in this kernel")
except OSError as exc:
    blocked(f"open for writing: {exc.strerror}")
os.close(fd)
escaped("/proc/sysrq-trigger opened for writing (nothing written)")
'''),
    _py("block-device-read", '''
major, minor = host_disk()
data = os.read(open_node("b", major, minor), 4096)
if data:
    escaped(f"read {len(data)} bytes of the host's root disk {major}:{minor}")
blocked("the disk read returned nothing")
'''),
    _py("mount-host-disk", '''
major, minor = host_disk()
with device_node("b", major, minor) as path:
    target = scratch()
    err = mount(path, target, os.environ["RC_DISK_FS"])  # rw: the sb is rw already; only read
    if err == 0:
        names = sorted(os.listdir(target))[:6]
        umount(target)
        escaped(f"mounted the host's root disk: {names}")
    blocked(f"mount {major}:{minor}: {ename(err)}")
'''),
    _py("dev-mem", '''
os.close(open_node("c", 1, 1))
escaped("opened /dev/mem")
'''),
    _py("dev-kmsg-read", '''
fd = open_node("c", 1, 11, os.O_RDONLY | os.O_NONBLOCK)
try:
    record = os.read(fd, 8192).decode(errors="replace").split(";", 1)[-1].strip()[:60]
except BlockingIOError:
    record = "(empty)"
except OSError as exc:
    blocked(f"/dev/kmsg opened, read refused: {exc.strerror}")
escaped(f"read the host's kernel log: {record!r}")
'''),
    _py("mount-proc", 'try_mount("proc", "proc")'),
    _py("mount-sysfs", 'try_mount("sysfs", "sysfs")'),
    _py("mount-tmpfs", 'try_mount("tmpfs", "rc-escape")'),
    _sh("unshare-user", '''
if out=$(unshare -U true 2>&1); then echo "ESCAPED (unshare -U made a user namespace)"
else echo "blocked ($(printf '%s' "$out" | flat))"; fi
'''),
    _sh("unshare-mount", '''
if out=$(unshare -m true 2>&1); then echo "ESCAPED (unshare -m made a mount namespace)"
else echo "blocked ($(printf '%s' "$out" | flat))"; fi
'''),
    _sh("unshare-net", '''
if out=$(unshare -n true 2>&1); then echo "ESCAPED (unshare -n made a network namespace)"
else echo "blocked ($(printf '%s' "$out" | flat))"; fi
'''),
    _py("load-module", '''
_, err = syscall("init_module", None, 0, b"")  # an empty image: rejected past the check
if err in DENIED or err == errno.ENOSYS:
    fd = os.open("/dev/null", os.O_RDONLY)
    _, err2 = syscall("finit_module", fd, b"", 0)
    err = err if err2 == errno.ENOSYS else err2
judge_errno("init_module/finit_module with an empty image", err, "a module was loaded?!")
'''),
    _py("ptrace-host-process", '''
sentinel, host_pid = os.environ["RC_SENTINEL"].encode(), os.environ["RC_SENTINEL_PID"]
visible = []
for entry in os.listdir("/proc"):
    if entry.isdigit():
        try:
            argv = open(f"/proc/{entry}/cmdline", "rb").read().split(b"\\0")
        except OSError:
            continue
        if sentinel in argv:
            visible.append(int(entry))
for pid in visible:
    r, err = syscall("ptrace", 16, pid, None, None)  # PTRACE_ATTACH
    if r == 0:
        syscall("ptrace", 17, pid, None, None)  # PTRACE_DETACH
        escaped(f"attached to the host's process {pid}")
    escaped(f"the host's process is visible as {pid} (attach: {ename(err)})")
count = sum(1 for e in os.listdir("/proc") if e.isdigit())
blocked(f"no host process visible ({count} pids in /proc; host pid {host_pid} is "
        f"{'another process' if os.path.exists('/proc/' + host_pid) else 'absent'})")
'''),
    _py("set-clock", '''
# settimeofday(NULL, NULL) checks CAP_SYS_TIME (and passes seccomp) but sets nothing.
_, err = syscall("settimeofday", None, None)
judge_errno("settimeofday(NULL, NULL)", err, "may set the host's clock")
'''),
    _py("sethostname", '''
old = os.uname().nodename.encode()
_, err = syscall("sethostname", b"rc-escaped", 10)
if err == 0:
    syscall("sethostname", old, len(old))
    escaped("sethostname permitted (the container's own UTS namespace: the host's is checked outside)")
judge_errno("sethostname", err, "")
'''),
    _py("sys-firmware", '''
try:
    names = sorted(os.listdir("/sys/firmware"))
except OSError as exc:
    blocked(f"/sys/firmware: {exc.strerror}")
if names:
    escaped(f"/sys/firmware lists {names[:6]}")
blocked("/sys/firmware is empty (masked)")
'''),
    _py("proc-kcore", 'read_masked("/proc/kcore")'),
    _py("proc-keys", 'read_masked("/proc/keys")'),
    _py("proc-timer-list", 'read_masked("/proc/timer_list")'),
    _py("proc-interrupts", 'read_masked("/proc/interrupts")'),
    _sh("keyctl", '''
if out=$(keyctl session - keyctl add user rc-escape x @s 2>&1); then
  echo "ESCAPED (add_key in a new session keyring: $(printf '%s' "$out" | flat))"
else
  echo "blocked ($(printf '%s' "$out" | flat))"
fi
'''),
    _py("bpf", '''
attr = (ctypes.c_uint32 * 30)(2, 4, 4, 1)  # BPF_MAP_TYPE_ARRAY, key 4, value 4, 1 entry
r, err = syscall("bpf", 0, ctypes.byref(attr), ctypes.sizeof(attr))  # BPF_MAP_CREATE
if r >= 0:
    os.close(r)
judge_errno("bpf(BPF_MAP_CREATE)", err, "bpf() created a map")
'''),
    _py("io-uring", '''
r, err = syscall("io_uring_setup", 1, None)  # no parameters: EFAULT past the checks, never a ring
judge_errno("io_uring_setup", err, "an io_uring was set up")
'''),
    _py("socket-alg", 'open_socket("AF_ALG", 38, 5)'),  # SOCK_SEQPACKET: the kernel's crypto (CVE-2026-31431)
    _py("socket-vsock", 'open_socket("AF_VSOCK", 40, 1)'),  # SOCK_STREAM: the hypervisor's sockets
    _py("perf-event-open", '''
import struct
attr = (ctypes.c_uint8 * 128)()
struct.pack_into("<IIQ", attr, 0, 1, 128, 0)  # PERF_TYPE_SOFTWARE, size, PERF_COUNT_SW_CPU_CLOCK
r, err = syscall("perf_event_open", ctypes.byref(attr), -1, 0, -1, 0)  # every process, CPU 0
if r >= 0:
    os.close(r)
judge_errno("perf_event_open(system-wide)", err, "a system-wide perf event was opened")
'''),
    _py("other-container-upper", '''
state = os.environ["RC_STATE_DIR"]
found = find_files(state, "secret-b") if os.path.isdir(state) else []
found += [f"/proc/{pid}/root/{rel}" for pid in os.listdir("/proc") if pid.isdigit()
          for rel in ("secret-b", "tmp/secret-b") if os.path.exists(f"/proc/{pid}/root/{rel}")]
how = "through the state dir or /proc"
texts = []
for path in found:
    try:
        texts.append((path, open(path).read().strip()))
    except OSError as exc:
        texts.append((path, exc.strerror))
if not found:  # the way a privileged container gets there: the host's disk, mounted inside
    with device_node("b", *host_disk(), required=False) as node:
        target = scratch()
        if node is not None and mount(node, target, os.environ["RC_DISK_FS"]) == 0:
            how = "on the host's disk, mounted inside"
            texts = [(f, open(f).read().strip()) for f in find_files(target + state, "secret-b")]
            umount(target)
if any(len(text) >= 32 for _, text in texts):
    escaped(f"read container b's secret {how}: {texts}")
shown = f"shows {sorted(os.listdir(state))[:5]}" if os.path.isdir(state) else "is absent"
blocked(f"no way to b's files (the state dir {shown}; found {texts})")
'''),
    _py("volume-dotdot", '''
vol, hostonly = escape_volume(), os.environ["RC_HOSTONLY"]
tries = [vol + "/../marker", vol + "/../../marker", vol + "/.." + hostonly + "/marker",
         vol + "/.." * 12 + hostonly + "/marker", hostonly + "/marker"]
if (path := reveals_marker(tries)) is not None:
    escaped(f"read the host-only marker through {path}")
blocked(f"none of {len(tries)} paths through {vol}/.. reached the host's marker")
'''),
    _py("volume-symlink", '''
vol = escape_volume()
if (path := reveals_marker([vol + "/abs-link", vol + "/rel-link", vol + "/dir-link/marker"])) is not None:
    escaped(f"read the host-only marker through the symlink {path}")
blocked("the volume's symlinks resolve inside the container's root, where the marker is not")
'''),
    _py("sysfs-write", '''
path = "/sys/kernel/rcu_expedited"
try:
    old = open(path).read().strip()
except OSError as exc:
    unsupported(f"{path}: {exc.strerror}")
def write():
    try:
        with open(path, "w") as f:
            f.write(old)  # its own value back: permission is the whole point
    except OSError as exc:
        return exc.strerror
    return None
how = "a plain write"
error = write()
if error is not None and remount_rw("/sys"):
    how = "a write after remounting /sys rw"
    error = write()
if error is None:
    escaped(f"wrote {path} (its own value {old} back) by {how}")
blocked(f"write {path}: {error}")
'''),
    _sh("sysfs-remount-rw", '''
if out=$(mount -o remount,rw /sys 2>&1); then echo "ESCAPED (remounted /sys read-write)"
else echo "blocked ($(printf '%s' "$out" | flat))"; fi
'''),
    _py("chroot-breakout", '''
jail = scratch() + "/jail"
os.mkdir(jail)
try:
    os.chroot(jail)  # the working directory stays outside the jail: the classic way out
except OSError as exc:
    blocked(f"chroot: {exc.strerror}")
for _ in range(64):
    os.chdir("..")
os.chroot(".")
if reveals_marker([os.environ["RC_HOSTONLY"] + "/marker"]) is not None:
    escaped("reached the host's filesystem by breaking out of a chroot")
blocked("chroot permitted, but the way out ends at the container's own root")
'''),
    _py("cgroup-mkdir", '''
roots = [f"/sys/fs/cgroup/{c}" for c in ("memory", "pids", "cpu", "devices")]
roots = [r for r in roots if os.path.isdir(r)] or ["/sys/fs/cgroup"]
errors = []
for root in roots:
    path = f"{root}/rc-escape-{os.getpid()}"
    how = "mkdir"
    try:
        os.mkdir(path)
    except OSError as exc:
        if not remount_rw(root):
            errors.append(f"{root}: {exc.strerror}")
            continue
        how = f"remount {root} rw, mkdir"
        try:
            os.mkdir(path)
        except OSError as exc:
            errors.append(f"{root} (remounted rw): {exc.strerror}")
            continue
    os.rmdir(path)
    escaped(f"made (and removed) the cgroup {path} ({how})")
blocked("; ".join(errors))
'''),
    _py("cgroup-tmpfs-write", '''
root = "/sys/fs/cgroup"  # v1: a tmpfs of the container's own, read-only under Docker; v2: cgroupfs
path = f"{root}/rc-escape-{os.getpid()}"
how = "created"
try:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
except OSError as exc:
    if not remount_rw(root):
        blocked(f"{path}: {exc.strerror}")
    how = f"remounted {root} rw, created"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        blocked(f"{path} (remounted rw): {exc.strerror}")
os.close(fd)
os.unlink(path)
escaped(f"{how} (and removed) the file {path}: Docker mounts {root} read-only")
'''),
    _py("cgroup-procs-escape", '''
def pids_cgroup():
    for line in open("/proc/self/cgroup"):
        _, controllers, path = line.rstrip("\\n").split(":", 2)
        if "pids" in controllers.split(",") or controllers == "":
            return path
root = "/sys/fs/cgroup/pids" if os.path.isdir("/sys/fs/cgroup/pids") else "/sys/fs/cgroup"
before = pids_cgroup()
remounted = remount_rw(root)  # if it is permitted
read_end, write_end = os.pipe()
child = os.fork()
if child == 0:
    try:
        with open(f"{root}/cgroup.procs", "w") as f:
            f.write("0")  # moves this short-lived child to the top of what is visible
        os.write(write_end, ("moved " + pids_cgroup()).encode())
    except OSError as exc:
        os.write(write_end, f"refused {exc.strerror}".encode())
    os._exit(0)
os.close(write_end)
message = os.read(read_end, 4096).decode()
os.waitpid(child, 0)
if message.startswith("moved ") and message[6:] != before:
    escaped(f"moved a process out of its cgroup: {before} -> {message[6:]}"
            f"{' after remounting ' + root + ' rw' if remounted else ''}")
blocked(f"{root}/cgroup.procs: {message} (cgroup {before})")
'''),
    _sh("setns", '''
if out=$(nsenter -t 1 -m -u -i -n true 2>&1); then
  echo "ESCAPED (setns permitted: nsenter -t 1 joined PID 1's namespaces)"
else
  echo "blocked ($(printf '%s' "$out" | flat))"
fi
'''),
    _py("capabilities", '''
DOCKER = 0xa80425fb
status = dict(line.split(":\\t", 1) for line in open("/proc/self/status") if ":\\t" in line)
bounding = int(status["CapBnd"], 16)
extra = [bit for bit in range(64) if bounding & ~DOCKER & (1 << bit)]
if extra:
    escaped(f"bounding set {bounding:#x} holds capabilities beyond Docker's 14: bits {extra}")
blocked(f"bounding set {bounding:#x}, within Docker's 14")
'''),
    _py("seccomp", '''
status = dict(line.split(":\\t", 1) for line in open("/proc/self/status") if ":\\t" in line)
mode = status.get("Seccomp", "?").strip()
if mode != "2":
    escaped(f"no seccomp filter (Seccomp: {mode})")
blocked(f"seccomp filter mode 2 ({status.get('Seccomp_filters', '?').strip()} filters)")
'''),
    _py("reboot", '''
_, err = syscall("reboot", 0, 0, 0, None)  # bad magic: EINVAL right after the permission check
judge_errno("reboot(bad magic)", err, "reboot() returned 0?!")
'''),
    _py("swapon", '''
_, err = syscall("swapon", b"/nonexistent/rc-escape-swap", 0)
judge_errno("swapon(nonexistent file)", err, "swapon succeeded?!")
'''),
    _py("ioperm", '''
r, err = syscall("ioperm", 0x80, 1, 1)
if r == 0:
    syscall("ioperm", 0x80, 1, 0)
judge_errno("ioperm(0x80)", err, "ioperm granted I/O port 0x80 (not touched, given back)")
'''),
    _py("acct", '''
_, err = syscall("acct", None)  # NULL: accounting off (it was not on)
judge_errno("acct(NULL)", err, "acct() permitted (process accounting could be switched on)")
'''),
    _py("open-by-handle", '''
class FileHandle(ctypes.Structure):
    _fields_ = [("bytes", ctypes.c_uint32), ("type", ctypes.c_int32), ("ino_gen", ctypes.c_uint32 * 2)]
handle = FileHandle(8, 1, (ctypes.c_uint32 * 2)(2, 0))  # FILEID_INO32_GEN: inode 2, the fs root
mount_fd = os.open(os.environ["RC_CORPUS"], os.O_RDONLY | os.O_DIRECTORY)  # a volume on the host's root fs
fd, err = syscall("open_by_handle_at", mount_fd, ctypes.byref(handle), os.O_RDONLY | os.O_DIRECTORY)
if fd >= 0:
    escaped(f"opened the host filesystem's root by handle (the 'shocker' way): {sorted(os.listdir(fd))[:6]}")
judge_errno("open_by_handle_at(root inode)", err, "")
'''),
    _py("dmesg", '''
r, err = syscall("syslog", 10, None, 0)  # SYSLOG_ACTION_SIZE_BUFFER
judge_errno("syslog(SIZE_BUFFER)", err, f"the host's kernel log is readable ({r} byte buffer)")
'''),
    _py("fsopen", '''
fd, err = syscall("fsopen", b"tmpfs", 0)
if fd >= 0:
    os.close(fd)
judge_errno("fsopen(tmpfs)", err, "the new mount API is open (fsopen tmpfs)")
'''),
)


def write_corpus(directory: Path, env: dict[str, str]) -> None:
    """The corpus as files, to be mounted read-only at CORPUS_TARGET: run.sh, lib/probe.py,
    attempts/NN-name.{py,sh} (run in this order) and env."""
    (directory / "lib").mkdir(parents=True)
    (directory / "attempts").mkdir()
    (directory / "lib" / "probe.py").write_text(PROBE)
    (directory / "run.sh").write_text(RUNNER)
    env = {**env, "RC_CORPUS": CORPUS_TARGET, "RC_VOL": VOLUME_TARGET}
    (directory / "env").write_text("".join(f"{k}={shlex.quote(v)}\n" for k, v in env.items()))
    for number, attempt in enumerate(CORPUS, 1):
        header = _PY_HEADER if attempt.language == "py" else _SH_HEADER
        path = directory / "attempts" / f"{number:02d}-{attempt.name}.{attempt.language}"
        path.write_text(header + attempt.script)


@dataclass(frozen=True)
class Result:
    verdict: str  # ESCAPED, blocked, n/a, HOSTCHECK or error
    detail: str


_RESULT = re.compile(rf"^RESULT (\S+) (\S+): ({'|'.join(VERDICTS)}) \((.*?)\)?$")


def parse_results(output: str, mode: str) -> dict[str, Result]:
    """The runner's verdicts for one mode, by attempt name."""
    results = {}
    for line in output.splitlines():
        match = _RESULT.match(line.strip())
        if match and match.group(1) == mode:
            results[match.group(2)] = Result(match.group(3), match.group(4))
    return results


def finished(output: str, mode: str) -> bool:
    return f"CORPUS-DONE {mode}" in output
