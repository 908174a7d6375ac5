"""Sandboxes and endpoints: one network namespace per container, one veth pair per
(container, network).

The namespace is /run/netns/<names.netns_name>; its `lo` is up and its default route goes
through the `default_route` network's gateway (and its IPv6 one through gateway6 when that
network is dual-stack). Each endpoint's host end sits on the network's bridge (MTU, hairpin
on), its container end is eth0, eth1, ... in spec order, with the addresses IPAM chose (an IPv6
one too on a dual-stack network) and the MAC derived from the IPv4 one (network.mac_of), so
peers reach a pair made anew at once. Both ends carry the endpoint alias, read back on every
pass. All of it is repaired in place: the container process keeps running through any repair
here.

The container end of an IPv4-only network has IPv6 disabled when it is made: otherwise the
kernel gives it a link-local address and takes SLAAC addresses and a default route from any
router advertisement on the bridge (another container's), an IPv6 stack nobody declared.

The host end has IPv6 off, on every network (`host_ipv6`, read from the host dump and repaired
like the rest; a new pair's is switched off before it is up): a bridge port forwards frames and
carries no address of its own (the bridge holds gateway6), so IPv6 on it only gives the host a
link-local address and routes on each port, as LXD found too. At a thousand containers that is
thousands of entries in the host's IPv6 table, which every port's removal walks (bench/README,
"IPv6 off on the host ends").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface

from controllers.base import Desired, Diff, Focus
from controllers.change import Action, Change, FieldChange
from controllers.errors import ApplyError, ApplyErrors
from controllers.network import mac_of
from kernel import netns, sysctl
from kernel.netlink import Netlink, host_netlink
from kernel.rtnl_dump import Interface, Link, LinkDump, ipv4_of, ipv6_of
from specs import names
from specs.model import Stack

KIND_SANDBOX = "sandbox"
KIND_ENDPOINT = "endpoint"
IPV6_MIN_MTU = 1280
"""Below it a link has no IPv6 at all; raised to it, the kernel gives the link IPv6 anew."""


@dataclass(frozen=True)
class SandboxState:
    lo_up: bool
    default_route: str | None  # "via <gateway> dev <ifname>"
    default_route6: str | None  # the same for IPv6, through a dual-stack network's gateway6


@dataclass(frozen=True)
class EndpointState:
    """Both ends of one endpoint, in the spec's shape."""

    host_name: str
    bridge: str | None
    host_mtu: int
    hairpin: bool
    host_ipv6: bool  # the host end's own IPv6 (off: see the module's docstring)
    host_up: bool
    ifname: str
    mtu: int
    addresses: tuple[Interface, ...]  # IPv4 first (rtnl_dump.family_order)
    up: bool

    def field_values(self) -> dict[str, object]:
        return {"host_name": self.host_name, "bridge": self.bridge, "host_mtu": self.host_mtu,
                "hairpin": self.hairpin, "host_ipv6": self.host_ipv6, "host_up": self.host_up,
                "ifname": self.ifname, "mtu": self.mtu, "addresses": [str(a) for a in self.addresses],
                "up": self.up}


_IDENTITY = ("host_name", "ifname")
"""Fields that cannot be changed in place: a different name means a new veth pair."""


@dataclass(frozen=True)
class ObservedEndpoint:
    owner: names.Owner
    host_index: int | None
    inner_index: int | None
    state: EndpointState | None  # None when one end is missing: the pair must be made anew


@dataclass(frozen=True)
class ObservedSandbox:
    stack: str
    container: str
    netns: str
    state: SandboxState
    endpoints: Mapping[str, ObservedEndpoint]  # by network key


@dataclass(frozen=True)
class SandboxObservation:
    sandboxes: Mapping[str, ObservedSandbox]  # by "stack/container"
    stray_host_ends: Mapping[str, Link]  # host ends of ours whose namespace is gone, by endpoint key
    bridges: Mapping[str, int]  # bridge name -> index, for attaching host ends

    def owned_stacks(self) -> set[str]:
        return {s.stack for s in self.sandboxes.values()} | {k.split("/")[0] for k in self.stray_host_ends}

    def live_addresses(self) -> dict[tuple[str, str, str], IPv4Address]:
        """The IPv4 address each of our endpoints holds now: IPAM keeps it (sticky, and rebuilt
        from the kernel when the store is lost)."""
        return self._live(ipv4_of)  # type: ignore[return-value]

    def live_addresses6(self) -> dict[tuple[str, str, str], IPv6Address]:
        """The IPv6 address each of our endpoints on a dual-stack network holds now (as above)."""
        return self._live(ipv6_of)  # type: ignore[return-value]

    def _live(self, family_of: Callable[[tuple[Interface, ...]], Interface | None]
              ) -> dict[tuple[str, str, str], IPv4Address | IPv6Address]:
        return {(s.stack, s.container, net): address.ip
                for s in self.sandboxes.values() for net, ep in s.endpoints.items()
                if ep.state is not None and (address := family_of(ep.state.addresses)) is not None}


