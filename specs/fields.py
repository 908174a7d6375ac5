"""Checks and normalisers for single spec fields: the short forms users write ("8080:80",
"/src:/dst:ro", "64Mi", a command string) become the one shape every consumer reads.

Each raises ValueError with a message a user can act on; the loader prints it after the field
path. Names and paths end up in netns names, cgroup paths, mount options and iptables comments,
so they are held to small safe alphabets here, once, instead of being escaped everywhere.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Callable
from datetime import date
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network
from pathlib import Path
from typing import TypeVar

from specs import capabilities
from specs.errors import Loc, quoted
from specs.images import ReferenceError, parse_reference
from specs.names import IFNAME_PATTERN, NAME_PATTERN, VOLUME_NAME_PATTERN
from specs.units import format_cpu_list, parse_bytes, parse_cpu_list

MAX_PREFIX_LENGTH = 30
"""A network needs a gateway and at least one container address besides the network and
broadcast addresses: /30 is the smallest that has room."""
AddressT = TypeVar("AddressT", IPv4Address, IPv6Address)
StringsT = TypeVar("StringsT", list[str], tuple[str, ...])
MAX_PREFIX_LENGTH6 = 126
"""IPv6 has no broadcast address, but the subnet-router anycast address (the network address)
is not a host's: /126 leaves a gateway and two containers."""
UNICAST6 = (IPv6Network("fc00::/7"), IPv6Network("2000::/3"))
"""Where a container network's IPv6 subnet may lie: unique local (ULA) or global unicast."""

MIN_MEMORY = 4 * 1024**2
"""Below 4 MiB a container runtime cannot even start the process."""

MAX_MEMORY = 1024**5
"""1024Ti: no host has more; a larger number is a typo."""

MAX_ID = 2**32 - 2

LOG_OPTIONS = ("max-size", "max-file")
"""The options of Docker's json-file and local drivers that mean something for our log files."""
MAX_LOG_SIZE = 1024**3
"""1g: rotatelogs takes the size as a C int of bytes."""
MAX_LOG_FILES = 100
"""Largest uid/gid: (uid_t)-1 means "no change" to the kernel."""

NAME_RULE = "use 1 to 16 lowercase letters, digits or '-', starting with a letter"
KEY_RULE = "use 1 to 63 lowercase letters, digits or '-', starting with a letter"
HOSTNAME_RULE = "use 1 to 63 letters, digits or '-', not starting or ending with '-' (RFC 1123)"
IFNAME_RULE = "use at most 15 letters, digits, '_', '.' or '-', starting with a letter or digit"
VOLUME_NAME_RULE = "use 1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit"
PATH_ALPHABET = "letters, digits and . _ + @ - /"

_HOSTNAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ID_OR_NAME = r"[0-9]{1,10}|[a-z_][a-z0-9_-]{0,31}"
_USER_RE = re.compile(rf"(?P<user>{_ID_OR_NAME})(?::(?P<group>{_ID_OR_NAME}))?")
"""Docker's `user`: USER[:GROUP], each a number or a name of the container's /etc/passwd and
/etc/group (kernel.users resolves them at the start)."""
# ':' and ',' are left out on purpose: they separate fields in volume strings and mount options.
_PATH_CHAR_RE = re.compile(r"[A-Za-z0-9._+@/-]")
_PORT_RE = re.compile(r"(?:(?P<host_ip>[^:/]+):)?(?P<host>[0-9]{1,5}):(?P<container>[0-9]{1,5})"
                      r"(?:/(?P<protocol>.*))?")
_PORT_RANGE_RE = re.compile(r"[0-9]+-[0-9]+")
_LOG_SIZE_RE = re.compile(r"(?P<number>[0-9]{1,20}(?:\.[0-9]{1,20})?) ?(?P<unit>[kKmMgG]?)(?:[iI]?[bB])?")
PORT_FORMS = "'HOST:CONTAINER[/tcp|udp]', 'IP:HOST:CONTAINER[/tcp|udp]'"
VOLUME_FORM = "'SOURCE:TARGET[:ro|rw]'"


