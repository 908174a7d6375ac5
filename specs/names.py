"""Every kernel-visible name and ownership mark reconcile creates, in one place.

A fresh process must be able to tell, from the kernel alone, which objects are ours and which
spec entry they belong to: the link alias (IFLA_IFALIAS survives a move between namespaces),
the netns name, the cgroup path. Everything here is deterministic and parseable back.

DO NOT RENAME any constant or format in this module: hosts in the field carry these marks, and
a rename would orphan their objects (reconcile would no longer recognise them as its own).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

IFNAMSIZ = 15
"""Longest interface name the kernel accepts (IFNAMSIZ - 1 bytes)."""

ALIAS_PREFIX = "reconcile/v1"
"""Every link we create carries an alias `reconcile/v1 <kind> <stack>/<name>[/<network>]`."""

LINK_GROUP = 0x7263
"""IFLA_GROUP of every link we create ("rc"): lets `ip link del group` sweep them in bulk."""

BRIDGE_PREFIX = "rc-"
VETH_PREFIX = "rcv"
NETNS_PREFIX = "rc-"

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,15}$")
"""Stack names: safe in netns names, paths, rule comments, aliases."""

KEY_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
"""Network and container keys: a DNS label (a container's key is its default hostname, and the
name peers resolve it by), safe where a stack name is. The longest rule comment, a published
port's (`reconcile/v1 port <stack>/<container>/<IPv4>:<port>/<protocol>`), is then 124 bytes,
within nft's 128; interface names never hold a key (they are hashed: veth_host_name,
default_bridge_name)."""

IFNAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")
"""A user-chosen interface name: no '/', whitespace, ':' or shell metacharacters."""

VOLUME_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
"""A named volume, as Compose spells them (db_data, pg.data): its directory's name under
<state-dir>/volumes/<stack>/ (no '/', never '.' or '..')."""

_ALIAS_RE = re.compile(
    rf"^{re.escape(ALIAS_PREFIX)} (?P<kind>network|endpoint) "
    r"(?P<stack>[a-z][a-z0-9-]*)/(?P<name>[a-z][a-z0-9-]*)(?:/(?P<network>[a-z][a-z0-9-]*))?$"
)


def native_key(name: object) -> str:
    """The native key of a Compose network or service name: lower case, '_' and '.' as '-'
    (`app_net` is `app-net`), as keys name kernel objects (bridges, link marks, netns names,
    cgroups) that take neither. A service keeps its own name as an alias
    (specs.compose_service.ServiceMapper)."""
    return str(name).lower().replace("_", "-").replace(".", "-")


@dataclass(frozen=True)
class Owner:
    """The spec entry an object belongs to, as read back from its kernel mark."""

    kind: str  # "network" or "endpoint"
    stack: str
    name: str  # network key, or container key for an endpoint
    network: str | None = None  # for an endpoint: the network it attaches to

    @property
    def key(self) -> str:
        parts = [self.stack, self.name] + ([self.network] if self.network else [])
        return "/".join(parts)


def default_bridge_name(stack: str, network: str) -> str:
    """`rc-<stack>-<network>`, or, when that exceeds IFNAMSIZ, its first letters and a hash of
    both names (`rc-websho-1a2b3`), as CNI shortens names: deterministic, so the bridge keeps
    its name across runs; names that fit are unchanged."""
    readable = f"{BRIDGE_PREFIX}{stack}-{network}"
    if len(readable.encode()) <= IFNAMSIZ:
        return readable
    digest = hashlib.sha256(f"{stack}/{network}".encode()).hexdigest()[:5]
    return f"{readable[:IFNAMSIZ - len(digest) - 1]}-{digest}"


def network_alias(stack: str, network: str) -> str:
    return f"{ALIAS_PREFIX} network {stack}/{network}"


def endpoint_alias(stack: str, container: str, network: str) -> str:
    return f"{ALIAS_PREFIX} endpoint {stack}/{container}/{network}"


def parse_alias(alias: str | None) -> Owner | None:
    """The owner encoded in a link alias, or None for a link that is not ours."""
    if not alias:
        return None
    match = _ALIAS_RE.fullmatch(alias)
    if not match:
        return None
    kind = match["kind"]
    network = match["network"]
    if (kind == "endpoint") != (network is not None):
        return None
    return Owner(kind=kind, stack=match["stack"], name=match["name"], network=network)


def veth_host_name(stack: str, container: str, network: str) -> str:
    """Host end of an endpoint: a short hash, since stack+container+network can't fit 15 bytes."""
    digest = hashlib.sha256(f"{stack}/{container}/{network}".encode()).hexdigest()
    return f"{VETH_PREFIX}{digest[:10]}"


