"""Our rtnetlink subset against the real kernel, with iproute2 (`ip -j -d`) as the oracle: every
record we parse and every change we request must read back the same through `ip`."""

from __future__ import annotations

import errno
import json
import socket
import sys

from kernel import rtnl_wire
from tests.sandbox import Sandbox

SCRIPT = """
import json, os
from ipaddress import IPv4Interface, IPv4Network
from kernel import netns
from kernel.netlink import host_netlink

netns.add(["rc-t_c"])
out = {}
with host_netlink() as nl:
    bridge = nl.create_bridge("tbr0", 1400, "reconcile/v1 network t/n", 29283)
    nl.set_link(bridge, up=True)
    nl.add_address(bridge, IPv4Interface("10.77.0.1/24"))
    nl.add_address(bridge, IPv4Interface("10.77.0.1/24"))  # already there: no error
    with netns.open_fd("rc-t_c") as fd:
        veth = nl.create_veth("tv0", "eth0", fd, 1400, 29283)
    nl.set_link(veth, master=bridge, up=True, alias="reconcile/v1 endpoint t/c/n", mtu=1300)
    nl.set_hairpin(veth, True)
    with netns.netlink_in("rc-t_c") as inner:
        inner_index = inner.index_of("eth0")
        inner.set_link(inner_index, up=True)
        inner.add_address(inner_index, IPv4Interface("10.77.0.2/24"))
        inner.replace_default_route("10.77.0.1", inner_index)
        inner.replace_default_route("10.77.0.1", inner_index)  # replace: idempotent
    out["host"] = repr(nl.dump())
    with open("/proc/sys/net/ipv6/conf/tv0/disable_ipv6", "w") as switch:
        switch.write("1")
    out["ipv6"] = [[link.name, link.ipv6] for link in nl.dump().links if link.name in ("tbr0", "tv0")]
    whole, named = nl.dump(), nl.dump(frozenset({"tv0", "absent0"}))
    out["named"] = [sorted(link.name for link in named.links), set(named.links) == {
        link for link in whole.links if link.name in ("tbr0", "tv0")}, repr(named.addresses), len(named.routes)]
out["inner"] = repr(dict(netns.dumps(["rc-t_c"]))["rc-t_c"])
print(json.dumps(out))
"""

TEARDOWN = """
from ipaddress import IPv4Interface, IPv4Network
from kernel import netns
from kernel.netlink import host_netlink
with host_netlink() as nl:
    links = nl.dump().by_name()
    with netns.netlink_in("rc-t_c") as inner:
        index = inner.index_of("eth0")
        for _ in range(2):  # the second time everything is already gone: no error
            inner.delete_route(IPv4Network("0.0.0.0/0"), None)
            inner.delete_address(index, IPv4Interface("10.77.0.2/24"))
    for _ in range(2):
        nl.delete_link(links["tv0"].index)
    nl.delete_address(links["tbr0"].index, IPv4Interface("10.77.0.1/24"))
"""


def _ip(sandbox: Sandbox, *args: str) -> list[dict]:
    return json.loads(sandbox.run("ip", "-j", "-d", *args).stdout)