class SubfieldError(ValueError):
    """A problem inside a value a validator normalises as a whole (an item of a list): `loc`
    extends the field's path, so the error points at the item rather than the whole list."""

    def __init__(self, loc: Loc, message: str):
        super().__init__(message)
        self.loc = loc


def describe_value(value: object) -> str:
    """What a YAML value is, as a user reads it in an error: "an integer (8080)"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({quoted(value)})"
    if isinstance(value, date):
        return f"a date ({value.isoformat()})"
    if isinstance(value, bytes):
        return "binary data"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


def quote_hint(value: object) -> str:
    """The usual cause of a number where text is expected: YAML read an unquoted scalar."""
    if not isinstance(value, (bool, int, float)):
        return ""
    text = str(value).lower() if isinstance(value, bool) else str(value)
    return f': quote it ("{text}")'


def _expect_str(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected {what}, got {describe_value(value)}{quote_hint(value)}")
    return value


def name_checker(kind: str, pattern: re.Pattern[str] = NAME_PATTERN, rule: str = NAME_RULE) -> Callable[[str], str]:
    """A validator for stack names (names.NAME_PATTERN) and, with KEY_PATTERN and KEY_RULE,
    network and container keys. A name that is not ASCII is shown escaped: a Cyrillic 'е' looks
    just like the Latin 'e'."""
    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(f"invalid {kind} {quoted(value, ascii_only=True)}: {rule}")
        return value
    return check


def is_hostname(value: str) -> bool:
    return _HOSTNAME_RE.fullmatch(value) is not None


def check_hostname(value: str) -> str:
    if not is_hostname(value):
        raise ValueError(f"invalid hostname {quoted(value)}: {HOSTNAME_RULE}")
    return value


def check_ifname(value: str) -> str:
    """An explicit bridge name: it reaches `ip` commands and sysfs paths as is."""
    if not IFNAME_PATTERN.fullmatch(value):
        raise ValueError(f"invalid interface name {quoted(value)}: {IFNAME_RULE}")
    return value


def check_env_name(value: str) -> str:
    if not _ENV_NAME_RE.fullmatch(value):
        raise ValueError(f"invalid variable name {quoted(value)}: "
                         "use letters, digits and '_', not starting with a digit")
    return value


def check_no_nul(value: str) -> str:
    """argv and environment strings end at the first NUL byte in execve."""
    if "\0" in value:
        raise ValueError("must not contain a NUL byte")
    return value


def check_user(value: str) -> str:
    match = _USER_RE.fullmatch(value)
    if match is None:
        raise ValueError(f"invalid user {quoted(value)}: use USER or USER:GROUP, each a number (uid, gid) "
                         "or a name ('node', 'node:node', '1000:1000')")
    if any(int(part) > MAX_ID for part in (match["user"], match["group"]) if part and part.isdigit()):
        raise ValueError(f"invalid user {quoted(value)}: uid and gid must be at most {MAX_ID}")
    return value


def check_image(value: str) -> str:
    """An image reference as Docker reads it (specs.images); kept as written, for the plan."""
    try:
        parse_reference(value)
    except ReferenceError as exc:
        raise ValueError(f"invalid image reference {quoted(value)}: {exc}") from None
    return value


def check_capability(value: str) -> str:
    """A capability name as Docker and Compose take it (`NET_ADMIN`, `CAP_NET_ADMIN`, `ALL`),
    stored in the one spelling the plan and the runtime use."""
    name = capabilities.normalise(value)
    if name != "ALL" and name not in capabilities.ALL:
        raise ValueError(f"unknown capability {quoted(value)}: use a name like NET_ADMIN, or ALL")
    return name


SECURITY_OPTS = ("no-new-privileges", "no-new-privileges:true", "no-new-privileges:false")


def to_security_opts(value: object) -> object:
    """Docker's `security_opt` entries that reconcile honours; `no-new-privileges:true` is
    `no-new-privileges`. Anything else (apparmor=, seccomp=, label=) is refused, not ignored."""
    if not isinstance(value, list):
        return value
    for item in value:
        if isinstance(item, str) and item not in SECURITY_OPTS:
            raise ValueError(f"unsupported security_opt {quoted(item)}: supported are "
                             f"{', '.join(SECURITY_OPTS)}")
    return [item.removesuffix(":true") if isinstance(item, str) else item for item in value]


def check_absolute_path(value: str) -> str:
    """An absolute path without '..', in the safe alphabet; normalised ('//', '/./', trailing
    '/'), so that the same directory always compares equal."""
    if not value.startswith("/"):
        raise ValueError(f"expected an absolute path (starting with '/'), got {quoted(value)}")
    unsafe = sorted({char for char in value if not _PATH_CHAR_RE.fullmatch(char)})
    if unsafe:
        shown = " ".join(repr(char) for char in unsafe)
        raise ValueError(f"path {quoted(value)} contains {shown}: use {PATH_ALPHABET} only")
    if ".." in value.split("/"):
        raise ValueError(f"path {quoted(value)} must not contain '..'")
    return posixpath.normpath(re.sub("/{2,}", "/", value))


def to_host_path(value: object) -> Path:
    """A path on the host (rootfs, volume source) as a Path; accepts a Path (round trips)."""
    text = str(value) if isinstance(value, Path) else _expect_str(value, "an absolute path")
    return Path(check_absolute_path(text))


def check_volume_name(value: str) -> str:
    if not VOLUME_NAME_PATTERN.fullmatch(value):
        raise ValueError(f"invalid volume name {quoted(value, ascii_only=True)}: {VOLUME_NAME_RULE}")
    return value


def to_volume_source(value: object) -> Path | str:
    """A bind mount's host path (absolute: a Path) or a named volume's name (a str, declared
    under the stack's `volumes:`), as Compose tells them apart: by the leading '/'."""
    if isinstance(value, Path):
        return value
    text = _expect_str(value, "an absolute path or a volume name")
    if text.startswith("/"):
        return Path(check_absolute_path(text))
    if not VOLUME_NAME_PATTERN.fullmatch(text):
        raise ValueError(f"expected an absolute path on the host or the name of a volume declared in "
                         f"volumes: ({VOLUME_NAME_RULE}), got {quoted(text, ascii_only=True)}")
    return text


VOLUME_DRIVER_KEYS = ("driver", "driver_opts", "external")
LOCAL_ONLY = "reconcile keeps volumes as local directories only (<state-dir>/volumes/STACK/NAME)"


def volume_driver_problem(key: str, value: object) -> str | None:
    """Why a named volume's `driver`, `driver_opts` or `external` cannot be honoured (None: it
    asks for what reconcile does anyway: driver local, external false, no options)."""
    if key == "driver" and value != "local":
        shown = quoted(value) if isinstance(value, str) else describe_value(value)
        return f"volume driver {shown} is not supported: {LOCAL_ONLY}"
    if key == "driver_opts" and value:
        return f"driver_opts are not supported: {LOCAL_ONLY}"
    if key == "external" and value is not False:
        return f"external volumes are not supported: {LOCAL_ONLY}; declare the volume without external"
    return None


def reject_volume_drivers(value: object) -> object:
    """A named volume is `{}` (or nothing): a driver, its options or an external volume would
    be silently ignored, so each is an error at its key; those asking for a local directory are
    dropped."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        return value  # the model names what it expects
    for key in VOLUME_DRIVER_KEYS:
        problem = volume_driver_problem(key, value[key]) if key in value else None
        if problem is not None:
            raise SubfieldError((key,), problem)
    return {key: item for key, item in value.items() if key not in VOLUME_DRIVER_KEYS}


def check_mount_target(value: str) -> str:
    target = check_absolute_path(value)
    if target == "/":
        raise ValueError("nothing can be mounted over the container's root '/'")
    return target


PROC_FILES_BINDABLE = ("/proc/cpuinfo", "/proc/diskstats", "/proc/meminfo", "/proc/stat", "/proc/swaps",
                       "/proc/uptime", "/proc/loadavg", "/proc/slabinfo", "/proc/net/dev",
                       "/proc/sys/kernel/ns_last_pid")
"""The files of /proc a volume may cover, as runc lets them be (the ones lxcfs serves)."""


def check_volume_target(value: str) -> str:
    """A bind mount's target: not /proc or anything in it but PROC_FILES_BINDABLE, as runc refuses
    them (Docker's default runtime): a bind there would hide or replace the container's own
    procfs, or the masks and read-only parts the runtime puts on it."""
    target = check_mount_target(value)
    if (target == "/proc" or target.startswith("/proc/")) and target not in PROC_FILES_BINDABLE:
        raise ValueError(f"a volume cannot be mounted at {target}: /proc is the container's own procfs "
                         f"(as runc, only these files may be covered: {', '.join(PROC_FILES_BINDABLE)})")
    return target


ADDRESS = "an IPv4 address like 10.88.1.10"
SUBNET = "an IPv4 subnet like 10.88.1.0/24"
ADDRESS6 = "an IPv6 address like fd00:88:1::10"
SUBNET6 = "an IPv6 subnet like fd00:88:1::/64"


def _ipv4_text(value: object, what: str) -> str:
    """IPv6 gets its own message: it goes in the field of its own."""
    text = _expect_str(value, what)
    if ":" in text:
        raise ValueError(f"expected {what}, got {quoted(text)}: IPv6 goes in the field of its own "
                         "(subnet6, gateway6, ip6)")
    return text


def _ipv6_text(value: object, what: str) -> str:
    text = _expect_str(value, what)
    if ":" not in text:
        raise ValueError(f"expected {what}, got {quoted(text)}: IPv4 goes in subnet, gateway and ip")
    return text


def to_ipv4_address(value: object) -> IPv4Address:
    if isinstance(value, IPv4Address):
        return value
    return _address(IPv4Address, _ipv4_text(value, ADDRESS), ADDRESS)


def to_ipv6_address(value: object) -> IPv6Address:
    """Without a zone (`%eth0`), as subnet6: a container's address and its gateway are on its
    network's bridge, and the leases and nftables know no zones (a zoned static address would be
    stored as text the next pass cannot read back)."""
    if isinstance(value, IPv6Address):
        return value
    address = _address(IPv6Address, _ipv6_text(value, ADDRESS6), ADDRESS6)
    unzoned(address, ADDRESS6, value)
    return address


def unzoned(address: IPv6Address, what: str, value: object) -> None:
    if address.scope_id is not None:
        raise ValueError(f"expected {what}, got {quoted(str(value))}: a zone (%{address.scope_id}) has no "
                         "meaning here")


def _address(kind: Callable[[str], AddressT], text: str, what: str) -> AddressT:
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"expected {what}, got {quoted(text)}") from None


def to_bind_address(value: object) -> IPv4Address | None:
    """A host_ip to publish on: 0.0.0.0 means every address, the same as leaving it out, so
    both compare equal when looking for conflicting ports."""
    if value is None:
        return None
    if isinstance(value, str) and ":" in value:
        raise ValueError(f"IPv6 host addresses are not supported yet, got {quoted(value)}: leave host_ip "
                         "unset, and a container on a dual-stack network answers on every IPv6 address "
                         "of the host, [::1] included")
    address = to_ipv4_address(value)
    return None if address.is_unspecified else address


def to_ipv4_network(value: object) -> IPv4Network:
    """A subnet in strict CIDR form: host bits set are a mistake worth pointing at."""
    if isinstance(value, IPv4Network):
        return value
    network = _strict_network(_ipv4_text(value, SUBNET), SUBNET, MAX_PREFIX_LENGTH)
    assert isinstance(network, IPv4Network)
    return network


def to_ipv6_network(value: object) -> IPv6Network:
    """An IPv6 subnet in strict CIDR form, unique local (fd00::/8) or global unicast: a
    link-local, multicast or loopback prefix cannot be routed to containers."""
    if isinstance(value, IPv6Network):
        return value
    network = _strict_network(_ipv6_text(value, SUBNET6), SUBNET6, MAX_PREFIX_LENGTH6)
    assert isinstance(network, IPv6Network)
    unzoned(network.network_address, SUBNET6, value)
    if not any(network.subnet_of(space) for space in UNICAST6):
        raise ValueError(f"subnet {network} is not unique local (fc00::/7) or global unicast "
                         "(2000::/3): use a ULA prefix such as fd00:88:1::/64, or one of your global prefix")
    return network


def _strict_network(text: str, what: str, max_prefix: int) -> IPv4Network | IPv6Network:
    """`text` as a network without host bits, with room for a gateway and a container."""
    if "/" not in text:
        raise ValueError(f"expected {what} (with the prefix length), got {quoted(text)}")
    try:
        network = ip_network(text)
    except ValueError:
        try:
            loose = ip_network(text, strict=False)
        except ValueError:
            raise ValueError(f"expected {what}, got {quoted(text)}") from None
        raise ValueError(f"subnet {text} has host bits set: did you mean {loose}?") from None
    if network.prefixlen > max_prefix:
        raise ValueError(f"subnet {network} is too small: use a prefix of /{max_prefix} "
                         "or shorter (room for a gateway and a container)")
    return network


def to_argv(value: object) -> object:
    """A command string is split like a shell would (quotes, backslashes), never run by one."""
    if not isinstance(value, str):
        return value
    try:
        return shlex.split(value)
    except ValueError as exc:
        raise ValueError(f"cannot split the command like a shell: {str(exc).lower()}") from None


def check_program(argv: list[str]) -> list[str]:
    if argv and not argv[0]:
        raise SubfieldError((0,), "the program to run must not be empty")
    return argv


def to_attachments(value: object) -> object:
    """`networks: [front, back]` is `networks: {front: {}, back: {}}`; `front:` with no value
    is `front: {}`. Spec order is kept: it numbers the interfaces eth0, eth1, ..."""
    if isinstance(value, list):
        return {key: {} for key in reject_duplicates(value, "a network key")}
    if isinstance(value, dict):
        return {key: {} if attachment is None else attachment for key, attachment in value.items()}
    raise ValueError("expected a list of network keys or a mapping of network key to {ip: ...}, "
                     f"got {describe_value(value)}")


def to_tuple(value: object) -> object:
    """A list as a tuple: a field left out shares the one empty tuple, where an empty list each
    cost a thousand containers ~50 KB apiece (the model is strict: it takes no list for one)."""
    return tuple(value) if isinstance(value, list) else value


def reject_duplicates(items: StringsT, what: str = "a name") -> StringsT:
    seen: set[str] = set()
    for index, item in enumerate(items):
        if not isinstance(item, str):
            raise SubfieldError((index,), f"expected {what}, got {describe_value(item)}")
        if item in seen:
            raise SubfieldError((index,), f"{quoted(item)} is listed twice")
        seen.add(item)
    return items


def reject_scalar(value: object, forms: str) -> object:
    """Leave mappings (and model instances) to the model; a bare number or null in a list of
    ports or volumes is a typo worth naming the accepted forms for."""
    if value is None or isinstance(value, (bool, int, float)):
        raise ValueError(f"expected {forms}, got {describe_value(value)}")
    return value


def to_port_mapping(value: object) -> object:
    """"[IP:]HOST:CONTAINER[/proto]" as the mapping form; the model checks the ranges."""
    if not isinstance(value, str):
        return reject_scalar(value, f"{PORT_FORMS} or a mapping")
    match = _PORT_RE.fullmatch(value.strip())
    if match is None and _PORT_RANGE_RE.search(value):  # Docker's "8000-8010:8000-8010"
        raise ValueError(f"port ranges are not supported, got {quoted(value)}: publish each port on its own")
    if match is None:
        raise ValueError(f"expected {PORT_FORMS} or a mapping, got {quoted(value)}")
    fields = {key: text for key, text in match.groupdict().items() if text is not None}
    return {**fields, "host": int(fields["host"]), "container": int(fields["container"])}


def to_volume(value: object) -> object:
    """"SOURCE:TARGET[:ro|rw]" as the mapping form (paths cannot hold ':', so it splits cleanly)."""
    if not isinstance(value, str):
        return reject_scalar(value, f"{VOLUME_FORM} or a mapping")
    parts = value.split(":")
    if len(parts) not in (2, 3):
        raise ValueError(f"expected {VOLUME_FORM} or a mapping, got {quoted(value)}")
    mode = parts[2] if len(parts) == 3 else "rw"
    if mode not in ("ro", "rw"):
        raise ValueError(f"unknown volume mode {quoted(mode)} in {quoted(value)}: use ro or rw")
    return {"source": parts[0], "target": parts[1], "read_only": mode == "ro"}


def to_memory_bytes(value: object) -> int:
    return to_bounded_bytes(value, MIN_MEMORY, f"4Mi ({MIN_MEMORY} bytes)")


def to_bounded_bytes(value: object, least: int, least_text: str, why_least: str = "") -> int:
    """A size in the native units ("64Mi", "1G") or bytes, from `least` (said `least_text`,
    then `why_least`) to MAX_MEMORY."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"expected a size like '64Mi' or a number of bytes, got {describe_value(value)}")
    size = value if isinstance(value, int) else parse_bytes(value)
    if size < least:
        raise ValueError(f"must be at least {least_text}, got {_shown_size(value)}{why_least}")
    if size > MAX_MEMORY:
        raise ValueError(f"must be at most 1024Ti ({MAX_MEMORY} bytes), got {_shown_size(value)}")
    return size


def _shown_size(value: int | str) -> str:
    return quoted(value) if isinstance(value, str) else str(value)


def to_cpuset(value: object) -> str:
    """Canonical form ("0,1,2,3" -> "0-3"): what cpuset.cpus reads back, so diffs stay quiet."""
    text = _expect_str(value, "a CPU list like '0-3,5'")
    return format_cpu_list(parse_cpu_list(text))


def to_log_size(value: object) -> int:
    """Docker's max-size: "10m", "512k", "1g" (powers of 1024, as Docker reads them; "10MiB" and
    "10mb" too) or a number of bytes."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"expected a size like '10m' or a number of bytes, got {describe_value(value)}")
    if isinstance(value, int):
        size = value
    else:
        match = _LOG_SIZE_RE.fullmatch(value.strip())
        if match is None:
            raise ValueError(f"expected a size like '10m', '512k', '1g' or a number of bytes, got {quoted(value)}")
        size = int(float(match["number"]) * 1024 ** " kmg".index(match["unit"].lower() or " "))
    if not 1 <= size <= MAX_LOG_SIZE:
        raise ValueError(f"must be between 1 byte and 1g ({MAX_LOG_SIZE} bytes), got {_shown_size(value)}")
    return size


def to_log_file_count(value: object) -> int:
    """Docker's max-file: Compose writes it as a string ("3"); a number is taken too."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected a number of files like '3', got {describe_value(value)}")
    if not 1 <= value <= MAX_LOG_FILES:
        raise ValueError(f"must be between 1 and {MAX_LOG_FILES}, got {value}")
    return value


def reject_unknown_log_options(value: object) -> object:
    """Docker's drivers take more options (compress, labels, tag, ...): one that reconcile would
    silently ignore is an error at that option."""
    for key in value if isinstance(value, dict) else ():
        if key not in LOG_OPTIONS:
            raise SubfieldError((key,), f"unknown log option {quoted(str(key))}: reconcile supports "
                                        + " and ".join(LOG_OPTIONS))
    return value
