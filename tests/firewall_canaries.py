"""Foreign firewall state the tests plant and expect byte-identical afterwards (no tests here):
Docker-like iptables and ip6tables rules, an admin's own inet table, and readers of them."""

from __future__ import annotations

import re

from tests.sandbox import Sandbox

CANARY = """\
*nat
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
-A DOCKER -i docker0 -j RETURN
COMMIT
*filter
:FORWARD DROP [0:0]
:DOCKER - [0:0]
:DOCKER-USER - [0:0]
-A INPUT -s 192.0.2.0/24 -p tcp -m tcp --dport 22 -m comment --comment "admin: ssh" -j ACCEPT
-A FORWARD -j DOCKER-USER
-A FORWARD -o docker0 -j DOCKER
-A DOCKER -d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 80 -j ACCEPT
-A DOCKER-USER -j RETURN
COMMIT
"""
"""Docker-like chains, an admin rule in INPUT, foreign rules in the built-in chains we hook, and
a DROP policy on FORWARD (as Docker sets it)."""


FOREIGN_INET = """\
table inet rc-h17-admin {
	chain input {
		type filter hook input priority filter + 10; policy accept;
		tcp dport 2222 drop comment "admin: no telnet-ish"
	}
}
"""
"""An admin's own inet table with a base chain at a hook we use too."""


DOCKER_NO_DROP = CANARY.replace(":FORWARD DROP [0:0]\n", "")


CANARY6 = """\
*nat
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s fd00:17::/64 ! -o docker0 -j MASQUERADE
COMMIT
*filter
:FORWARD DROP [0:0]
:DOCKER-USER - [0:0]
-A INPUT -s 2001:db8:1::/48 -p tcp -m tcp --dport 22 -m comment --comment "admin: ssh" -j ACCEPT
-A FORWARD -j DOCKER-USER
-A DOCKER-USER -j RETURN
COMMIT
"""
"""Docker-like ip6tables chains, an admin rule, a DROP policy on FORWARD (iptables backend)."""


def ip6tables_foreign(sandbox: Sandbox) -> str:
    """ip6tables-save without our lines, comments and counters (kept byte-identical)."""
    ours = re.compile(r"reconcile/v1|^:RECONCILE-|^-A RECONCILE-")
    return "\n".join(re.sub(r" \[\d+:\d+\]$", "", line) for line in sandbox.run("ip6tables-save").stdout.splitlines()
                     if not line.startswith("#") and not ours.search(line))


def ip6tables_ours(sandbox: Sandbox) -> list[str]:
    return [line for line in sandbox.run("ip6tables-save").stdout.splitlines()
            if "reconcile/v1" in line or line.startswith((":RECONCILE-", "-A RECONCILE-"))]
