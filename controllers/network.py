"""Bridge networks: one Linux bridge per spec network, with the gateway address (and gateway6
on a dual-stack network), MTU, up.

Ownership is the link alias (specs.names.network_alias), read back on every pass; a link that
holds a wanted name without our alias is a foreign link and a conflict, never adopted.

Forwarding is switched on, never off, as the networks need it: net.ipv4.ip_forward for any
non-internal network, net.ipv6.conf.all.forwarding for a non-internal one with a subnet6.
The IPv6 switch has a known consequence on the host itself: an interface that forwards ignores
router advertisements unless its accept_ra is 2, so a host that takes its own IPv6 default
route from RAs (SLAAC) loses it when the route expires; set accept_ra=2 on that interface.
"""

from __future__ import annotations

import errno
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Interface

from controllers.base import Desired, Diff, Focus
from controllers.change import Action, Change, FieldChange
from controllers.errors import ApplyError, ApplyErrors
from kernel import sysctl
from kernel.netlink import Netlink
from kernel.rtnl_dump import Interface, Link, LinkDump, ipv4_of, ipv6_of
from kernel.rtnl_wire import NetlinkError
from specs import names
from specs.errors import Issue
from specs.model import Network, Stack
from specs.validate import AppliedNet, HostNet, check_host

KIND_NETWORK = "network"
KIND_SYSCTL = "sysctl"
IP_FORWARD_KEY = "net.ipv4.ip_forward"
IPV6_FORWARDING_KEY = "net.ipv6.conf.all.forwarding"
SYSCTL_PATHS = {IP_FORWARD_KEY: ("net", "ipv4", "ip_forward"),
                IPV6_FORWARDING_KEY: ("net", "ipv6", "conf", "all", "forwarding")}
"""Kernel names (DO NOT RENAME): the sysctls the plan switches on, by the key it shows."""


@dataclass(frozen=True)
class BridgeState:
    """A bridge in the spec's shape: what desired and observed are compared on."""

    name: str
    mtu: int
    up: bool
    addresses: tuple[Interface, ...]  # IPv4 first (rtnl_dump.family_order)

    def field_values(self) -> dict[str, object]:
        return {"bridge": self.name, "mtu": self.mtu, "up": self.up,
                "addresses": [str(a) for a in self.addresses]}


@dataclass(frozen=True)
class ObservedBridge:
    owner: names.Owner
    index: int
    kind: str | None
    state: BridgeState


@dataclass(frozen=True)
class NetworkObservation:
    ours: Mapping[str, tuple[ObservedBridge, ...]]
    """Our bridges by key `stack/network`; more than one only after outside tampering."""
    links_by_name: Mapping[str, Link]
    ip_forward: bool
    foreign_nets: tuple[HostNet, ...]
    """Addresses and routes (IPv4 and IPv6) on links that are not ours: a spec subnet must not
    overlap them."""
    ipv6_forwarding: bool

    def owned_stacks(self) -> set[str]:
        return {key.split("/", 1)[0] for key in self.ours}

    def applied(self) -> tuple[AppliedNet, ...]:
        """Our networks as the kernel holds them (subnets read from the gateway addresses)."""
        return tuple(
            AppliedNet(stack=b.owner.stack, network=b.owner.name, subnet=gateway.network, bridge=b.state.name,
                       subnet6=gateway6.network if (gateway6 := ipv6_of(b.state.addresses)) else None)
            for bridges in self.ours.values() for b in bridges
            if (gateway := ipv4_of(b.state.addresses)) is not None
        )



def mac_of(address: IPv4Address) -> str:
    """The MAC of the link holding `address`: 02:42 and the address's four bytes, as Docker
    derives it. A link made anew (a repaired veth, a re-created bridge) gets the MAC its peers
    already hold in their ARP caches for that address; a random one left them sending to a MAC
    that no longer exists for tens of seconds. A bridge given no MAC also takes its lowest
    port's and changes it as ports come and go."""
    return "02:42:" + ":".join(f"{byte:02x}" for byte in address.packed)


