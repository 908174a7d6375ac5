"""Networks without a subnet, end to end inside a sandbox: a subnet from the pool that avoids the
host's routes and other stacks, kept across applies and a lost store (read back from the live
bridge), shown in the plan; an exhausted pool is a located error; a Compose file that names no
network runs on Compose's default network."""

from __future__ import annotations

from pathlib import Path

from tests.compose_support import fetch, reconcile_ok, web_image
from tests.sandbox import Sandbox
from tests.waiting import eventually

ONE = """\
name: rc-h16c-one
networks:
  front: {}
  back: {internal: true}
"""

TWO = """\
name: rc-h16c-two
networks:
  only: {}
"""

WEB = """\
name: rc-h16c-web
services:
  web:
    image: "oci:{layout}:v1"
    command: ["httpd", "-f", "-p", "80", "-h", "/www"]
    ports: ["8090:80"]
"""


def subnets(sandbox: Sandbox) -> dict[str, str]:
    """`stack/network` -> subnet, as `reconcile status` reads them from the kernel."""
    return {f"{stack['name']}/{net['name']}": net["subnet"]
            for stack in sandbox.status()["stacks"] for net in stack["networks"]}


def test_pooled_subnets_avoid_the_host_and_other_stacks_and_stick(sandbox: Sandbox) -> None:
    sandbox.sh("ip link set lo up && ip route add 10.89.0.0/24 dev lo")  # the pool's first block is taken
    one, two = str(sandbox.write("one.yaml", ONE)), str(sandbox.write("two.yaml", TWO))

    diff = sandbox.reconcile("diff", one)
    plan = diff.stdout
    assert diff.returncode == 2, diff.stderr
    assert "subnet 10.89.1.0/24 from the pool" in plan and "subnet 10.89.2.0/24 from the pool" in plan, plan
    reconcile_ok(sandbox, "apply", one)
    reconcile_ok(sandbox, "apply", two)
    expected = {"rc-h16c-one/front": "10.89.1.0/24", "rc-h16c-one/back": "10.89.2.0/24",
                "rc-h16c-two/only": "10.89.3.0/24"}
    assert subnets(sandbox) == expected
    bridge = sandbox.sh("ip -4 -o addr show | grep 10.89.1.1/24", check=False).stdout
    assert "10.89.1.1/24" in bridge  # the gateway is the first host address

    assert reconcile_ok(sandbox, "apply", one) == "No changes. The host matches the spec.\n"
    (sandbox.state_dir / "state.db").unlink()  # the subnets are read back from the live bridges
    assert reconcile_ok(sandbox, "apply", two) == "No changes. The host matches the spec.\n"
    assert reconcile_ok(sandbox, "apply", one) == "No changes. The host matches the spec.\n"
    assert subnets(sandbox) == expected

    # A route the host adds over a pooled subnet later moves nothing: the overlap is an error.
    sandbox.sh("ip route add 10.89.2.0/25 dev lo")
    result = sandbox.reconcile("apply", one)
    assert result.returncode == 1 and "10.89.2.0/24" in result.stderr and "10.89.2.0/25" in result.stderr, result
    assert subnets(sandbox) == expected
    sandbox.sh("ip route del 10.89.2.0/25 dev lo")

    # A declared subnet may not take a pooled one of another stack.
    clash = sandbox.write("three.yaml", "name: rc-h16c-three\nnetworks:\n  n: {subnet: 10.89.3.0/24}\n")
    result = sandbox.reconcile("apply", str(clash))
    assert result.returncode == 1
    assert result.stderr == (f"{clash}:3:15: networks.n.subnet: subnet 10.89.3.0/24 overlaps 10.89.3.0/24 of "
                             "network 'only' of stack 'rc-h16c-two', applied on this host\n")

    reconcile_ok(sandbox, "down", "--stack", "rc-h16c-one", "--stack", "rc-h16c-two")
    assert sandbox.our_links() == []


def test_an_exhausted_pool_is_a_located_error(sandbox: Sandbox) -> None:
    one = sandbox.write("one.yaml", ONE)
    result = sandbox.reconcile("apply", "--subnet-pool", "base=10.89.0.0/24,size=24", str(one))
    assert result.returncode == 1
    assert result.stderr == (
        f"{one}:4:9: networks.back: no free /24 subnet left in the subnet pool 10.89.0.0/24 for network 'back': "
        "set networks.back.subnet, or choose a larger pool (--subnet-pool, RECONCILE_SUBNET_POOL)\n")
    assert sandbox.our_links() == []


def test_a_compose_file_without_networks_runs_on_the_default_network(sandbox: Sandbox, tmp_path: Path) -> None:
    compose = sandbox.workdir / "web" / "compose.yaml"
    compose.parent.mkdir()
    compose.write_text(WEB.format(layout=web_image(tmp_path / "layout").layout))
    reconcile_ok(sandbox, "apply", str(compose))
    assert subnets(sandbox) == {"rc-h16c-web/default": "10.89.0.0/24"}
    assert eventually(lambda: fetch(sandbox, "http://127.0.0.1:8090/"), "hello from compose\n",
                      timeout=10.0) == "hello from compose\n"
    reconcile_ok(sandbox, "down", str(compose))
    assert sandbox.netns_names() == [] and sandbox.our_links() == []
