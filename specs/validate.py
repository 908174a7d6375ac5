"""Checks across fields, containers and stacks, and against what the host already holds.

Each returns Issues (stack name, field path, message); the loader or the engine locates them
in the files (specs.loader.locate_issues). Pure: the host check is handed what the kernel
holds, nothing here reads it. Stacks are assumed to have distinct names (the loader reports a
repeated name first and checks only the first file of each name).
"""

from __future__ import annotations

import difflib
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from specs.errors import Issue, Loc, format_loc, quoted
from specs.fields import is_hostname
from specs.hosts import HOST_GATEWAY, alias_clashes
from specs.model import Attachment, Container, Dependency, Network, PortMapping, Stack
from specs.names import USERNS_AUTO_IDS
from specs.sysctls import DISABLE_IPV6
from specs.units import format_cpu_list, parse_cpu_list

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network


@dataclass(frozen=True)
class HostNet:
    """An address or a route on a host interface that reconcile does not own."""

    ifname: str
    network: IPv4Network | IPv6Network
    source: str  # "address" or "route"


@dataclass(frozen=True)
class AppliedNet:
    """A network of reconcile as the kernel holds it (read back from its marks)."""

    stack: str
    network: str
    subnet: IPv4Network
    bridge: str
    subnet6: IPv6Network | None = None  # a dual-stack network's, read from its IPv6 gateway address


@dataclass(frozen=True)
class Family:
    """The fields of one IP version, on a network and on an attachment: IPv4 and IPv6 get the
    same checks, and only networks of one version are ever compared."""

    subnet: str
    gateway: str
    ip: str
    reserved: int
    """Per subnet: the network address and the gateway, and IPv4's broadcast address."""
    undeclared: str
    """Why a static address on a network without this version's subnet is refused ({key})."""

    def subnet_of(self, network: Network | AppliedNet) -> IPNetwork | None:
        return getattr(network, self.subnet)

    def gateway_of(self, network: Network) -> IPAddress | None:
        return getattr(network, self.gateway)

    def ip_of(self, attachment: Attachment) -> IPAddress | None:
        return getattr(attachment, self.ip)


IPV4 = Family("subnet", "gateway", "ip", 3,
              "a static address needs a declared subnet: set networks.{key}.subnet (a subnet from "
              "the pool is not known before apply)")
IPV6 = Family("subnet6", "gateway6", "ip6", 2,
              "a static IPv6 address needs a dual-stack network: set networks.{key}.subnet6")
FAMILIES = (IPV4, IPV6)


def check_stacks(stacks: Sequence[Stack]) -> list[Issue]:
    """Every problem within each stack and between the stacks (subnets, bridges, host ports)."""
    issues: list[Issue] = []
    for stack in stacks:
        issues += _check_networks(stack)
        for key, container in stack.containers.items():
            issues += _check_container(stack, key, container)
        issues += _check_static_addresses(stack)
        issues += _check_aliases(stack)
        issues += _check_dependency_cycles(stack)
    for family in FAMILIES:
        issues += _check_subnet_overlaps(stacks, family)
    issues += _check_bridge_names(stacks)
    issues += _check_host_ports(stacks)
    return issues


def check_host(stacks: Sequence[Stack], host_nets: Sequence[HostNet],
               applied: Sequence[AppliedNet]) -> list[Issue]:
    """Conflicts of the networks of `stacks` with foreign addresses and routes on the host
    (default routes aside: every subnet "overlaps" 0.0.0.0/0 and ::/0) and with networks of
    other stacks already applied, each subnet against those of its own IP version. `applied`
    entries of `stacks` themselves are ours to change. Subnets from the pool are filled in
    already (reconcile.engine.subnets)."""
    in_scope = {stack.name for stack in stacks}
    others = [net for net in applied if net.stack not in in_scope]
    issues: list[Issue] = []
    for stack in stacks:
        for key, network in stack.networks.items():
            issues += _host_conflicts(stack.name, key, network, host_nets)
            issues += _applied_conflicts(stack.name, key, network, others)
    return issues