def test_changes_and_dumps_agree_with_iproute2(sandbox: Sandbox) -> None:
    dumps = json.loads(sandbox.python(SCRIPT).stdout)
    bridge, = _ip(sandbox, "link", "show", "tbr0")
    veth, = _ip(sandbox, "link", "show", "tv0")
    assert (bridge["linkinfo"]["info_kind"], bridge["ifalias"], bridge["group"], bridge["mtu"]) == (
        "bridge", "reconcile/v1 network t/n", "29283", 1300)
    assert (veth["master"], veth["ifalias"], veth["mtu"], "UP" in veth["flags"]) == (
        "tbr0", "reconcile/v1 endpoint t/c/n", 1300, True)
    assert veth["linkinfo"]["info_slave_data"]["hairpin"] is True
    assert [a["local"] for a in _ip(sandbox, "-4", "addr", "show", "tbr0")[0]["addr_info"]] == ["10.77.0.1"]
    eth0, = _ip(sandbox, "-4", "-n", "rc-t_c", "addr", "show", "eth0")
    assert (eth0["group"], eth0["mtu"], [a["local"] for a in eth0["addr_info"]]) == ("29283", 1400, ["10.77.0.2"])
    routes = _ip(sandbox, "-n", "rc-t_c", "route", "show", "default")
    assert [(r["gateway"], r["dev"]) for r in routes] == [("10.77.0.1", "eth0")]

    # What we parsed says the same as ip does.
    for name, link in (("tbr0", bridge), ("tv0", veth)):
        assert (f"Link(index={link['ifindex']}, name='{name}', kind='{link['linkinfo']['info_kind']}', "
                f"alias='{link['ifalias']}', mtu={link['mtu']}, up=True") in dumps["host"]
    assert "hairpin=True, ipv6=True)" in dumps["host"]  # a bridge port's IPv6 switch, as made
    assert dumps["ipv6"] == [["tbr0", None], ["tv0", False]]  # read for ports only; switched off
    assert "Route(dst=IPv4Network('0.0.0.0/0'), index=2, gateway='10.77.0.1')" in dumps["inner"]
    assert "Address(index=2, interface=IPv4Interface('10.77.0.2/24'))" in dumps["inner"]
    # A dump of some links by name: those that exist, the bridge one is a port of, their
    # addresses (the kernel filters the dump by index), no routes; read as the whole dump reads them.
    assert dumps["named"] == [["tbr0", "tv0"], True,
                              f"(Address(index={bridge['ifindex']}, interface=IPv4Interface('10.77.0.1/24')),)", 0]

    sandbox.python(TEARDOWN)
    assert "tv0" not in [link["ifname"] for link in _ip(sandbox, "link", "show")]
    assert _ip(sandbox, "-n", "rc-t_c", "route", "show", "default") == []
    assert "10.77.0.1" not in sandbox.run("ip", "-4", "addr", "show", "tbr0").stdout


def test_a_namespace_file_left_by_a_crash_is_replaced(sandbox: Sandbox) -> None:
    """`ip netns add` creates the file, then mounts the namespace on it: killed in between, it
    leaves a plain file that cannot be entered."""
    sandbox.sh("touch /run/netns/rc-t_c")
    out = sandbox.python("from kernel import netns\n"
                         "[(_, gone)] = netns.dumps(['rc-t_c'])\n"
                         "print(gone, netns.is_namespace('rc-t_c'))\n"
                         "netns.add(['rc-t_c'])\n"
                         "[(_, made)] = netns.dumps(['rc-t_c'])\n"
                         "print(netns.is_namespace('rc-t_c'), made.by_name().keys())\n")
    assert out.stdout.splitlines() == ["None False", "True dict_keys(['lo'])"]


SCRIPT6 = """
import json
from ipaddress import IPv6Interface, IPv6Network
from kernel import netns
from kernel.netlink import host_netlink

netns.add(["rc-t_c"])
with host_netlink() as nl:
    with netns.open_fd("rc-t_c") as fd:
        veth = nl.create_veth("tv0", "eth0", fd, 1500, 29283)
    nl.set_link(veth, up=True)
    nl.add_address(veth, IPv6Interface("fd00:77::1/64"))
with netns.netlink_in("rc-t_c") as inner:
    index = inner.index_of("eth0")
    inner.set_link(index, up=True)
    inner.add_address(index, IPv6Interface("fd00:77::2/64"))
    inner.add_address(index, IPv6Interface("fd00:77::2/64"))  # already there: no error
    inner.replace_default_route("fd00:77::1", index)
    inner.replace_default_route("fd00:77::1", index)  # replace: idempotent
    dump = inner.dump()
    print(json.dumps({"addresses": [str(a.interface) for a in dump.addresses],
                      "routes": [(str(r.dst), r.gateway) for r in dump.routes], "of": str(dump.addresses_of(index))}))
"""

TEARDOWN6 = """
from ipaddress import IPv6Interface, IPv6Network
from kernel import netns
with netns.netlink_in("rc-t_c") as inner:
    index = inner.index_of("eth0")
    for _ in range(2):  # the second time everything is already gone: no error
        inner.delete_route(IPv6Network("::/0"), None)
        inner.delete_address(index, IPv6Interface("fd00:77::2/64"))
"""