def desired_bridge(network: Network) -> BridgeState:
    addresses: tuple[Interface, ...] = (IPv4Interface(f"{network.gateway}/{network.assigned_subnet.prefixlen}"),)
    if network.subnet6 is not None:
        addresses += (IPv6Interface(f"{network.gateway6}/{network.subnet6.prefixlen}"),)
    return BridgeState(name=network.bridge, mtu=network.mtu, up=True, addresses=addresses)


def observe_networks(dump: LinkDump, ip_forward: bool, ipv6_forwarding: bool) -> NetworkObservation:
    """Normalise one link dump into our bridges and the foreign state around them."""
    ours: dict[str, list[ObservedBridge]] = {}
    our_indexes: set[int] = set()
    for link in dump.links:
        owner = names.parse_alias(link.alias)
        if owner is None:
            continue
        our_indexes.add(link.index)
        if owner.kind != "network":
            continue
        state = BridgeState(name=link.name, mtu=link.mtu, up=link.up,
                            addresses=dump.addresses_of(link.index))
        ours.setdefault(owner.key, []).append(
            ObservedBridge(owner=owner, index=link.index, kind=link.kind, state=state))
    by_index = dump.by_index()
    foreign = [HostNet(ifname=by_index[a.index].name, network=a.interface.network, source="address")
               for a in dump.addresses if a.index not in our_indexes and a.index in by_index]
    foreign += [HostNet(ifname=by_index[r.index].name, network=r.dst, source="route")
                for r in dump.routes
                if r.index in by_index and r.index not in our_indexes and r.dst.prefixlen > 0]
    return NetworkObservation(
        ours={key: tuple(bridges) for key, bridges in ours.items()},
        links_by_name=dump.by_name(), ip_forward=ip_forward, foreign_nets=tuple(foreign),
        ipv6_forwarding=ipv6_forwarding)


def _field_changes(old: BridgeState | None, new: BridgeState | None) -> tuple[FieldChange, ...]:
    old_values = old.field_values() if old else {}
    new_values = new.field_values() if new else {}
    return tuple(FieldChange(path, old_values.get(path), new_values.get(path))
                 for path in ("bridge", "mtu", "up", "addresses")
                 if old_values.get(path) != new_values.get(path))


def _diff_one(key: str, net_key: str, want: BridgeState, found: ObservedBridge | None,
              observed: NetworkObservation) -> Change | Issue | None:
    stack = key.split("/", 1)[0]
    holder = observed.links_by_name.get(want.name)
    taken = None if holder is None else Issue(
        stack, ("networks", net_key, "bridge"), f"bridge name '{want.name}' is taken by {_whose(holder)}; "
        f"remove it or set networks.{net_key}.bridge to another name")
    if found is None:
        if holder is not None and _half_made(holder, observed):
            # Our group is set atomically at creation, the alias just after: this is a creation
            # of ours interrupted in between. Nothing can be attached yet; make it anew.
            half = ObservedBridge(names.Owner("network", stack, net_key), holder.index, holder.kind,
                                  BridgeState(holder.name, holder.mtu, holder.up, ()))
            return Change(Action.RECREATE, KIND_NETWORK, key, _field_changes(None, want),
                          reason="finish an interrupted creation", desired=want, observed=half)
        if taken is not None:
            return taken
        return Change(Action.CREATE, KIND_NETWORK, key, _field_changes(None, want),
                      reason="not on the host", desired=want)
    fields = _field_changes(found.state, want)
    if found.state.name != want.name and taken is not None:
        return taken  # renamed onto a link that is not this bridge: ours would go, the new one fail
    if found.kind != "bridge" or found.state.name != want.name:
        why = "bridge name changed" if found.state.name != want.name else f"link is a {found.kind}"
        return Change(Action.RECREATE, KIND_NETWORK, key, fields, reason=why, disruptive=True,
                      desired=want, observed=found)
    if fields:
        return Change(Action.UPDATE, KIND_NETWORK, key, fields, reason="drifted from the spec",
                      desired=want, observed=found)
    return None