def check_host_cpus(stacks: Sequence[Stack], host_cpus: Collection[int],
                    containers_of: Callable[[Stack], Iterable[str]] | None = None) -> list[Issue]:
    """Limits the host cannot meet, checked before anything changes: a cpuset naming CPUs the
    host does not have (the kernel would refuse it with ERANGE, mid-apply), and a CPU quota above
    the CPUs the container may run on (the kernel accepts it, but it can never be used). No
    check when the host's CPUs are not known (empty). `containers_of`: the keys to check of
    each stack (a focused pass's), all by default."""
    if not host_cpus:
        return []
    usable = set(host_cpus)
    return [issue for stack in stacks for key in (stack.containers if containers_of is None else containers_of(stack))
            for issue in _cpu_issues(stack.name, ("containers", key, "resources"), stack.containers[key], usable)]


def _count(cpus: Collection[int]) -> str:
    return f"{len(cpus)} CPU{'' if len(cpus) == 1 else 's'}"


def _cpu_issues(stack: str, loc: tuple[str, ...], container: Container, host_cpus: set[int]) -> Iterator[Issue]:
    cpuset, quota = container.resources.cpuset, container.resources.cpus
    usable = host_cpus if cpuset is None else set(parse_cpu_list(cpuset))
    if not usable <= host_cpus:
        plural = "s" if len(host_cpus) > 1 else ""
        yield Issue(stack, loc + ("cpuset",), f"cpuset '{cpuset}': this host has CPU{plural} "
                                              f"{format_cpu_list(host_cpus)}")
    elif quota is not None and quota > len(usable):
        limit = f"this host has {_count(host_cpus)} ({format_cpu_list(host_cpus)})" if cpuset is None \
            else f"the cpuset '{cpuset}' has {_count(usable)}"
        yield Issue(stack, loc + ("cpus",), f"cpus {quota:g}: {limit}")


