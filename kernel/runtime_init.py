"""The container's setup program: runs as PID 1 of the new pid/mount/uts/ipc namespaces (made
by util-linux `unshare --fork`), inside the sandbox network namespace, prepares the root
filesystem and execs tini (which then stays PID 1, forwarding signals and reaping zombies).

Run as `python -S -I runtime_init.py ARGS`: standalone, stdlib `os`/`sys`/`ctypes` only (json
and socket would pull in `re`/`enum` and double the start-up cost). Arguments, in order:
STATUS_FD HOSTNAME ROOTFS|- WORKDIR USER|- INIT_PATH  N_MOUNTS (SRC DST ro|rw)*N
N_CGROUP_PROCS PATH*N  N_ENV (K=V)*N  ARGV...

Success or failure is reported on STATUS_FD before the exec, so the caller never has to guess
why a container did not start: `ok <host pid> <start time>` or `error <message>`.
"""

import ctypes
import os
import sys

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x1, 0x2, 0x4, 0x8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 0x20, 0x1000, 0x4000, 0x40000
MNT_DETACH = 0x2
AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY = 0x1
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
SYS_MOUNT_SETATTR = 442  # the same on x86_64 and aarch64
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
NEW_ROOT = "/tmp/root"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

libc = ctypes.CDLL(None, use_errno=True)


class SetupError(Exception):
    pass


def check(result, what):
    if result != 0:
        err = ctypes.get_errno()
        raise SetupError(f"{what}: {os.strerror(err)}")


def mount(source, target, fstype, flags, data=None):
    check(libc.mount(source and source.encode(), target.encode(), fstype and fstype.encode(), flags,
                     data and data.encode()), f"mount {source or fstype} on {target}")


def bind(source, target, read_only):
    mount(source, target, None, MS_BIND | MS_REC)
    if read_only:
        mount(None, target, None, MS_BIND | MS_RDONLY | MS_REMOUNT)


def make_recursive_readonly(path):
    """Every submount read-only too (a plain remount only covers the top mount)."""

    class MountAttr(ctypes.Structure):
        _fields_ = [("set", ctypes.c_uint64), ("clr", ctypes.c_uint64),
                    ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]

    attr = MountAttr(MOUNT_ATTR_RDONLY, 0, 0, 0)
    AT_FDCWD = -100
    check(libc.syscall(SYS_MOUNT_SETATTR, AT_FDCWD, path.encode(), AT_RECURSIVE,
                       ctypes.byref(attr), ctypes.sizeof(attr)), f"make {path} read-only")


def ensure_target(path, is_dir, may_create):
    if os.path.lexists(path):
        return
    if not may_create:
        raise SetupError(f"mount target {path} does not exist in the read-only root")
    if is_dir:
        os.makedirs(path, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "a").close()


