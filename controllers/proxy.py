"""The [::1] proxies of published ports (kernel.proxy): the one part of a published port the
kernel's NAT cannot serve.

A port published over IPv6 (its container has an IPv6 address on its default_route network and
no IPv4 host_ip narrows it) answers on every IPv6 address of the host through the firewall's
DNAT, but [::1] needs a process: a proxy listening on [::1]:port relays to the container's IPv6
address (the container sees the connection come from its network's gateway, as with Docker's
docker-proxy). One change per proxy, keyed like the port's DNAT (`proxy
<stack>/<container>/<port>/<proto>`), marked with the same owner comment; observe is one sweep
of /proc, diff is pure over it, apply starts and stops processes.

A host process already listening on [::1] at such a port is a conflict (the proxy could not
bind), reported at the port's spec field before anything is touched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from ipaddress import IPv6Address

from controllers.base import Desired, Diff, Focus
from controllers.change import Action, Change, FieldChange
from controllers.errors import ApplyError, ApplyErrors
from controllers.firewall_conflicts import port_text
from controllers.firewall_rules import PortKey, parse_comment, port_key, port_owner
from controllers.published import port_targets
from kernel import proxy
from kernel.netfilter_listeners import Listener, read_listeners, with_holders
from kernel.proxy import Relay, RunningProxy
from specs.errors import Issue, Loc
from specs.names import ALIAS_PREFIX

KIND_PROXY = "proxy"
LOOPBACK6 = IPv6Address("::1")
MARK_PREFIX = f"{ALIAS_PREFIX} port "
"""Every proxy's mark begins so: it is its port's owner comment."""


@dataclass(frozen=True)
class ProxyObservation:
    proxies: Mapping[PortKey, tuple[RunningProxy, ...]]
    """Our proxies by the port they serve (more than one: the extra ones are stopped)."""
    foreign: tuple[Listener, ...]
    """Sockets listening on [::1] that no proxy of ours holds."""
    loopback6: bool = True
    """::1 exists here: without it no port answers on [::1], and no proxy is wanted."""

    def owned_stacks(self) -> set[str]:
        return {key.stack for key in self.proxies}

    def blocking(self, relay: Relay) -> list[Listener]:
        """The foreign listeners on the relay's address and port."""
        where = (relay.protocol, relay.listen, relay.port)
        return [s for s in self.foreign if (s.protocol, s.address, s.port) == where]


@dataclass(frozen=True)
class Wanted:
    relay: Relay
    loc: Loc


@dataclass(frozen=True)
class Work:
    """What apply does for one change: stop these, then start this one."""

    stop: tuple[RunningProxy, ...]
    start: tuple[str, Relay] | None
    """(mark, relay)."""


def wanted_relays(desired: Desired) -> dict[PortKey, Wanted]:
    """The [::1] proxy of every port the stacks in scope publish over IPv6."""
    wants = {}
    for stack in desired.stacks.values():
        if stack.name not in desired.scope:
            continue
        for name in desired.containers_of(stack):
            container = stack.containers[name]
            targets = port_targets(stack, name, container, desired) if container.ports else None
            if targets is None or isinstance(targets, str) or targets.address6 is None:
                continue
            for index, mapping in enumerate(container.ports):
                if mapping.host_ip is None:
                    relay = Relay(mapping.protocol, LOOPBACK6, mapping.host, targets.address6, mapping.container)
                    wants[port_key(stack.name, name, mapping)] = Wanted(relay, ("containers", name, "ports", index))
    return wants


def _text(argv: tuple[str, ...]) -> str:
    return " ".join(argv[1:])


def _change(key: PortKey, want: Wanted | None, have: Sequence[RunningProxy]) -> Change | None:
    mark = port_owner(key).comment
    argv = want.relay.argv(mark) if want else None
    kept = next((p for p in have if p.argv == argv), None)
    stop = tuple(p for p in have if p is not kept)
    start = (mark, want.relay) if want and kept is None else None
    if not stop and start is None:
        return None
    if not have:
        action, reason = Action.CREATE, "not running"
    elif want is None:
        action, reason = Action.DELETE, "no longer in the spec"
    else:
        action, reason = Action.UPDATE, "differs from the spec" if kept is None else "runs more than once"
    fields = tuple(FieldChange("socat", _text(p.argv), None) for p in stop)
    if argv is not None and start is not None:
        fields += (FieldChange("socat", None, _text(argv)),)
    return Change(action, KIND_PROXY, key.key, fields, reason=reason, desired=Work(stop, start))


def diff_proxies(desired: Desired, observed: ProxyObservation) -> Diff:
    """Pure: start the proxies the spec wants and that do not run as wanted, stop the others of
    the stacks in scope."""
    wants = wanted_relays(desired) if observed.loopback6 else {}
    issues = [Issue(key.stack, want.loc, f"host port [::1]:{port_text(key)} is in use: {listener.describe()}")
              for key, want in wants.items() for listener in observed.blocking(want.relay)]
    in_scope = {key for key in observed.proxies if key.stack in desired.scope and desired.container_in_focus(key.key)}
    changes = [change for key in sorted(wants.keys() | in_scope, key=lambda k: k.key)
               if (change := _change(key, wants.get(key), observed.proxies.get(key, ()))) is not None]
    return Diff(changes=changes, issues=issues)


def running_proxies(loopback: Sequence[Listener] | None = None) -> dict[PortKey, tuple[RunningProxy, ...]]:
    """Our proxies in this network namespace, by the port their mark names. A sweep of /proc
    (~20 us a process), so only when something listens on [::1] (`loopback`: those listeners,
    read here when not given): a proxy that does not is gone or going, and the flows its
    children still relay end with their connections."""
    if loopback is None:
        loopback = [s for s in read_listeners() if s.address == LOOPBACK6]
    if not loopback:
        return {}
    proxies: dict[PortKey, list[RunningProxy]] = {}
    for running in proxy.running(MARK_PREFIX):
        owner = parse_comment(running.mark)
        key = PortKey.parse(owner.key) if owner else None
        if key is not None:
            proxies.setdefault(key, []).append(running)
    return {key: tuple(found) for key, found in proxies.items()}


class ProxyController:
    kinds = (KIND_PROXY,)

    def observe(self, focus: Focus | None = None) -> ProxyObservation:
        loopback = tuple(s for s in read_listeners() if s.address == LOOPBACK6)
        proxies = running_proxies(loopback)
        ours = {inode for found in proxies.values() for running in found for inode in running.sockets}
        foreign = tuple(s for s in loopback if s.inode not in ours)
        return ProxyObservation(proxies, foreign, proxy.has_ipv6_loopback())

    def diff(self, desired: Desired, observed: ProxyObservation) -> Diff:
        """Only the listeners a conflict names are looked up (a walk of every fd)."""
        slots = {(w.relay.protocol, w.relay.port) for w in wanted_relays(desired).values()}
        return diff_proxies(desired, replace(observed, foreign=with_holders(observed.foreign, slots)))

    def apply(self, changes: Sequence[Change]) -> None:
        """Every stop first (a port may pass from one proxy to another), then every start at once."""
        works = [change.desired for change in changes if isinstance(change.desired, Work)]
        for work in works:
            for running in work.stop:
                proxy.stop(running)
        failed = proxy.start([work.start for work in works if work.start is not None])
        if failed:
            raise ApplyErrors([ApplyError(f"proxy: {exc}") for exc in failed])