def _suggestion(name: str, known: Collection[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {quoted(close[0])}?)" if close else ""


def _elsewhere(stack: str, owner: str, loc: Loc) -> str:
    """The field `loc` of stack `owner` as seen from `stack`: another stack's fields carry its
    name. An Issue naming it carries it as `other` too."""
    path = format_loc(loc)
    return path if owner == stack else f"{path} of stack '{owner}'"


def _placement_problem(address: IPAddress, subnet: IPNetwork) -> str | None:
    """IPv6 has no broadcast address: only the network address (the subnet-router anycast
    address) is not a host's."""
    if address not in subnet:
        return f"{address} is outside subnet {subnet}"
    if address == subnet.network_address:
        return f"{address} is the network address of {subnet}"
    if subnet.version == 4 and address == subnet.broadcast_address:
        return f"{address} is the broadcast address of {subnet}"
    return None


def _check_networks(stack: Stack) -> Iterator[Issue]:
    attached = Counter(key for container in stack.containers.values() for key in container.networks)
    for key, network in stack.networks.items():
        loc = ("networks", key)
        if network.internal and network.ipv6_nat:
            yield Issue(stack.name, loc + ("ipv6_nat",), "ipv6_nat: true on an internal network: nothing "
                                                         "leaves an internal network; remove ipv6_nat")
        for family in FAMILIES:
            yield from _check_subnet(stack.name, key, network, family, attached[key])


def _check_subnet(stack: str, key: str, network: Network, family: Family, attached: int) -> Iterator[Issue]:
    """A subnet left out is not checked: IPv4's comes from the pool at apply time (a /24 by
    default, room enough), and without subnet6 the network is IPv4 only."""
    subnet, gateway = family.subnet_of(network), family.gateway_of(network)
    if subnet is None or gateway is None:
        return
    loc = ("networks", key)
    problem = _placement_problem(gateway, subnet)
    if problem:
        yield Issue(stack, loc + (family.gateway,), f"{family.gateway} {problem}")
    room = subnet.num_addresses - family.reserved
    if attached > room:
        yield Issue(stack, loc + (family.subnet,),
                    f"{family.subnet} {subnet} has room for {room} container "
                    f"address{'es' if room != 1 else ''}, but {attached} containers "
                    f"attach to network '{key}'")


def _check_container(stack: Stack, key: str, container: Container) -> Iterator[Issue]:
    loc = ("containers", key)
    if not is_hostname(container.hostname):  # only the default can be: explicit ones are checked
        yield Issue(stack.name, loc + ("hostname",),
                    f"the hostname defaults to the container key '{key}', which is not a valid "
                    f"RFC 1123 hostname: set containers.{key}.hostname")
    yield from _check_attachments(stack, key, container)
    yield from _check_default_route(stack, key, container)
    yield from _check_published(stack, key, container)
    yield from _check_host_gateway(stack, key, container)
    yield from _check_volumes(stack, key, container)
    yield from _check_tmpfs_owners(stack, key, container)
    yield from _check_dependencies(stack, key, container)
    yield from _check_sysctls(stack, key, container)
    if container.image is not None and container.rootfs is not None:
        yield Issue(stack.name, loc + ("rootfs",), "image and rootfs are exclusive: the image's layers "
                                                   "are the container's root")
    if container.image is None and not container.command:
        if "command" in container.model_fields_set:
            yield Issue(stack.name, loc + ("command",), "must not be empty")
        else:
            yield Issue(stack.name, loc, "missing required field 'command' (the program to run), or an image "
                                         "whose command is run")
    if container.privileged and container.userns == "auto":
        yield Issue(stack.name, loc + ("userns",),
                    "userns: auto cannot be combined with privileged: true (a privileged container holds "
                    "the host's capabilities, which a private user namespace takes away)")


def _check_volumes(stack: Stack, key: str, container: Container) -> Iterator[Issue]:
    """One mount per target, volumes and tmpfs alike (Docker: "Duplicate mount point")."""
    targets: dict[str, str] = {}
    mounts = [("volumes", index, volume.target) for index, volume in enumerate(container.volumes)]
    mounts += [("tmpfs", index, tmpfs.target) for index, tmpfs in enumerate(container.tmpfs)]
    for field, index, target in mounts:
        first = targets.setdefault(target, f"{field}[{index}]")
        if first != f"{field}[{index}]":
            yield Issue(stack.name, ("containers", key, field, index), f"target {target} is already mounted by {first}")
    for index, volume in enumerate(container.volumes):
        name = volume.volume_name
        if name is not None and name not in stack.volumes:
            yield Issue(stack.name, ("containers", key, "volumes", index, "source"),
                        f"volume {quoted(name)} is not declared in the top-level volumes"
                        + _suggestion(name, stack.volumes))


def _dependency_entries(container: Container) -> Iterator[tuple[int | str, str, Dependency]]:
    """Each depends_on entry with the path part that finds it in the file: its index in the
    list form, its key in the mapping form."""
    for index, (name, dependency) in enumerate(container.dependencies.items()):
        yield (name if isinstance(container.depends_on, dict) else index), name, dependency


def _check_dependencies(stack: Stack, key: str, container: Container) -> Iterator[Issue]:
    for part, name, dependency in _dependency_entries(container):
        loc = ("containers", key, "depends_on", part)
        target = stack.containers.get(name)
        if name == key:
            yield Issue(stack.name, loc, "a container cannot depend on itself")
        elif target is None and dependency.required:
            yield Issue(stack.name, loc, f"container {quoted(name)} is not defined in this stack"
                        + _suggestion(name, stack.containers))
    yield from health_issues(stack, key, container, image_may_have_one)


def image_may_have_one(container: Container) -> bool:
    """Whether its healthcheck is unknown before its image is pinned: none of its own, an image
    that may have a HEALTHCHECK (reconcile.engine.pinning checks again once it knows)."""
    return container.image is not None and container.healthcheck is None


def health_issues(stack: Stack, key: str, container: Container,
                  unknown: Callable[[Container], bool]) -> Iterator[Issue]:
    """What needs a healthcheck on a container that has none: a service_healthy dependency on
    it, its own restart_on_unhealthy (`unknown`: containers not to judge yet)."""
    for part, name, dependency in _dependency_entries(container):
        target = stack.containers.get(name)
        if target is not None and dependency.condition == "service_healthy" and not target.probed \
                and not unknown(target):
            yield Issue(stack.name, ("containers", key, "depends_on", part, "condition"),
                        f"service_healthy needs a healthcheck on container {quoted(name)}, and it has none"
                        + (" (nor has its image)" if target.image is not None else ""))
    if container.restart_on_unhealthy and not container.probed and not unknown(container):
        yield Issue(stack.name, ("containers", key, "restart_on_unhealthy"),
                    "restart_on_unhealthy needs a healthcheck (with a test)"
                    + (", and its image has none" if container.image is not None else ""))


def _check_sysctls(stack: Stack, key: str, container: Container) -> Iterator[Issue]:
    """A dual-stack network gives the container IPv6 (the sandbox controller keeps it on): a
    sysctl turning it off would be undone on every pass."""
    dual = [name for name in container.networks if (network := stack.networks.get(name)) and network.subnet6]
    for name, value in container.sysctls.items():
        if dual and DISABLE_IPV6.fullmatch(name) and value.strip() != "0":
            yield Issue(stack.name, ("containers", key, "sysctls", name),
                        f"turns IPv6 off, which the dual-stack network {quoted(dual[0])} gives this container: "
                        "leave the sysctl out, or attach the container to IPv4-only networks")


def _check_attachments(stack: Stack, key: str, container: Container) -> Iterator[Issue]:
    for network_key, attachment in container.networks.items():
        loc = ("containers", key, "networks", network_key)
        network = stack.networks.get(network_key)
        if network is None:
            yield Issue(stack.name, loc, f"network {quoted(network_key)} is not defined in this stack"
                        + _suggestion(network_key, stack.networks))
            continue
        for family in FAMILIES:
            problem = _static_address_problem(network_key, network, attachment, family)
            if problem:
                yield Issue(stack.name, loc + (family.ip,), problem)


def _static_address_problem(key: str, network: Network, attachment: Attachment, family: Family) -> str | None:
    address, subnet = family.ip_of(attachment), family.subnet_of(network)
    if address is None:
        return None
    if subnet is None:
        return family.undeclared.format(key=key)
    problem = _placement_problem(address, subnet)
    if problem is None and address == family.gateway_of(network):
        problem = f"{address} is the gateway of network '{key}'"
    return f"address {problem}" if problem else None


def _check_default_route(stack: Stack, key: str, container: Container) -> Iterator[Issue]:
    route = container.default_route
    if route is None:
        return
    loc = ("containers", key, "default_route")
    if route not in container.networks:
        listed = ", ".join(map(quoted, container.networks)) or "none"
        yield Issue(stack.name, loc, f"default_route {quoted(route)} is not one of this container's "
                                     f"networks ({listed})")
    elif route in stack.networks and stack.networks[route].internal:
        yield Issue(stack.name, loc, f"default_route '{route}' is an internal network: "
                                     "internal networks have no route out")


def _check_published(stack: Stack, key: str, container: Container) -> Iterator[Issue]:
    """A published port is DNAT to the container's address on its default route network, and
    replies leave through that route: internal networks have none."""
    if not container.ports:
        return
    loc = ("containers", key, "ports")
    joined = [name for name in container.networks if name in stack.networks]
    if not any(not stack.networks[name].internal for name in joined):
        where = f"only on internal networks ({', '.join(joined)})" if joined else "on no network"
        yield Issue(stack.name, loc, f"published ports need a non-internal network, and this container is {where}")
    elif container.default_route is None:
        yield Issue(stack.name, loc, "published ports need a default route, and default_route is null")


def _check_host_gateway(stack: Stack, key: str, container: Container) -> Iterator[Issue]:
    """host-gateway is the gateway of the container's default route: without one, there is no
    address that reaches the host from it (an internal network's gateway does not: no route out)."""
    for index, entry in enumerate(container.extra_hosts):
        if entry.ip == HOST_GATEWAY and container.default_route is None:
            yield Issue(stack.name, ("containers", key, "extra_hosts", index, "ip"),
                        f"{HOST_GATEWAY} is the gateway of the container's default route, and it has none "
                        "(default_route is null, or all its networks are internal): give the host's address")


def _check_tmpfs_owners(stack: Stack, key: str, container: Container) -> Iterator[Issue]:
    """In a `userns: auto` container only its own ids exist: a tmpfs owned by another would
    fail the start (the kernel maps no such id), after a recreate stopped the old process."""
    if container.userns != "auto":
        return
    for index, tmpfs in enumerate(container.tmpfs):
        for field in ("uid", "gid"):
            owner = getattr(tmpfs, field)
            if owner is not None and owner >= USERNS_AUTO_IDS:
                yield Issue(stack.name, ("containers", key, "tmpfs", index, field),
                            f"{field} {owner} is outside the container's ids: userns: auto maps 0 to "
                            f"{USERNS_AUTO_IDS - 1}")


def _check_aliases(stack: Stack) -> Iterator[Issue]:
    """An alias names one container (specs.hosts.alias_clashes): an /etc/hosts name resolves to
    its first line only, where Docker's DNS would answer with every container holding it, in
    turn. (A Compose file's are dropped with a warning instead: specs.compose_map.)"""
    members = [(key, c.hostname, {n: a.aliases for n, a in c.networks.items()}) for key, c in stack.containers.items()]
    for clash in alias_clashes(members):
        yield Issue(stack.name, ("containers", clash.container, "networks", clash.network, "aliases", clash.index),
                    f"alias {quoted(clash.alias)} on network {quoted(clash.network)} already names container "
                    f"{quoted(clash.owner)}: a name resolves to one container")


def _check_static_addresses(stack: Stack) -> Iterator[Issue]:
    holders: dict[tuple[str, IPAddress], str] = {}
    for key, container in stack.containers.items():
        for network_key, attachment in container.networks.items():
            for family in FAMILIES:
                address = family.ip_of(attachment)
                if address is None:
                    continue
                holder = holders.setdefault((network_key, address), key)
                if holder != key:
                    yield Issue(stack.name, ("containers", key, "networks", network_key, family.ip),
                                f"address {address} on network '{network_key}' is already "
                                f"taken by container '{holder}'")


def _check_dependency_cycles(stack: Stack) -> Iterator[Issue]:
    """Each cycle once, at the depends_on entry that closes it, named in spec order. Depth
    first without recursion: a long chain of containers must not exhaust the Python stack."""
    edges = {key: [(part, dependency) for part, dependency, _ in _dependency_entries(container)
                   if dependency in stack.containers and dependency != key]
             for key, container in stack.containers.items()}
    finished: set[str] = set()
    for root in stack.containers:
        if root in finished:
            continue
        path: dict[str, int] = {root: 0}  # container -> depth, in path order
        pending = [iter(edges[root])]
        while pending:
            key = next(reversed(path))
            step = next(pending[-1], None)
            if step is None:
                finished.add(key)
                del path[key]
                pending.pop()
                continue
            index, dependency = step
            if dependency in path:
                cycle = list(path)[path[dependency]:] + [dependency]
                yield Issue(stack.name, ("containers", key, "depends_on", index),
                            "dependency cycle: " + " -> ".join(cycle))
            elif dependency not in finished:
                path[dependency] = len(path)
                pending.append(iter(edges[dependency]))


@dataclass(frozen=True)
class _Placed:
    order: int
    stack: str
    key: str
    subnet: IPNetwork


def _check_subnet_overlaps(stacks: Sequence[Stack], family: Family) -> Iterator[Issue]:
    """Each subnet of `family` that overlaps one listed before it (in this stack or an earlier
    one). Two CIDR blocks overlap only when one contains the other, so a sweep in address order
    with a stack of enclosing blocks finds them without comparing every pair."""
    networks = [(stack.name, key, subnet) for stack in stacks for key, network in stack.networks.items()
                if (subnet := family.subnet_of(network)) is not None]
    placed = [_Placed(order, *network) for order, network in enumerate(networks)]
    enclosing: list[_Placed] = []  # nested blocks, outermost first: at most 31 (IPv6: 126) deep
    clashes: dict[int, _Placed] = {}  # order of a later network -> first one it overlaps
    for entry in sorted(placed, key=lambda p: (int(p.subnet.network_address), p.subnet.prefixlen, p.order)):
        while enclosing and int(enclosing[-1].subnet.broadcast_address) < int(entry.subnet.network_address):
            enclosing.pop()
        for block in enclosing:
            earlier, later = sorted((block, entry), key=lambda p: p.order)
            if later.order not in clashes or earlier.order < clashes[later.order].order:
                clashes[later.order] = earlier
        if not enclosing or enclosing[-1].subnet != entry.subnet:  # a repeat adds no depth
            enclosing.append(entry)
    for entry in placed:
        other = clashes.get(entry.order)
        if other is not None:
            where = _elsewhere(entry.stack, other.stack, ("networks", other.key))
            yield Issue(entry.stack, ("networks", entry.key, family.subnet),
                        f"{family.subnet} {entry.subnet} overlaps {where} ({other.subnet})",
                        (other.stack, ("networks", other.key)))


def _check_bridge_names(stacks: Sequence[Stack]) -> Iterator[Issue]:
    owners: dict[str, tuple[str, str]] = {}
    for stack in stacks:
        for key, network in stack.networks.items():
            owner, other_key = owners.setdefault(network.bridge, (stack.name, key))
            if (owner, other_key) != (stack.name, key):
                yield Issue(stack.name, ("networks", key, "bridge"),
                            f"bridge name '{network.bridge}' is already used by "
                            f"{_elsewhere(stack.name, owner, ('networks', other_key))}: "
                            f"set networks.{key}.bridge to another name", (owner, ("networks", other_key)))


def _binding(port: PortMapping) -> str:
    return f"{port.host_ip or '0.0.0.0'}:{port.host}/{port.protocol}"


def _check_host_ports(stacks: Sequence[Stack]) -> Iterator[Issue]:
    """One host port and protocol can be published once per host address; no host_ip means
    every address, which includes each specific one."""
    published: dict[tuple[int, str], list[tuple[str, Loc, PortMapping]]] = defaultdict(list)
    for stack in stacks:
        for key, container in stack.containers.items():
            for index, port in enumerate(container.ports):
                same_port = published[(port.host, port.protocol)]
                clash = next(((owner, where, other) for owner, where, other in same_port
                              if None in (other.host_ip, port.host_ip) or other.host_ip == port.host_ip),
                             None)
                if clash is not None:
                    owner, where, other = clash
                    yield Issue(stack.name, ("containers", key, "ports", index),
                                f"host port {_binding(port)} conflicts with {_binding(other)} "
                                f"of {_elsewhere(stack.name, owner, where)}", (owner, where))
                same_port.append((stack.name, ("containers", key, "ports", index), port))


def _host_conflicts(stack: str, key: str, network: Network, host_nets: Sequence[HostNet]) -> Iterator[Issue]:
    reported: set[tuple[str, IPNetwork]] = set()
    for family in FAMILIES:
        subnet = family.subnet_of(network)
        for host_net in host_nets:
            if not _overlap(subnet, host_net.network) or host_net.network.prefixlen == 0:
                continue
            if (host_net.ifname, host_net.network) in reported:
                continue  # an address and the prefix route the kernel adds for it
            reported.add((host_net.ifname, host_net.network))
            yield Issue(stack, ("networks", key, family.subnet),
                        f"{family.subnet} {subnet} overlaps {host_net.network} on interface "
                        f"{host_net.ifname} ({host_net.source})")


def _overlap(ours: IPNetwork | None, other: IPNetwork | None) -> bool:
    """Only subnets of one IP version can overlap: an IPv4 subnet and an IPv6 route never do."""
    return ours is not None and other is not None and ours.version == other.version and ours.overlaps(other)


def _applied_conflicts(stack: str, key: str, network: Network, applied: Sequence[AppliedNet]) -> Iterator[Issue]:
    for other in applied:
        whose = f"network '{other.network}' of stack '{other.stack}', applied on this host"
        for family in FAMILIES:
            subnet, applied_subnet = family.subnet_of(network), family.subnet_of(other)
            if _overlap(subnet, applied_subnet):
                yield Issue(stack, ("networks", key, family.subnet),
                            f"{family.subnet} {subnet} overlaps {applied_subnet} of {whose}")
        if other.bridge == network.bridge:
            yield Issue(stack, ("networks", key, "bridge"),
                        f"bridge name '{network.bridge}' is used by {whose}: "
                        f"set networks.{key}.bridge to another name")