def prepare_root(root, rootfs, mounts):
    """Bind the new root onto itself (or the host's / read-only), then private /proc, /dev,
    /tmp, /run, and the caller's bind mounts over it."""
    # Sources are pinned as O_PATH fds and bound through /proc/self/fd/N: the private tmpfs
    # mounted over /tmp next (it holds the new root's mount point, so nothing is created on
    # the host's filesystems) would hide any source that lives under /tmp.
    pinned = []
    for source, target, read_only in mounts:
        try:
            fd = os.open(source, os.O_PATH)
        except OSError:
            raise SetupError(f"volume source {source} does not exist") from None
        pinned.append((f"/proc/self/fd/{fd}", os.path.isdir(source), target, read_only))
    if rootfs is not None:
        rootfs = f"/proc/self/fd/{os.open(rootfs, os.O_PATH | os.O_DIRECTORY)}"
    mount("rc-setup", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=700")
    os.mkdir(root)
    bind(rootfs or "/", root, False)
    if rootfs is None:
        make_recursive_readonly(root)
    writable = rootfs is not None
    for sub in ("proc", "dev", "tmp", "run"):
        ensure_target(f"{root}/{sub}", True, writable)
    mount("proc", f"{root}/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    mount("rc-dev", f"{root}/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=755")
    for name in DEVICES:
        open(f"{root}/dev/{name}", "a").close()
        bind(f"/dev/{name}", f"{root}/dev/{name}", False)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{root}/dev/{name}")
    os.mkdir(f"{root}/dev/shm")
    mount("shm", f"{root}/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    mount("tmp", f"{root}/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    mount("run", f"{root}/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=755")
    for source, is_dir, target, read_only in pinned:
        ensure_target(root + target, is_dir, writable)
        bind(source, root + target, read_only)


def pivot(root):
    """pivot_root(".", "."): the old root ends up stacked on the new one and is detached,
    so nothing of the host's tree stays reachable (runc's way; needs no directory inside)."""
    os.chdir(root)
    check(libc.syscall(SYS_PIVOT_ROOT[os.uname().machine], b".", b"."), "pivot_root")
    check(libc.umount2(b".", MNT_DETACH), "detach the old root")
    os.chdir("/")


def lookup_user(user, root=""):
    """uid, gid, supplementary groups from the container's own /etc/passwd and /etc/group
    (`root`: where the container's root is seen from, for callers outside it)."""
    name, _, group = user.partition(":")

    def table(path):
        try:
            with open(path) as f:
                return [line.rstrip("\n").split(":") for line in f if line.count(":") >= 2]
        except OSError:
            return []

    passwd, groups = table(f"{root}/etc/passwd"), table(f"{root}/etc/group")
    entry = next((e for e in passwd if e[0] == name or (name.isdigit() and e[2] == name)), None)
    if entry is None and not name.isdigit():
        raise SetupError(f"unknown user '{name}' in the container's /etc/passwd")
    uid = int(name) if name.isdigit() else int(entry[2])
    gid = int(entry[3]) if entry and len(entry) > 3 else uid
    if group:
        match = next((g for g in groups if g[0] == group or g[2] == group), None)
        if match is None and not group.isdigit():
            raise SetupError(f"unknown group '{group}' in the container's /etc/group")
        gid = int(group) if group.isdigit() else int(match[2])
    member_of = [int(g[2]) for g in groups if len(g) > 3 and entry and entry[0] in g[3].split(",")]
    return uid, gid, member_of


def find_program(program, env):
    if "/" in program:
        return program if os.access(program, os.X_OK) else None
    for directory in env.get("PATH", DEFAULT_PATH).split(":"):
        candidate = f"{directory}/{program}"
        if os.access(candidate, os.X_OK) and not os.path.isdir(candidate):
            return candidate
    return None


def parse(args):
    pos = 0

    def take(n=1):
        nonlocal pos
        pos += n
        return args[pos - n:pos]

    status_fd, hostname, rootfs, workdir, user, init_path = take(6)
    mounts = [(s, d, m == "ro") for s, d, m in (take(3) for _ in range(int(take()[0])))]
    cgroups = take(int(take()[0]))
    env = dict(item.split("=", 1) for item in take(int(take()[0])))
    return (int(status_fd), hostname, None if rootfs == "-" else rootfs, workdir,
            None if user == "-" else user, init_path, mounts, cgroups, env, args[pos:])


def main():
    status_fd, hostname, rootfs, workdir, user, init_path, mounts, cgroups, env, argv = parse(sys.argv[1:])
    os.set_inheritable(status_fd, False)
    try:
        # Join the cgroups first: limits hold from the container's first instruction.
        for procs in cgroups:
            with open(procs, "w") as f:
                f.write("0")
        host_pid = int(os.readlink("/proc/self"))  # still the host's /proc: the host pid
        with open(f"/proc/{host_pid}/stat") as f:
            start_time = f.read().rsplit(")", 1)[1].split()[19]
        check(libc.sethostname(hostname.encode(), len(hostname.encode())), "sethostname")
        mount(None, "/", None, MS_REC | MS_PRIVATE)
        init_fd = os.open(init_path, os.O_RDONLY | os.O_CLOEXEC)
        prepare_root(NEW_ROOT, rootfs, mounts)
        pivot(NEW_ROOT)
        env.setdefault("PATH", DEFAULT_PATH)
        env.setdefault("HOSTNAME", hostname)
        env.setdefault("container", "reconcile")
        if find_program(argv[0], env) is None:
            raise SetupError(f"command not found in the container: {argv[0]}")
        if user is not None:
            uid, gid, groups = lookup_user(user)
            os.setgroups(groups)
            os.setgid(gid)
            os.setuid(uid)
        try:
            os.chdir(workdir)
        except OSError as exc:
            raise SetupError(f"workdir {workdir}: {exc.strerror}") from None
        os.write(status_fd, f"ok {host_pid} {start_time}\n".encode())
        os.execve(init_fd, ["tini", "-s", "-g", "--", *argv], env)
    except (SetupError, OSError) as exc:
        os.write(status_fd, f"error {exc}\n".encode())
        sys.exit(127)


if __name__ == "__main__":
    main()
