"""Shared by the firewall tests (no tests here): a compact description of stacks -> Desired, and
a driver that runs the firewall controller inside a sandbox:

    python -m tests.firewall_support plan|apply < description.json

prints {"changes": [...], "issues": [...], "errors": [...]} as JSON (errors: what apply
raised). The description:

    {"scope": ["demo"],
     "stacks": {"demo": {"networks": {"front": {"subnet": "10.88.1.0/24", "bridge": "rcbr0",
                                                "internal": false}},
                         "containers": {"web": {"networks": {"front": {"ip": "10.88.1.10"}},
                                                "ports": ["8080:80", "127.0.0.1:8443:443/udp"]}}}}}
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from controllers.base import Desired
from controllers.errors import ApplyErrors
from controllers.firewall import FirewallController
from kernel import netfilter
from kernel.netfilter import Chain, Op, OpKind, Ruleset
from specs.model import Stack
from specs.names import ALIAS_PREFIX, NFT_TABLE, OUR_CHAINS
from tests.sandbox import Sandbox

DEFAULT_COMMAND = ["/bin/true"]
BUILTIN_CHAINS = {"nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
                  "filter": ("INPUT", "FORWARD", "OUTPUT")}
FRESH = Ruleset({prefix + table: {name: Chain(name, ()) for name in chains}
                 for prefix in ("", netfilter.IP6_PREFIX) for table, chains in BUILTIN_CHAINS.items()})
"""What iptables-save and ip6tables-save show of a fresh namespace once the tables exist."""


def build_stack(name: str, doc: Mapping[str, Any]) -> Stack:
    """A stack from its file form (every container gets a command: the firewall ignores it)."""
    containers = {key: {"command": DEFAULT_COMMAND, **c} for key, c in doc.get("containers", {}).items()}
    return Stack.model_validate({"name": name, **doc, "containers": containers})


def build_desired(doc: Mapping[str, Any]) -> Desired:
    """Stacks in file form by name, `scope` (default: all of them); container addresses are the
    static `ip` of each attachment, as IPAM would hand them over."""
    stacks = {name: build_stack(name, s) for name, s in doc.get("stacks", {}).items()}
    endpoints = [(stack.name, key, net, attachment) for stack in stacks.values()
                 for key, container in stack.containers.items() for net, attachment in container.networks.items()]
    return Desired(stacks=stacks, scope=frozenset(doc.get("scope", stacks)),
                   addresses={(s, c, n): a.ip for s, c, n, a in endpoints if a.ip is not None},
                   addresses6={(s, c, n): a.ip6 for s, c, n, a in endpoints if a.ip6 is not None})


class FakeBackend(netfilter.IptablesNft):
    """The iptables-nft backend's semantics on an in-memory ruleset, for pure tests: render,
    placement and batching are the real ones; a batch applies per table, all or nothing, and
    deleting a missing rule fails."""

    name = "fake"

    def __init__(self, ruleset: Ruleset | None = None):
        super().__init__()
        self.ruleset = ruleset or FRESH
        self.applied: list[list[Op]] = []

    def observe(self) -> Ruleset:
        return self.ruleset

    def apply(self, ops: Sequence[Op]) -> None:
        self.applied.append(list(ops))
        tables = {t: {n: list(c.rules) for n, c in chains.items()}
                  for t, chains in self.ruleset.tables.items()}
        for op in sorted(ops, key=lambda op: op.kind):
            _fake_op(tables.setdefault(op.table, {}), op)
        self.ruleset = Ruleset({t: {n: Chain(n, tuple(r)) for n, r in chains.items()}
                                for t, chains in tables.items()})


def _fake_op(chains: dict[str, list[str]], op: Op) -> None:
    if op.kind in (OpKind.DECLARE_CHAIN, OpKind.FLUSH_CHAIN):
        chains[op.chain] = []
    elif op.kind is OpKind.DELETE_CHAIN:
        del chains[op.chain]
    elif op.kind is OpKind.DELETE_RULE:
        if op.spec not in chains.get(op.chain, []):
            raise netfilter.NetfilterError(f"no such rule in {op.chain}: {op.spec}")
        chains[op.chain].remove(op.spec)
    else:
        rules = chains[op.chain]
        rules.insert(0 if op.kind is OpKind.INSERT_RULE else len(rules), op.spec)


def run_controller(sandbox: Sandbox, verb: str, doc: Mapping[str, Any],
                   backend: str = "iptables") -> dict[str, Any]:
    """`plan` or `apply` with the firewall controller inside the sandbox (see main), on the
    given backend (auto, nftables, iptables)."""
    result = sandbox.run("env", f"RECONCILE_FIREWALL_BACKEND={backend}", sys.executable, "-m",
                         "tests.firewall_support", verb, input=json.dumps(doc))
    return json.loads(result.stdout)


def heads(result: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    return [(c["action"], c["kind"], c["key"]) for c in result["changes"]]


_OUR_CHAIN_NAMES = {chain for _, chain in OUR_CHAINS}
_COUNTERS = re.compile(r" \[\d+:\d+\]$")


def _is_ours(line: str) -> bool:
    chain = line[1:].split(" ", 1)[0] if line.startswith(":") else line[3:].split(" ", 1)[0]
    return ALIAS_PREFIX in line or (line[:1] in ":-" and chain in _OUR_CHAIN_NAMES)


def foreign_rules(sandbox: Sandbox) -> str:
    """The full `iptables-save` minus our lines (rules carrying our comment, our chains), its
    timestamps and packet counters: what must stay byte-identical through anything we do."""
    text = sandbox.run("iptables-save").stdout
    return "\n".join(_COUNTERS.sub("", line) for line in text.splitlines()
                     if not line.startswith("#") and not _is_ours(line))


def our_rules(sandbox: Sandbox) -> list[str]:
    return [line for line in sandbox.run("iptables-save").stdout.splitlines() if _is_ours(line)]


_NFT_COUNTER = re.compile(r" counter packets \d+ bytes \d+")


def _nft_tables(sandbox: Sandbox) -> dict[str, str]:
    """`nft list ruleset` split per table ("family name" -> its text, counters left out)."""
    tables: dict[str, str] = {}
    name = ""
    for line in sandbox.run("nft", "list", "ruleset").stdout.splitlines():
        if line.startswith("table "):
            name = line[len("table "):].removesuffix(" {")
        tables[name] = tables.get(name, "") + _NFT_COUNTER.sub("", line) + "\n"
    return tables


def foreign_nft(sandbox: Sandbox) -> dict[str, str]:
    """Every nf_tables table but the nftables backend's own, as `nft list ruleset` prints it."""
    return {name: text for name, text in _nft_tables(sandbox).items() if name != f"inet {NFT_TABLE}"}


def our_nft(sandbox: Sandbox) -> str | None:
    """The nftables backend's table as nft lists it, or None when it does not exist."""
    return _nft_tables(sandbox).get(f"inet {NFT_TABLE}")


def main(verb: str) -> None:
    desired = build_desired(json.load(sys.stdin))
    controller = FirewallController.for_host(os.environ.get("RECONCILE_FIREWALL_BACKEND", "iptables"))
    diff = controller.diff(desired, controller.observe())
    errors: list[str] = []
    if verb == "apply" and not diff.issues:
        try:
            controller.apply(diff.changes)
        except ApplyErrors as exc:
            errors = [str(e) for e in exc.errors]
    print(json.dumps({"changes": [c.to_json() for c in diff.changes],
                      "issues": [{"stack": i.stack, "loc": list(i.loc), "message": i.message}
                                 for i in diff.issues], "errors": errors}))


if __name__ == "__main__":
    main(sys.argv[1])
