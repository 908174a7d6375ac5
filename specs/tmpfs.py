"""A container's tmpfs mounts and its /dev/shm: Docker's `--tmpfs PATH[:OPTIONS]` syntax read
into the mapping form, and the checks of each field.

Every tmpfs is mounted nosuid, nodev and noexec, as Moby mounts one (daemon/oci_linux.go: those
three first, the user's options after them); `exec` is the one of those a spec may lift, as
Docker's `exec` option does. Docker also takes `suid` and `dev`: here they are errors, so that a
tmpfs is never a place for setuid programs or device nodes where Docker's defaults deny them.
"""

from __future__ import annotations

from specs.errors import quoted
from specs.fields import MAX_ID, check_mount_target, describe_value, reject_scalar, to_bounded_bytes
from specs.units import docker_size

TMPFS_FORM = "'/PATH[:OPTIONS]' (Docker's --tmpfs)"
RUNTIME_TREES = ("/proc", "/sys", "/dev")
"""Mounted by the runtime for every container (proc, sysfs, /dev and what is in it)."""
MAX_MODE = 0o7777
FLAGS: dict[str, tuple[str, bool]] = {"ro": ("read_only", True), "rw": ("read_only", False),
                                      "exec": ("exec", True), "noexec": ("exec", False)}
ALWAYS = ("nosuid", "nodev")
"""Docker's defaults, accepted when written out: every tmpfs has them."""
REFUSED = {"suid": "setuid programs", "dev": "device nodes"}
VALUED = ("size", "mode", "uid", "gid")


def check_tmpfs_target(value: str) -> str:
    """An absolute path outside the trees the runtime mounts itself (/dev/shm has shm_size)."""
    target = check_mount_target(value)
    if target == "/dev/shm":
        raise ValueError("/dev/shm is a tmpfs already: set its size with shm_size")
    tree = next((tree for tree in RUNTIME_TREES if target == tree or target.startswith(tree + "/")), None)
    if tree is not None:
        raise ValueError(f"a tmpfs cannot be mounted at {target}: {tree} is the runtime's own")
    return target


def to_tmpfs_size(value: object) -> int:
    """A tmpfs's size in the native units ("64Mi", "1G") or bytes. 0 is refused: the kernel reads
    it as no limit at all."""
    return to_bounded_bytes(value, 1, "1 byte", ": the kernel reads 0 as no limit (leave the size out for the "
                                                "default)")


def to_mode(value: object) -> int:
    """Permission bits: a number (YAML's 0o1777), or octal digits as text ("1777", "0755")."""
    octal = value if isinstance(value, str) and value and set(value) <= set("01234567") else None
    bits = int(octal, 8) if octal is not None else value
    if isinstance(bits, int) and not isinstance(bits, bool) and 0 <= bits <= MAX_MODE:
        return bits
    shown = oct(bits) if isinstance(bits, int) and not isinstance(bits, bool) else describe_value(bits)
    raise ValueError(f"expected permission bits up to 0o7777, in octal like '1777' or 0o1777, got {shown}")


def to_id(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ID:
        raise ValueError(f"expected a uid or gid from 0 to {MAX_ID}, got {describe_value(value)}")
    return value


def to_tmpfs(value: object) -> object:
    """"/PATH[:OPTIONS]" as the mapping form (options comma-separated, as Docker's --tmpfs and the
    kernel take them: size=64m, mode=1777, uid=N, gid=N, ro, rw, exec, noexec, nosuid, nodev)."""
    if not isinstance(value, str):
        return reject_scalar(value, f"{TMPFS_FORM} or a mapping")  # a mapping: the model checks it
    target, _, options = value.partition(":")
    entry: dict[str, object] = {"target": target}
    for option in options.split(",") if options else []:
        key, equals, text = option.partition("=")
        if equals and key in VALUED:
            entry[key] = _option_value(key, text, value)
        elif not equals and option in FLAGS:
            field, flag = FLAGS[option]
            entry[field] = flag
        elif not equals and option in REFUSED:
            raise ValueError(f"tmpfs option {quoted(option)} in {quoted(value)} is not supported: a tmpfs is "
                             f"always nosuid and nodev (no {REFUSED[option]}), as Docker's default")
        elif not equals and option in ALWAYS:
            continue
        else:
            raise ValueError(f"unsupported tmpfs option {quoted(option)} in {quoted(value)}: use size=, mode=, "
                             "uid=, gid=, ro, rw, exec, noexec")
    return entry


def _option_value(key: str, text: str, written: str) -> int:
    """size= as Docker and the kernel read it (k m g t: powers of 1024; no % of the memory), the
    mode in octal, ids in decimal."""
    if key == "size":
        size = docker_size(text)
        if size is None:
            raise ValueError(f"invalid size {quoted(text)} in {quoted(written)}: use bytes or k, m, g (powers "
                             "of 1024), like size=64m")
        return size
    if key == "mode":
        return to_mode(text)
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"invalid {key} {quoted(text)} in {quoted(written)}: use a number")
    return to_id(int(text))