def diff_networks(desired: Desired, observed: NetworkObservation) -> Diff:
    in_scope = [stack for stack in desired.stacks.values() if stack.name in desired.scope]
    result = Diff(issues=check_host(in_scope, observed.foreign_nets, observed.applied()))
    wanted: dict[str, tuple[str, BridgeState]] = {
        f"{stack.name}/{net_key}": (net_key, desired_bridge(net))
        for stack in in_scope for net_key, net in stack.networks.items()
        if desired.network_in_focus(f"{stack.name}/{net_key}")
    }
    for key, (net_key, want) in wanted.items():
        found = observed.ours.get(key, ())
        primary = next((b for b in found if b.state.name == want.name), found[0] if found else None)
        outcome = _diff_one(key, net_key, want, primary, observed)
        if isinstance(outcome, Issue):
            result.issues.append(outcome)
        elif outcome is not None:
            result.changes.append(_pool_noted(outcome, desired.pooled.get((key.split("/", 1)[0], net_key))))
        result.changes += [_delete(b, "a second bridge carries this network's mark")
                           for b in found if b is not primary]
    for key, bridges in observed.ours.items():
        if bridges[0].owner.stack in desired.scope and key not in wanted and desired.network_in_focus(key):
            result.changes += [_delete(b, "no longer in the spec") for b in bridges]
    result.changes += _forwarding_changes(in_scope, observed)
    return result


def _forwarding_changes(in_scope: Sequence[Stack], observed: NetworkObservation) -> list[Change]:
    routed = [net for stack in in_scope for net in stack.networks.values() if not net.internal]
    needs = ((IP_FORWARD_KEY, observed.ip_forward, bool(routed),
              "non-internal networks route through the host"),
             (IPV6_FORWARDING_KEY, observed.ipv6_forwarding, any(net.subnet6 is not None for net in routed),
              "non-internal dual-stack networks route IPv6 through the host"))
    return [Change(Action.UPDATE, KIND_SYSCTL, key, (FieldChange("value", "0", "1"),), reason=reason)
            for key, on, needed, reason in needs if needed and not on]


def _pool_noted(change: Change, pooled: IPv4Network | None) -> Change:
    """A subnet from the pool is named in the plan where the bridge gets its address: the
    spec does not say it, so the plan is where a user learns it."""
    if pooled is None or not any(f.path == "addresses" for f in change.fields):
        return change
    return replace(change, reason=f"{change.reason}; subnet {pooled} from the pool")


def _half_made(holder: Link, observed: NetworkObservation) -> bool:
    """Whether a link holding our bridge's name is what a creation killed before its alias
    leaves: a bridge of our link group, down, with no alias, no address and nothing attached.
    One that is more (up, addressed, with ports: another stack's bridge whose alias was
    cleared, under the same default name) is not ours to make anew: its name is taken."""
    return (holder.alias is None and holder.group == names.LINK_GROUP and holder.kind == "bridge"
            and not holder.up and not any(net.ifname == holder.name for net in observed.foreign_nets)
            and not any(link.master == holder.index for link in observed.links_by_name.values()))


def _whose(holder: Link) -> str:
    owner = names.parse_alias(holder.alias)
    whose = f"network {owner.key} of reconcile" if owner else "a link reconcile does not own"
    return f"{whose} (kind {holder.kind or 'unknown'}, index {holder.index})"


def _delete(bridge: ObservedBridge, reason: str) -> Change:
    return Change(Action.DELETE, KIND_NETWORK, bridge.owner.key,
                  _field_changes(bridge.state, None), reason=reason, observed=bridge)


def _switched_on(key: str) -> bool:
    """Whether a forwarding sysctl is on; a host without IPv6 has no such file (off: a
    dual-stack network then fails to apply with the kernel's own error)."""
    try:
        return sysctl.read(*SYSCTL_PATHS[key]) == "1"
    except FileNotFoundError:
        return False