def _endpoint_state(host: Link, inner: Link, inner_addresses: tuple[Interface, ...],
                    by_index: Mapping[int, Link]) -> EndpointState:
    master = by_index.get(host.master) if host.master else None
    return EndpointState(
        host_name=host.name, bridge=master.name if master else None, host_mtu=host.mtu,
        hairpin=bool(host.hairpin), host_ipv6=bool(host.ipv6), host_up=host.up, ifname=inner.name,
        mtu=inner.mtu, addresses=inner_addresses, up=inner.up)


def _default_route(dump: LinkDump, version: int) -> str | None:
    by_index = dump.by_index()
    for route in dump.routes:
        if route.dst.version == version and route.dst.prefixlen == 0 and route.gateway:
            dev = by_index[route.index].name if route.index in by_index else "?"
            return f"via {route.gateway} dev {dev}"
    return None


def observe_sandbox(stack: str, container: str, name: str, inner: LinkDump,
                    host_ends: Mapping[str, Link], host_by_index: Mapping[int, Link]) -> ObservedSandbox:
    lo = next((link for link in inner.links if link.name == "lo"), None)
    endpoints: dict[str, ObservedEndpoint] = {}
    for link in inner.links:
        owner = names.parse_alias(link.alias)
        if owner is None or owner.kind != "endpoint" or owner.network is None:
            continue
        if (owner.stack, owner.name) != (stack, container):
            # A workload with CAP_NET_ADMIN can alias links of its own namespace: a mark naming
            # another container's endpoint is not that endpoint (acting on it would delete the
            # other's veth, in any stack), so it is nobody's here.
            continue
        host = host_ends.get(owner.key)
        state = (_endpoint_state(host, link, inner.addresses_of(link.index), host_by_index)
                 if host is not None else None)
        endpoints[owner.network] = ObservedEndpoint(owner, host.index if host else None, link.index, state)
    return ObservedSandbox(stack, container, name,
                           SandboxState(lo_up=bool(lo and lo.up), default_route=_default_route(inner, 4),
                                        default_route6=_default_route(inner, 6)),
                           endpoints)


def _desired_endpoints(stack: Stack, container_key: str, desired: Desired) -> dict[str, EndpointState]:
    container = stack.containers[container_key]
    result: dict[str, EndpointState] = {}
    for index, net_key in enumerate(container.networks):
        net = stack.networks[net_key]
        key = (stack.name, container_key, net_key)
        # From (int, prefix length): built from text, each address is printed and parsed again
        # (8 us against 2, a thousand endpoints a whole pass).
        addresses: tuple[Interface, ...] = (
            IPv4Interface((int(desired.addresses[key]), net.assigned_subnet.prefixlen)),)
        if net.subnet6 is not None:
            addresses += (IPv6Interface((int(desired.addresses6[key]), net.subnet6.prefixlen)),)
        result[net_key] = EndpointState(
            host_name=names.veth_host_name(stack.name, container_key, net_key), bridge=net.bridge,
            host_mtu=net.mtu, hairpin=True, host_ipv6=False, host_up=True,
            ifname=names.container_ifname(index), mtu=net.mtu, addresses=addresses, up=True)
    return result


def _desired_sandbox(stack: Stack, container_key: str) -> SandboxState:
    container = stack.containers[container_key]
    if container.default_route is None:
        return SandboxState(lo_up=True, default_route=None, default_route6=None)
    dev = names.container_ifname(list(container.networks).index(container.default_route))
    network = stack.networks[container.default_route]
    return SandboxState(lo_up=True, default_route=f"via {network.gateway} dev {dev}",
                        default_route6=f"via {network.gateway6} dev {dev}" if network.subnet6 is not None else None)


