"""Our rtnetlink subset against the real kernel, with iproute2 (`ip -j -d`) as the oracle: every
record we parse and every change we request must read back the same through `ip`."""

from __future__ import annotations

import json

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
out["inner"] = repr(netns.dump_all(["rc-t_c"])["rc-t_c"])
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
    assert "hairpin=True" in dumps["host"]
    assert "Route(dst=IPv4Network('0.0.0.0/0'), index=2, gateway='10.77.0.1')" in dumps["inner"]
    assert "Address(index=2, interface=IPv4Interface('10.77.0.2/24'))" in dumps["inner"]

    sandbox.python(TEARDOWN)
    assert "tv0" not in [link["ifname"] for link in _ip(sandbox, "link", "show")]
    assert _ip(sandbox, "-n", "rc-t_c", "route", "show", "default") == []
    assert "10.77.0.1" not in sandbox.run("ip", "-4", "addr", "show", "tbr0").stdout


def test_a_namespace_file_left_by_a_crash_is_replaced(sandbox: Sandbox) -> None:
    """`ip netns add` creates the file, then mounts the namespace on it: killed in between, it
    leaves a plain file that cannot be entered."""
    sandbox.sh("touch /run/netns/rc-t_c")
    out = sandbox.python("from kernel import netns\n"
                         "print(netns.dump_all(['rc-t_c'])['rc-t_c'], netns.is_namespace('rc-t_c'))\n"
                         "netns.add(['rc-t_c'])\n"
                         "print(netns.is_namespace('rc-t_c'), netns.dump_all(['rc-t_c'])['rc-t_c'].by_name().keys())\n")
    assert out.stdout.splitlines() == ["None False", "True dict_keys(['lo'])"]