def container_ifname(index: int) -> str:
    """Container end of the index-th endpoint, in spec order: eth0, eth1, ..."""
    return f"eth{index}"


def netns_name(stack: str, container: str) -> str:
    """The sandbox namespace at /run/netns/<name>, so `ip netns exec` works for users.
    '_' cannot occur in keys, so the name parses back unambiguously."""
    return f"{NETNS_PREFIX}{stack}_{container}"


def _parse_pair(text: str, prefix: str, separator: str) -> tuple[str, str] | None:
    """(stack, container) from `<prefix><stack><separator><container>`, or None."""
    if not text.startswith(prefix):
        return None
    stack, sep, container = text[len(prefix):].partition(separator)
    if not sep or not NAME_PATTERN.fullmatch(stack) or not KEY_PATTERN.fullmatch(container):
        return None
    return stack, container


def parse_netns_name(name: str) -> tuple[str, str] | None:
    """(stack, container) of one of our sandbox namespaces, or None for a foreign one."""
    return _parse_pair(name, NETNS_PREFIX, "_")


def cgroup_relpath(parent: str, stack: str, container: str) -> str:
    """Containers live under <cgroup-parent>/<stack>/<container> in every hierarchy."""
    return f"{parent.strip('/')}/{stack}/{container}"


RUNTIME_CGROUP = "ctr"
"""The OCI runtime's cgroup of a container, a child of ours (<...>/<container>/ctr): crun's v1
manager resets the memory limit of the cgroup it is given, and our limits on the parent hold
for the whole subtree, exec included."""


MONITOR_SUFFIX = "_monitor"
"""DO NOT RENAME: `<container>_monitor`, beside a container's cgroup, held its runtime's own
processes (before one monitor per stack): still removed with the container, on hosts in the
field. '_' cannot occur in a key, so it is never taken for a container's cgroup."""


def monitor_relpath(relpath: str) -> str:
    return relpath + MONITOR_SUFFIX


STACK_MONITOR = "_monitor"
"""DO NOT RENAME: <cgroup-parent>/<stack>/_monitor holds the runtime's own processes (waiting
shells, crun, log writers) of every container of the stack (MONITOR_SUFFIX's cgroups held
one container's each before). '_' cannot occur in a key, so it is never taken for a
container's cgroup."""


CGROUP_PARENT_MARK = ("trusted.reconcile", b"v1 parent")
"""DO NOT CHANGE: the extended attribute (name, value) on a cgroup parent reconcile made, in each
hierarchy: read back by a process that has lost the state store, which only then knows that it
may remove the parent once it is empty (a parent it did not make is never removed)."""


def stack_monitor_relpath(parent: str, stack: str) -> str:
    return cgroup_relpath(parent, stack, STACK_MONITOR)


def runtime_cgroup_path(relpath: str) -> str:
    """`linux.cgroupsPath` for the runtime: absolute from each hierarchy's root."""
    return f"/{relpath}/{RUNTIME_CGROUP}"


