"""Our firewall rules as the end-to-end tests see them, whichever backend the product uses in a
sandbox: iptables-nft (our lines of `iptables-save`) or nftables (our `inet` table, as `nft
list` prints it). The backend is the one the CLI would pick right now (the environment's
RECONCILE_FIREWALL_BACKEND or the default, `auto` deciding on the sandbox's own state), asked
of the product itself, so a suite run under either backend reads and drifts the right rules.

IPv6: the iptables backend keeps its IPv6 rules in ip6tables (`ip6=True` reads and drifts
those); the nftables backend keeps both families in its one `inet` table, where `ip6` changes
nothing (a rule's text says its family)."""

from __future__ import annotations

import re
import sys

from kernel.netfilter import IptablesNft
from kernel.netfilter_nft import Nftables
from specs.names import NFT_TABLE
from tests.firewall_canaries import ip6tables_ours
from tests.firewall_support import our_rules as our_iptables_rules
from tests.sandbox import Sandbox

IPTABLES, NFTABLES = IptablesNft.name, Nftables.name
OUR_TABLE = f"inet {NFT_TABLE}"

_WHICH = ("from controllers.firewall import backends\n"
          "from reconcile.engine.settings import Settings\n"
          "print(backends(Settings.resolve(None, None).firewall_backend)[0].name)\n")
_HANDLE = re.compile(r" # handle (\d+)$")


def backend_in_use(sandbox: Sandbox) -> str:
    """IPTABLES or NFTABLES: what `reconcile apply` would write with in this sandbox now."""
    return sandbox.run(sys.executable, "-c", _WHICH).stdout.strip()


def our_rules(sandbox: Sandbox, backend: str) -> list[str]:
    """Every line of ours: iptables-save's (our chains and commented rules) then ip6tables-save's
    (prefixed `ip6 `), or our nftables table's listing without handles; [] when nothing of ours
    is there."""
    if backend == IPTABLES:
        return our_iptables_rules(sandbox) + [f"ip6 {line}" for line in ip6tables_ours(sandbox)]
    listed = sandbox.run("nft", "list", "table", *OUR_TABLE.split(), check=False)
    return [line.strip() for line in listed.stdout.splitlines()] if listed.returncode == 0 else []


def chain_rules(sandbox: Sandbox, backend: str, chain: str, ip6: bool = False) -> list[str]:
    """The rule specs of one of our chains in kernel order, as the backend prints them (what
    `reconcile diff` prints after `-A CHAIN`)."""
    if backend == IPTABLES:
        prefix = f"-A {chain} "
        return [line[len(prefix):] for line in sandbox.run(f"{_tool(ip6)}-save").stdout.splitlines()
                if line.startswith(prefix)]
    return [spec for spec, _ in _nft_chain(sandbox, chain)]


def delete_rule(sandbox: Sandbox, backend: str, chain: str, spec: str, ip6: bool = False) -> None:
    """Delete one of our rules by hand, as an admin would on that backend."""
    if backend == IPTABLES:
        table = _iptables_table(sandbox, chain, ip6)
        sandbox.sh(f"{_tool(ip6)} -t {table} -D {chain} {spec}")
        return
    handle = next(h for s, h in _nft_chain(sandbox, chain) if s == spec)
    sandbox.run("nft", "delete", "rule", *OUR_TABLE.split(), chain, "handle", str(handle))


def flush_chain(sandbox: Sandbox, backend: str, chain: str, ip6: bool = False) -> None:
    if backend == IPTABLES:
        sandbox.run(_tool(ip6), "-t", _iptables_table(sandbox, chain, ip6), "-F", chain)
    else:
        sandbox.run("nft", "flush", "chain", *OUR_TABLE.split(), chain)


def _nft_chain(sandbox: Sandbox, chain: str) -> list[tuple[str, int]]:
    """(spec, handle) of every rule of a chain of our table (its base chain header left out)."""
    listed = sandbox.run("nft", "-a", "list", "chain", *OUR_TABLE.split(), chain).stdout
    return [(_HANDLE.sub("", line).strip(), int(m[1])) for line in listed.splitlines()
            if line.startswith("\t\t") and (m := _HANDLE.search(line)) and " hook " not in line]


def _tool(ip6: bool) -> str:
    return "ip6tables" if ip6 else "iptables"


def _iptables_table(sandbox: Sandbox, chain: str, ip6: bool) -> str:
    table = ""
    for line in sandbox.run(f"{_tool(ip6)}-save").stdout.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(f":{chain} "):
            return table
    raise AssertionError(f"no {_tool(ip6)} chain {chain}")