class NetworkController:
    kinds = (KIND_NETWORK, KIND_SYSCTL)

    def __init__(self, netlink: Netlink):
        self._netlink = netlink

    def observe(self, focus: Focus | None = None) -> NetworkObservation:
        return observe_networks(self._netlink.dump(focus.links if focus else None),
                                _switched_on(IP_FORWARD_KEY), _switched_on(IPV6_FORWARDING_KEY))

    def diff(self, desired: Desired, observed: NetworkObservation) -> Diff:
        return diff_networks(desired, observed)

    def apply(self, changes: Sequence[Change]) -> None:
        errors: list[ApplyError] = []
        for change in changes:
            try:
                self._apply_one(change)
            except Exception as exc:  # noqa: BLE001 - every failure is reported, the batch goes on
                errors.append(ApplyError.of(change, exc))
        if errors:
            raise ApplyErrors(errors)

    def _apply_one(self, change: Change) -> None:
        if change.kind == KIND_SYSCTL:
            sysctl.write("1", *SYSCTL_PATHS[change.key])
            return
        want = change.desired
        found = change.observed
        assert want is None or isinstance(want, BridgeState)
        assert found is None or isinstance(found, ObservedBridge)
        if change.action in (Action.DELETE, Action.RECREATE) and found is not None:
            self._netlink.delete_link(found.index)
        if change.action in (Action.CREATE, Action.RECREATE) and want is not None:
            alias = names.network_alias(*change.key.split("/", 1))
            try:
                index = self._netlink.create_bridge(want.name, want.mtu, alias, names.LINK_GROUP)
            except NetlinkError as exc:
                if exc.errno != errno.EEXIST:
                    raise
                self._made_meanwhile(want.name, alias)
                return  # ours: the next pass (apply re-observes) converges it
            self._converge(index, BridgeState(want.name, want.mtu, False, ()), want)
        if change.action is Action.UPDATE and want is not None and found is not None:
            try:
                self._converge(found.index, found.state, want)
            except NetlinkError as exc:
                if exc.errno != errno.ENODEV:
                    raise
                # Deleted by someone else since we observed it: the next pass makes it anew.

    def _made_meanwhile(self, name: str, alias: str) -> None:
        """A link named `name` appeared between our observation and our create (EEXIST). One
        with our alias, or our group and no alias yet (a creation of ours in progress or cut
        short), is taken as made; anything else is foreign and never adopted."""
        holder = self._netlink.link_named(name)
        in_progress = holder is not None and holder.alias is None and holder.group == names.LINK_GROUP
        if holder is not None and (holder.alias == alias or in_progress):
            return
        taken = "a link since deleted" if holder is None else _whose(holder)
        raise ApplyError(f"bridge name '{name}' was taken meanwhile by {taken}")

    def _converge(self, index: int, current: BridgeState, want: BridgeState) -> None:
        """The MAC follows the IPv4 gateway address (set with it on a new bridge, before any port)."""
        gateway = ipv4_of(want.addresses)
        mac = mac_of(gateway.ip) if gateway is not None and gateway != ipv4_of(current.addresses) else None
        if current.mtu != want.mtu or mac is not None:
            self._netlink.set_link(index, mtu=want.mtu if current.mtu != want.mtu else None, mac=mac)
        for address in set(current.addresses) - set(want.addresses):
            self._netlink.delete_address(index, address)
        added = set(want.addresses) - set(current.addresses)
        if any(address.version == 6 for address in added):
            # A host with net.ipv6.conf.default.disable_ipv6=1 (a common hardening) makes every
            # new link so, and the kernel refuses its IPv6 addresses; the bridge is ours.
            sysctl.write("0", *sysctl.disable_ipv6_key(want.name))
        for address in added:
            self._netlink.add_address(index, address)
        if current.up != want.up:
            self._netlink.set_link(index, up=want.up)