OVERLAY_SOURCE_PREFIX = "reconcile-v1:"
"""The source of every container root we mount (overlayfs shows it in /proc/*/mountinfo):
`reconcile-v1:<stack>/<container>[@<image digest>]`. No spaces: mountinfo would escape them."""
DIGEST_PATTERN = re.compile(r"sha256:[0-9a-f]{64}")


def runtime_id(stack: str, container: str) -> str:
    """The container's id in the OCI runtime (`crun list`): the same as its sandbox's name."""
    return netns_name(stack, container)


def parse_runtime_id(container_id: str) -> tuple[str, str] | None:
    return parse_netns_name(container_id)


def overlay_source(stack: str, container: str, image_digest: str | None = None) -> str:
    """The mark of a container root; a root made of an image's layers carries the image's
    digest too, so the image a container runs is read back from the kernel."""
    return f"{OVERLAY_SOURCE_PREFIX}{stack}/{container}" + (f"@{image_digest}" if image_digest else "")


def parse_overlay_source(source: str) -> tuple[tuple[str, str], str | None] | None:
    """((stack, container), image digest or None) of one of our container roots, or None for a
    foreign mount."""
    pair, _, digest = source.partition("@")
    owner = _parse_pair(pair, OVERLAY_SOURCE_PREFIX, "/")
    if owner is None or (digest and not DIGEST_PATTERN.fullmatch(digest)):
        return None
    return owner, digest or None


# Netfilter: our chains in the shared nat and filter tables (iptables backend), or in a table of
# our own (nftables backend), and the comment every rule of ours carries.
CHAIN_DNAT = "RECONCILE-DNAT"
CHAIN_SNAT = "RECONCILE-SNAT"
CHAIN_INPUT = "RECONCILE-INPUT"
CHAIN_FORWARD = "RECONCILE-FORWARD"
CHAIN_INTERNAL = "RECONCILE-INTERNAL"
CHAIN_ISOLATE_FROM = "RECONCILE-ISOLATE-FROM"
CHAIN_ISOLATE_TO = "RECONCILE-ISOLATE-TO"
CHAIN_ACCEPT = "RECONCILE-ACCEPT"

NAT = "nat"
FILTER = "filter"

OUR_CHAINS: tuple[tuple[str, str], ...] = (
    (NAT, CHAIN_DNAT), (NAT, CHAIN_SNAT),
    (FILTER, CHAIN_INPUT), (FILTER, CHAIN_FORWARD), (FILTER, CHAIN_INTERNAL),
    (FILTER, CHAIN_ISOLATE_FROM), (FILTER, CHAIN_ISOLATE_TO), (FILTER, CHAIN_ACCEPT),
)
"""(table, chain) of every chain we own, in creation order."""

NFT_TABLE = "reconcile"
"""The nftables backend's own table (family inet); its base chains are named after the
iptables hooks they stand for (controllers.firewall_rules.BASE_CHAINS)."""

_RULE_COMMENT_RE = re.compile(rf"^{re.escape(ALIAS_PREFIX)} (?P<kind>chains|network|port)(?: (?P<key>\S+))?$")


def rule_comment(kind: str, key: str) -> str:
    """`reconcile/v1 <kind>[ <key>]`: the owner of a rule (kind `chains` for the skeleton,
    `network` with `<stack>/<network>`, `port` with a published port's key)."""
    return f"{ALIAS_PREFIX} {kind}" + (f" {key}" if key else "")


def parse_rule_comment(comment: str) -> tuple[str, str] | None:
    """(kind, key) of a rule comment of ours ("" for no key), or None for a foreign comment;
    the key's shape is checked by the kind's owner (controllers.firewall_rules)."""
    match = _RULE_COMMENT_RE.match(comment)
    return (match["kind"], match["key"] or "") if match else None


USERNS_AUTO_IDS = 65536
"""DO NOT CHANGE: how many uids and gids a `userns: auto` container's user namespace maps (0
to 65535 inside), as Podman's --userns=auto; its layer's mark (kernel.idmap) is made for it."""