def test_ipv6_addresses_and_routes_agree_with_iproute2(sandbox: Sandbox) -> None:
    """IPv6 addresses skip DAD (usable at once); the kernel's link-local addresses and routes,
    and its local-table routes, are not in the dump."""
    parsed = json.loads(sandbox.python(SCRIPT6).stdout)
    eth0, = _ip(sandbox, "-6", "-n", "rc-t_c", "addr", "show", "eth0")
    ours = [a for a in eth0["addr_info"] if a["scope"] == "global"]
    assert [(a["local"], a["prefixlen"], a.get("nodad"), a.get("tentative")) for a in ours] == [
        ("fd00:77::2", 64, True, None)]
    routes = _ip(sandbox, "-6", "-n", "rc-t_c", "route", "show", "default")
    assert [(r["gateway"], r["dev"]) for r in routes] == [("fd00:77::1", "eth0")]
    assert parsed["addresses"] == ["fd00:77::2/64"]  # no fe80:: (lo is down here: no ::1 either)
    assert parsed["routes"] == [["fd00:77::/64", None], ["::/0", "fd00:77::1"]]
    assert parsed["of"] == "(IPv6Interface('fd00:77::2/64'),)"

    sandbox.python(TEARDOWN6)
    assert _ip(sandbox, "-6", "-n", "rc-t_c", "route", "show", "default") == []
    assert "fd00:77::2" not in sandbox.run("ip", "-n", "rc-t_c", "-6", "addr").stdout




ROUTE_TABLES = """
import json, socket
from kernel import netns, rtnl_dump, rtnl_wire as wire
kind, body = next((kind, body) for kind, body in rtnl_dump.TABLES if kind == rtnl_dump.RTM_GETROUTE)
sock = wire.new_socket()
tables = [rtnl_dump.dump_table(sock, kind, body)]
refused = []
with wire.strict_checking(sock):
    tables.append(rtnl_dump.dump_table(sock, kind, body))
    try:  # a header strict checking refuses: a dump of one prefix length
        rtnl_dump.dump_table(sock, kind, wire.RTMSG.pack(socket.AF_INET, 24, 0, 0, 254, 0, 0, 0, 0))
    except wire.NetlinkError as exc:
        refused.append(exc.errno)
tables.append(rtnl_dump.dump_table(sock, kind, body))  # not strict again
netns.add(["rc-t_fresh"])  # lo down, no address: no IPv4 route table made yet
fresh = dict(netns.dumps(["rc-t_fresh"]))["rc-t_fresh"]
print(json.dumps({"tables": [sorted({answer[4] for answer in answers}) for answers in tables], "refused": refused,
                  "fresh": None if fresh is None else [[link.name for link in fresh.links], len(fresh.routes)]}))
"""

NO_TABLE_YET = """
import json
from kernel import rtnl_dump, rtnl_wire as wire
kind, body = next((kind, body) for kind, body in rtnl_dump.TABLES if kind == rtnl_dump.RTM_GETROUTE)
sock = wire.new_socket()
with wire.strict_checking(sock):
    try:
        list(wire.dump(sock, kind, body))
        refused = None
    except wire.NetlinkError as exc:
        refused = exc.errno
    print(json.dumps([refused, rtnl_dump.dump_table(sock, kind, body)]))
"""


def test_a_strict_route_dump_answers_with_the_main_table_alone(sandbox: Sandbox) -> None:
    """Sent under strict checking, the dumps of a pass leave the local table (most of each
    namespace's routes) in the kernel; the socket answers as before afterwards. A dump the
    kernel gives up on says so in its last message, which is raised; one of a table that a
    fresh namespace has not made yet is refused (ENOENT) and holds no route."""
    sandbox.run("ip", "link", "add", "d0", "type", "veth", "peer", "name", "d1")
    for end in ("d0", "d1"):
        sandbox.run("ip", "link", "set", end, "up")
    sandbox.run("ip", "addr", "add", "10.78.0.2/24", "dev", "d0")
    found = json.loads(sandbox.python(ROUTE_TABLES).stdout)
    everything, strict, after = found["tables"]
    assert everything == after == [254, 255] and strict == [254]
    assert found["refused"] == [errno.EINVAL]
    assert found["fresh"] == [["lo"], 0]
    no_table = sandbox.run("ip", "netns", "exec", "rc-t_fresh", sys.executable, "-c", NO_TABLE_YET).stdout
    assert json.loads(no_table) == [errno.ENOENT, []]


def test_each_datagram_is_read_at_its_own_size_through_one_buffer() -> None:
    """The receive buffer is reused: a shorter datagram after a longer one carries nothing of it."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with ours, theirs:
        theirs.send(b"x" * 3000)
        theirs.send(b"yz")
        first, second = rtnl_wire._receive(ours), rtnl_wire._receive(ours)
    assert (first, second) == (b"x" * 3000, b"yz") and type(first) is bytes