def _fields(old: dict[str, object], new: dict[str, object]) -> tuple[FieldChange, ...]:
    return tuple(FieldChange(k, old.get(k), new.get(k)) for k in (new or old) if old.get(k) != new.get(k))


def _sandbox_values(state: SandboxState | None) -> dict[str, object]:
    return ({"lo_up": state.lo_up, "default_route": state.default_route, "default_route6": state.default_route6}
            if state else {})


def _diff_endpoint(key: str, want: EndpointState, found: ObservedEndpoint | None) -> Change | None:
    if found is None or found.state is None:
        return Change(Action.CREATE, KIND_ENDPOINT, key, _fields({}, want.field_values()),
                      reason="not on the host" if found is None else "one end of the veth pair is gone",
                      desired=want, observed=found)
    fields = _fields(found.state.field_values(), want.field_values())
    if not fields:
        return None
    if any(f.path in _IDENTITY for f in fields):
        return Change(Action.RECREATE, KIND_ENDPOINT, key, fields, reason="interface name changed",
                      disruptive=True, desired=want, observed=found)
    return Change(Action.UPDATE, KIND_ENDPOINT, key, fields, reason="drifted from the spec",
                  desired=want, observed=found)


def diff_sandboxes(desired: Desired, observed: SandboxObservation) -> Diff:
    result = Diff()
    sandboxes: list[Change] = []
    endpoints: list[Change] = []
    routes: list[Change] = []
    wanted: set[str] = set()
    for stack in (s for s in desired.stacks.values() if s.name in desired.scope):
        for container_key in desired.containers_of(stack):
            key = f"{stack.name}/{container_key}"
            wanted.add(key)
            found = observed.sandboxes.get(key)
            want = _desired_sandbox(stack, container_key)
            if found is None:
                sandboxes.append(Change(Action.CREATE, KIND_SANDBOX, key,
                                        (FieldChange("netns", None, names.netns_name(stack.name, container_key)),),
                                        reason="not on the host", desired=want))
            want_eps = _desired_endpoints(stack, container_key, desired)
            found_eps = found.endpoints if found else {}
            for net_key, want_ep in want_eps.items():
                change = _diff_endpoint(f"{key}/{net_key}", want_ep, found_eps.get(net_key))
                if change is not None:
                    endpoints.append(change)
            endpoints += [Change(Action.DELETE, KIND_ENDPOINT, ep.owner.key, reason="no longer in the spec",
                                 observed=ep) for net_key, ep in found_eps.items() if net_key not in want_eps]
            old_state = found.state if found else SandboxState(lo_up=False, default_route=None, default_route6=None)
            fields = _fields(_sandbox_values(old_state), _sandbox_values(want))
            if fields:
                routes.append(Change(Action.UPDATE, KIND_SANDBOX, key, fields,
                                     reason="drifted from the spec" if found else "new sandbox",
                                     desired=want, observed=found))
    for key, found in observed.sandboxes.items():
        if found.stack in desired.scope and key not in wanted and desired.container_in_focus(key):
            sandboxes.append(Change(Action.DELETE, KIND_SANDBOX, key,
                                    (FieldChange("netns", found.netns, None),),
                                    reason="no longer in the spec", observed=found))
    for key, link in observed.stray_host_ends.items():
        if key.split("/")[0] in desired.scope and desired.container_in_focus(key):
            endpoints.append(Change(Action.DELETE, KIND_ENDPOINT, key, reason="no sandbox holds its other end",
                                    observed=ObservedEndpoint(_endpoint_owner(key), link.index, None, None)))
    # Namespaces first, then the veths inside them, then the routes through those veths.
    result.changes = sandboxes + endpoints + routes
    return result


def _has_ipv6(state: EndpointState) -> bool:
    return any(a.version == 6 for a in state.addresses)


def _set_container_ipv6(ns_name: str, ifname: str, on: bool) -> None:
    """IPv6 on the container end only on a dual-stack network (see the module's docstring).
    Switched on again before an IPv6 address is added (the kernel refuses one on a link with
    IPv6 disabled), so a hand-disabled link is repaired with its address. A host without IPv6
    has nothing to disable."""
    try:
        netns.write_sysctl(ns_name, "0" if on else "1", *sysctl.disable_ipv6_key(ifname))
    except FileNotFoundError:
        if on:
            raise


def _set_host_ipv6(host_name: str, on: bool) -> None:
    """The host end's own IPv6 (off: see the module's docstring), written from this thread,
    which is in the host's namespace (a container end's needs a thread that enters its own). A
    link without IPv6 state (a host without IPv6, an MTU under 1280) has nothing to switch."""
    with suppress(FileNotFoundError):
        sysctl.write("0" if on else "1", *sysctl.disable_ipv6_key(host_name))


def _endpoint_owner(key: str) -> names.Owner:
    """The owner of the host end of endpoint `stack/container/network`."""
    stack, container, network = key.split("/")[:3]
    return names.Owner("endpoint", stack, container, network)


class SandboxController:
    kinds = (KIND_SANDBOX, KIND_ENDPOINT)

    def __init__(self, host: Netlink):
        self._host = host

    def observe(self, focus: Focus | None = None) -> SandboxObservation:
        dump = self._host.dump(focus.links if focus else None)
        by_index = dump.by_index()
        host_ends: dict[str, Link] = {}
        for link in dump.links:
            owner = names.parse_alias(link.alias)
            if owner is not None and owner.kind == "endpoint" and (focus is None or focus.has_container(owner.key)):
                host_ends[owner.key] = link
        ours = netns.sandboxes(focus.containers if focus else None)
        sandboxes: dict[str, ObservedSandbox] = {}
        for name, inner in netns.dumps(list(ours)):
            if inner is not None:  # a namespace file without its namespace is recreated
                stack, container = ours[name]
                sandboxes[f"{stack}/{container}"] = observe_sandbox(
                    stack, container, name, inner, host_ends, by_index)
        claimed = {ep.owner.key for s in sandboxes.values() for ep in s.endpoints.values()}
        bridges = {link.name: link.index for link in dump.links if link.kind == "bridge"}
        return SandboxObservation(sandboxes,
                                  {k: link for k, link in host_ends.items() if k not in claimed}, bridges)

    def count(self) -> int:
        """How many sandboxes the host has (one listing of the namespaces' directory)."""
        return len(netns.sandboxes())

    def observe_apart(self) -> SandboxObservation:
        """A whole observation through a netlink socket of its own and a host dump of its own,
        for a forked child: the session's socket, shared with the parent, would mix the two
        processes' answers."""
        with host_netlink() as netlink:
            return SandboxController(netlink).observe()

    def diff(self, desired: Desired, observed: SandboxObservation) -> Diff:
        return diff_sandboxes(desired, observed)

    def apply(self, changes: Sequence[Change]) -> None:
        errors: list[ApplyError] = []
        # Namespaces are made and removed in one call each; the rest one change at a time.
        namespaces: dict[Action, list[Change]] = {Action.CREATE: [], Action.DELETE: []}
        others: list[Change] = []
        for change in changes:
            whole = namespaces.get(change.action) if change.kind == KIND_SANDBOX else None
            (others if whole is None else whole).append(change)
        created, deleted = namespaces[Action.CREATE], namespaces[Action.DELETE]
        try:
            netns.add([names.netns_name(*c.key.split("/")) for c in created])
        except netns.NetnsError as exc:
            errors.append(ApplyError(str(exc)))
        wanted = [c.desired for c in changes if isinstance(c.desired, EndpointState)]
        host_links = self._host.links_named({w.host_name for w in wanted} | {w.bridge for w in wanted if w.bridge})
        bridges = {link.name: link.index for link in host_links if link.kind == "bridge"}
        our_veths = {link.name: link.index for link in host_links
                     if link.kind == "veth" and link.group == names.LINK_GROUP}
        for change in others:
            try:
                if change.kind == KIND_ENDPOINT:
                    self._apply_endpoint(change, bridges, our_veths)
                else:
                    self._apply_sandbox_state(change)
            except Exception as exc:  # noqa: BLE001 - reported together, the batch goes on
                errors.append(ApplyError.of(change, exc))
        try:
            netns.delete([c.observed.netns for c in deleted if isinstance(c.observed, ObservedSandbox)])
        except netns.NetnsError as exc:
            errors.append(ApplyError(str(exc)))
        if errors:
            raise ApplyErrors(errors)

    def _apply_sandbox_state(self, change: Change) -> None:
        want = change.desired
        assert isinstance(want, SandboxState)
        with netns.netlink_in(names.netns_name(*change.key.split("/"))) as inner:
            if want.lo_up:
                inner.set_link(1, up=True)  # lo is always ifindex 1 in a namespace
            dump = inner.dump()
            for version, route in ((4, want.default_route), (6, want.default_route6)):
                if route == _default_route(dump, version):
                    continue
                if route is None:
                    inner.delete_route(next(r.dst for r in dump.routes
                                            if r.dst.version == version and r.dst.prefixlen == 0), None)
                else:
                    _, gateway, _, dev = route.split()
                    inner.replace_default_route(gateway, dump.by_name()[dev].index)

    def _apply_endpoint(self, change: Change, bridges: Mapping[str, int], our_veths: Mapping[str, int]) -> None:
        found = change.observed
        assert found is None or isinstance(found, ObservedEndpoint)
        stack, container, network = change.key.split("/")
        ns_name = names.netns_name(stack, container)
        if change.action in (Action.DELETE, Action.RECREATE, Action.CREATE) and found is not None:
            if found.host_index is not None:
                self._host.delete_link(found.host_index)
            elif found.inner_index is not None:
                with netns.netlink_in(ns_name) as inner:
                    inner.delete_link(found.inner_index)
        if change.action is Action.DELETE:
            return
        want = change.desired
        assert isinstance(want, EndpointState)
        if change.action is not Action.UPDATE and want.host_name in our_veths:
            # A pair whose creation was killed before both aliases were set: observe cannot
            # name its owner, but it holds our name and our link group (set atomically at
            # creation), so it is ours to replace; otherwise the create fails with EEXIST.
            self._host.delete_link(our_veths[want.host_name])
        alias = names.endpoint_alias(stack, container, network)
        with netns.netlink_in(ns_name) as inner:
            if change.action is Action.UPDATE:
                assert found is not None and found.state is not None
                host_index, inner_index, current = found.host_index, found.inner_index, found.state
            else:
                with netns.open_fd(ns_name) as ns_fd:
                    host_index = self._host.create_veth(want.host_name, want.ifname, ns_fd,
                                                        want.mtu, names.LINK_GROUP)
                inner_index = inner.index_of(want.ifname)
                current = replace(want, bridge=None, hairpin=False, host_ipv6=True, host_up=False, addresses=(),
                                  up=False)
            assert host_index is not None and inner_index is not None
            if change.action is not Action.UPDATE or _has_ipv6(want) != _has_ipv6(current):
                _set_container_ipv6(ns_name, want.ifname, _has_ipv6(want))  # before the link is up
            self._converge(inner, host_index, inner_index, current, want, bridges,
                           alias if change.action is not Action.UPDATE else None)

    def _converge(self, inner: Netlink, host_index: int, inner_index: int, current: EndpointState,
                  want: EndpointState, bridges: Mapping[str, int], alias: str | None) -> None:
        """One request per end for the link attributes (alias only on a new pair; the container
        end's MAC whenever its IPv4 address is set), then the hairpin (the port must be enslaved
        first) and the addresses. The host end's IPv6 switch goes before its request (a new
        pair's before it is up), or after it when that request raises its MTU to IPv6's minimum
        or above: the kernel then makes the link's IPv6 anew, from its defaults."""
        if current.bridge != want.bridge and want.bridge is not None and want.bridge not in bridges:
            raise ApplyError(f"bridge {want.bridge} does not exist")
        ipv6_made_anew = current.host_mtu < IPV6_MIN_MTU <= want.host_mtu
        if current.host_ipv6 != want.host_ipv6 and not ipv6_made_anew:
            _set_host_ipv6(want.host_name, want.host_ipv6)
        self._host.set_link(
            host_index, alias=alias,
            master=bridges[want.bridge] if current.bridge != want.bridge and want.bridge is not None else None,
            mtu=want.host_mtu if current.host_mtu != want.host_mtu else None,
            up=want.host_up if current.host_up != want.host_up else None)
        if ipv6_made_anew:
            _set_host_ipv6(want.host_name, want.host_ipv6)
        if current.hairpin != want.hairpin or current.bridge != want.bridge:
            self._host.set_hairpin(host_index, want.hairpin)
        ipv4 = ipv4_of(want.addresses)
        inner.set_link(inner_index, alias=alias, mtu=want.mtu if current.mtu != want.mtu else None,
                       up=want.up if current.up != want.up else None,
                       mac=mac_of(ipv4.ip) if ipv4 is not None and ipv4 != ipv4_of(current.addresses) else None)
        for address in set(current.addresses) - set(want.addresses):
            inner.delete_address(inner_index, address)
        for address in set(want.addresses) - set(current.addresses):
            inner.add_address(inner_index, address)
