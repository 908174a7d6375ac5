"""The native nftables backend: one `inet` table of our own, read with one `list table` and
written with one transaction per apply (all or nothing, the whole script), both through
libnftables in-process (nft's own library, through its official Python binding, Debian's
python3-nftables) rather than by running `nft`: measured here at 1000 rules, a one-rule delete
costs 0.4 ms in-process against 12-20 ms through `nft -f`, nearly all of it the grace period the
kernel waits for when a netlink socket that deleted nf_tables objects is closed (the `nft`
process pays it at exit, a kept session never does), and an add 0.2 ms against ~4 ms of
process start. The commands are nft's text syntax either way.

Same `Backend` shape as the iptables one (kernel.netfilter): the controller's backend-neutral
`Rule`s are rendered to the exact text `nft list` prints back, so observed and desired rules
compare as plain strings and the same per-owner diff holds. What differs is kept here:

- The hook chains are base chains of our own table (named like the built-in iptables chains
  they stand for, PREROUTING ... FORWARD), declared with their type, hook and priority; nothing
  is inserted into anyone else's table, nor can it be: a jump never leaves its table.
- Chains of both logical tables (nat, filter) share the one table; the layout given to the
  backend says which logical table each chain name belongs to, so a read comes back keyed like
  an iptables-save one.
- Both address families share it too (family inet): a rule without addresses (hooks,
  isolation, accepts) is one rule for IPv4 and IPv6 packets; an address match says its family
  (`ip saddr`, `ip6 daddr`) and so does a DNAT (`dnat ip to 10.0.0.2:80`, `dnat ip6 to
  [fd00::2]:80`). A `dnat ip` rule without an `ip` match is inert on an IPv6 packet (the
  kernel's inet NAT expression skips a packet of the other family and the rule goes on), so
  an IPv4 and an IPv6 DNAT of one published port sit side by side without one shadowing the
  other.
- A rule is deleted by handle: `observe` keeps the handles it read, `apply` deletes by them
  (a rule that is gone since raises NetfilterError, so the controller re-observes and drops
  that deletion, as the iptables backend's refused `-D` does).
- The text form (`nft -a list`) is read rather than `nft -j`: it is the form `render` writes,
  so the comparison is exact with no second renderer for JSON expressions; `-a` adds handles.
- A read is kept while nf_tables' generation (the kernel's counter of committed transactions,
  any table, anyone's: NFT_MSG_GETGEN) stays the same: the watch agent's focused passes read a
  3,000-rule table again only when something in nf_tables changed (the listing and its parse
  were ~30% of a repair at a thousand containers). Our own batch of rule deletions and
  additions, when it is the only commit since the read, is played into the kept read (the
  new rules' handles come from our commit's notifications, or from a listing of their chain
  once one is needed): the agent's focused pass that confirms a repair lists nothing. (Not
  libnftables' echo of the new rules' handles: with echo on, a write fetches every table of
  the host first, 18 ms beside a foreign table of 3,000 rules against 0.14 ms.)
- Where nf_tables' notifications are followed (the watch agent: kernel/nft_changes.py), a
  moved generation does not list the table either: someone's deletions are played in by
  handle, and only a chain someone added rules to is listed again; a chain or the table
  created, changed or deleted, or notifications lost, list the table.
- Every pass over everything (each of a CLI run's passes, the watch agent's whole passes,
  across which the agent keeps the backend) lets the read go when rules of our table were
  played into it since it was last listed whole (`drop_derived_read`, called by the firewall
  controller's observation): what earlier passes derived is checked against a listing, and a
  table nobody changed is not listed every 30 s.
"""

from __future__ import annotations

import functools
import os
import re
import socket
import struct
import threading
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network
from typing import Protocol

from kernel import crashpoints
from kernel import rtnl_wire as wire
from kernel.events_wire import NFGENMSG_SIZE, NFNL_SUBSYS_NFTABLES, NFT_MSG_GETGEN, NFTA_GEN_ID
from kernel.netfilter import BaseChain, Chain, Family, NetfilterError, Op, OpKind, Rule, Ruleset, in_batch_order
from kernel.nft_changes import NftChanges
from kernel.nft_read import (
    ADDING,
    Handles,
    Read,
    after_batch,
    replayed,
    unknown_handles,
    with_chains,
    with_handles,
)

_CTSTATE_ORDER = ("INVALID", "ESTABLISHED", "RELATED", "NEW", "UNTRACKED")
"""ct state bits in the order nft prints them (bit order); SNAT/DNAT are `ct status` bits."""
_CTSTATUS = ("SNAT", "DNAT")

_CHAIN_OPEN = re.compile(r"^\tchain (\S+) \{")
_RULE_LINE = re.compile(r"^\t\t(?P<spec>.*) # handle (?P<handle>\d+)$")
_HEADER_LINE = re.compile(r"^\t\ttype \S+ hook \S+ ")
_IPV6_RULE = re.compile(r"(?:^| )(?:ip6 [sd]addr|dnat ip6 to) ")
"""What makes one of our rules IPv6-only, as render_nft writes it."""

NETLINK_NETFILTER = 12
_NFGENMSG = struct.Struct("=BBH")  # family (AF_UNSPEC), version (NFNETLINK_V0), resource id
_GEN_ID = struct.Struct(">I")


def read_generation(sock: socket.socket) -> int:
    """nf_tables' generation in the socket's namespace: it changes with every committed
    transaction, so two reads that find the same one saw the same rules."""
    for answer in wire.get(sock, NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETGEN, _NFGENMSG.pack(0, 0, 0)):
        found = wire.attributes(answer, NFGENMSG_SIZE).get(NFTA_GEN_ID)
        if found is not None:
            return int(_GEN_ID.unpack_from(found)[0])
    raise wire.NetlinkError(0, "nf_tables answered without a generation")


@dataclass(frozen=True)
class NftLayout:
    """Our table and its chains, as the controller names them (controllers.firewall_rules)."""

    table: str
    base_chains: tuple[BaseChain, ...]
    chain_tables: Mapping[str, str]
    """Logical table of every regular chain we own, by chain name."""

    def logical_table(self, chain: str) -> str | None:
        for base in self.base_chains:
            if base.name == chain:
                return base.table
        return self.chain_tables.get(chain)


def _quoted(word: str) -> str:
    if any(c in word for c in "\"\\\n"):
        raise ValueError(f"cannot render {word!r}: nft would escape it")
    return f'"{word}"'


def _ctstate(rule: Rule) -> list[str]:
    """`ct state [!] a,b` for conntrack states, `ct status [!] dnat` for the NAT bits: `!` is
    nft's "none of these bits", so a negated set reads as iptables' `! --ctstate A,B,DNAT`."""
    words: list[str] = []
    bang = ["!"] if rule.ctstate_negated else []
    states = [s.lower() for s in _CTSTATE_ORDER if s in rule.ctstate]
    if states:
        words += ["ct", "state", *bang, ",".join(states)]
    for status in (s for s in _CTSTATUS if s in rule.ctstate):
        words += ["ct", "status", *bang, status.lower()]
    return words


def _address_match(key: str, network: IPv4Network | IPv6Network, negated: bool = False) -> list[str]:
    """`ip saddr 10.0.0.0/8`, `ip6 daddr != ::1`: nft prints a single address without its
    prefix."""
    single = network.prefixlen == network.max_prefixlen
    return ["ip6" if network.version == 6 else "ip", key, *(["!="] if negated else []),
            str(network.network_address) if single else str(network)]


_VERDICTS = {"ACCEPT": ["accept"], "DROP": ["drop"], "MASQUERADE": ["masquerade"]}


def render_nft(rule: Rule) -> str:
    """The rule as `nft list` prints it back: addresses, interfaces, ports, address type,
    conntrack, then the verdict or NAT statement, then the comment (nft keeps expressions in
    the order given and prints the comment last)."""
    words: list[str] = []
    if rule.source is not None:
        words += _address_match("saddr", rule.source)
    if rule.destination is not None:
        words += _address_match("daddr", rule.destination, rule.destination_negated)
    for key, iface in (("iifname", rule.in_iface), ("oifname", rule.out_iface)):
        if iface is not None:
            words += [key, *(["!="] if iface.negated else []), _quoted(iface.name)]
    if rule.protocol is not None:
        words += [rule.protocol, "dport", str(rule.dport)] if rule.dport is not None else [
            "meta", "l4proto", rule.protocol]
    if rule.dst_local:
        words += ["fib", "daddr", "type", "local"]
    words += _ctstate(rule)
    if rule.target == "DNAT":
        if rule.to_destination is None:
            raise ValueError("a DNAT rule needs to_destination")
        address, port = rule.to_destination
        words += ["dnat", "ip6", "to", f"[{address}]:{port}"] if address.version == 6 else [
            "dnat", "ip", "to", f"{address}:{port}"]
    else:
        words += _VERDICTS.get(rule.target, ["jump", rule.target])
    words += ["comment", _quoted(rule.comment)]
    return " ".join(words)


def parse_list(text: str, layout: NftLayout) -> Read:
    """`nft -a list table inet <ours>` -> chains by logical table (chains the layout does not
    know go under the table name "inet": not ours, never touched) and the handles of every
    rule by (chain, spec), in kernel order."""
    tables: dict[str, dict[str, list[str]]] = {}
    handles: Handles = {}
    rules: list[str] | None = None
    chain = ""
    for line in text.splitlines():
        if opened := _CHAIN_OPEN.match(line):
            chain = opened[1]
            rules = tables.setdefault(layout.logical_table(chain) or "inet", {}).setdefault(chain, [])
        elif line == "\t}":
            rules = None
        elif rules is not None and (match := _RULE_LINE.match(line)) and not _HEADER_LINE.match(line):
            rules.append(match["spec"])
            handles.setdefault((chain, match["spec"]), []).append(int(match["handle"]))
    ruleset = Ruleset({table: {name: Chain(name, tuple(specs)) for name, specs in chains.items()}
                       for table, chains in tables.items()})
    return ruleset, handles


def nft_script(ops: Sequence[Op], layout: NftLayout, ruleset: Ruleset,
               handles: Mapping[tuple[str, str], Sequence[int | None]]) -> str:
    """One transaction (a script in nft's syntax): chains declared (and emptied) first, rules
    deleted by handle, inserted, appended, chains flushed; doomed chains are all flushed before
    any is deleted (ours jump to each other), and the table goes with its last chain."""
    where = f"inet {layout.table}"
    bases = {base.name: base for base in layout.base_chains}
    left = {chain: list(found) for chain, found in handles.items()}
    lines = [f"add table {where}"]
    for op in in_batch_order(ops):
        if op.kind is OpKind.DECLARE_CHAIN:
            base = bases.get(op.chain)
            lines += [f"add chain {where} {op.chain}" + (f" {base.declaration}" if base else ""),
                      f"flush chain {where} {op.chain}"]
        elif op.kind is OpKind.DELETE_RULE:
            found = left.get((op.chain, op.spec))
            if not found or found[0] is None:
                raise NetfilterError(f"no such rule in {op.chain}: {op.spec}")
            lines.append(f"delete rule {where} {op.chain} handle {found.pop(0)}")
        elif op.kind in ADDING:
            verb = "insert" if op.kind is OpKind.INSERT_RULE else "add"
            lines.append(f"{verb} rule {where} {op.chain} {op.spec}")
        else:
            lines.append(f"flush chain {where} {op.chain}")
    doomed = [op.chain for op in ops if op.kind is OpKind.DELETE_CHAIN]
    lines += [f"delete chain {where} {chain}" for chain in doomed]
    present = {name for chains in ruleset.tables.values() for name in chains}
    declared = {op.chain for op in ops if op.kind is OpKind.DECLARE_CHAIN}
    if doomed and not (present | declared) - set(doomed):
        lines.append(f"delete table {where}")
    return "".join(f"{line}\n" for line in lines)


class NftSession(Protocol):
    def cmd(self, text: str) -> tuple[int, str, str]:
        """Run nft commands (text syntax, one transaction); (status, output, errors)."""
        ...

    def generation(self) -> int | None:
        """nf_tables' generation now (see read_generation), or None when it cannot be read."""
        ...


_FORGET_LISTING = "list flowtables"
"""Run after each listing. A context keeps the cache its last command built until a command
needs another, and a listing's holds every rule it printed: 5.5 MB of the process's heap after
a table of 3,000 rules, 1.7 MB in the converged watch agent at 1,000 ports (the DNAT chain it
listed last), measured. Listing the host's flowtables (none of ours; an admin's are few) needs
next to no cache, so it drops that one (~0.06 ms, and the next write no longer frees it)."""


class Libnftables:
    """One libnftables context for the process: its netlink socket stays open, so no command
    waits for the kernel's release of what an earlier one deleted. Handles are printed (rules
    are deleted by them). Calls are serialised: a context is not thread-safe. A listing's cache
    is not kept (see _FORGET_LISTING)."""

    def __init__(self) -> None:
        import nftables  # python3-nftables: imported only when the backend is used

        self._nft = nftables.Nftables()
        self._nft.set_handle_output(True)
        self._lock = threading.Lock()
        self._generations = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER)

    def cmd(self, text: str) -> tuple[int, str, str]:
        with self._lock:
            status, output, errors = self._nft.cmd(text)
            if text.startswith("list "):
                self._nft.cmd(_FORGET_LISTING)
        return status, output, errors

    def generation(self) -> int | None:
        with self._lock:
            try:
                return read_generation(self._generations)
            except OSError:
                return None


NOTIFIED_WITHIN = 0.05
"""Seconds to wait for the notifications of a generation already committed (they are on their
way to the agent's event loop) before listing instead."""


@functools.cache
def open_session() -> NftSession | None:
    """The process's session when libnftables and its binding are installed (packages
    libnftables1 and python3-nftables) and the kernel answers (nf_tables built in or loaded);
    else None. One per process: the watch agent opens a controller per pass, and a context
    closed after a delete would wait out the kernel's grace period each time."""
    before = _open_fds()
    try:
        session = Libnftables()
    except (ImportError, OSError):
        return None
    status, _, _ = session.cmd("list tables")
    for fd in _open_fds() - before:
        # libnftables' netlink socket is not close-on-exec: a program we run (every subprocess
        # closes inherited fds already) must never get a socket that speaks for root to the
        # host's nf_tables.
        os.set_inheritable(fd, False)
    return session if status == 0 else None


def _open_fds() -> set[int]:
    """This process's sockets (the listing's own directory fd is gone once it is read)."""
    fds = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                fds.add(int(name))
        except FileNotFoundError:
            continue
    return fds


_JUMP = re.compile(r'(?<![\w"-])(?:jump|goto) "?([^\s",}]+)')


def _jumped_to(spec: str) -> tuple[str, ...]:
    """Every chain a rule as listed jumps or goes to, once each: its verdict, and any verdict
    map's (`vmap { 10.0.0.1 : jump X, ... }`), but not words of its comment (printed last)."""
    statements = spec.split(' comment "', 1)[0]
    return tuple(dict.fromkeys(_JUMP.findall(statements)))


@functools.lru_cache(maxsize=8192)
def _ipv6_only(spec: str) -> bool:
    """Whether one of our rules, as listed, is IPv6-only: a pure function of its text, asked
    again of each rule on every read of a changed ruleset (a thousand ports: 3,000 rules)."""
    return bool(_IPV6_RULE.search(spec))


class Nftables:
    """Our own `inet` table on the host's nf_tables, through an NftSession."""

    name = "nftables"

    def __init__(self, layout: NftLayout, session: NftSession, changes: NftChanges | None = None):
        if changes is not None and changes.table != layout.table:
            raise ValueError(f"notifications of table {changes.table} cannot keep a read of {layout.table}")
        self.layout = layout
        self.base_chains = layout.base_chains
        self._session = session
        self._changes = changes
        """What each generation changed in our table, when someone follows the notifications
        (the watch agent); None: any change of generation lists the table again."""
        self._ruleset = Ruleset({})
        self._handles: Handles = {}
        self._read_at: int | None = None
        """nf_tables' generation the kept read is current for: taken just before the listing,
        the one our own batch committed (played into the read), or the one the notifications
        brought the read to."""
        self._added: tuple[int, Sequence[Op]] | None = None
        """Our last batch and its generation, while the handles of the rules it added are not
        known (the notifications of that commit tell them)."""
        self._derived = False
        """Whether rules of our table were played into the read (our batches, someone's
        deletions the notifications told) since it was last listed whole. A catch-up over other
        tables' commits only, or one whose changed chains were all listed again, does not
        count."""

    def render(self, rule: Rule) -> str:
        return render_nft(rule)

    def tables(self, table: str, family: Family) -> tuple[str, ...]:
        return (table,)  # inet: one rule whatever its family

    def is_ipv6(self, table: str, spec: str) -> bool:
        return _ipv6_only(spec)

    def jump_targets(self, table: str, spec: str) -> tuple[tuple[str, str], ...]:
        return tuple((self.layout.logical_table(chain) or "inet", chain) for chain in _jumped_to(spec))

    def chain_name(self, table: str, chain: str) -> str:
        return f"inet {self.layout.table} {chain}"

    def batches(self, ops: Sequence[Op]) -> list[list[Op]]:
        return [list(ops)] if ops else []

    def observe(self) -> Ruleset:
        """The last read again (the same object) while nf_tables has committed nothing since;
        brought up to date from the notifications of what was committed since, when they are
        followed and all known; else the table listed anew. The generation is taken before
        listing, so a change during the listing is seen by the next call."""
        generation = self._session.generation()
        if generation is not None and generation == self._read_at:
            return self._ruleset
        if generation is not None and self._read_at is not None and self._catch_up(self._read_at, generation):
            self._read_at = generation
            return self._ruleset
        self._read_at, self._added, self._derived = None, None, False
        status, output, errors = self._session.cmd(f"list table inet {self.layout.table}")
        if status != 0:
            if "No such file or directory" not in errors:
                raise NetfilterError(f"nft list failed: {errors.strip()}")
            self._ruleset, self._handles = Ruleset({}), {}  # no table of ours: nothing to read
        else:
            self._ruleset, self._handles = parse_list(output, self.layout)
        self._read_at = generation
        return self._ruleset

    def _catch_up(self, read_at: int, generation: int) -> bool:
        """Whether the kept read was brought to `generation` from the notifications: someone's
        deletions played in by handle, the chains they added rules to listed again (a rule
        deleted behind the agent's back: no listing at all, where the whole table was 3,000
        rules at a thousand containers)."""
        if self._changes is None:
            return False
        self._learn_added_handles()
        changes = self._changes.since(read_at, generation, NOTIFIED_WITHIN)
        if changes is None:
            return False
        self._ruleset, self._handles, relist = replayed(self._ruleset, self._handles, changes)
        self._derived = self._derived or any(change.chain not in relist for change in changes)
        return self._list_again(relist)  # failing, the caller lists the whole table

    def apply(self, ops: Sequence[Op]) -> None:
        if not ops:
            return
        self._know_handles(ops)
        script = nft_script(ops, self.layout, self._ruleset, self._handles)
        read_at, self._read_at = self._read_at, None
        if read_at is not None and self._session.generation() != read_at:
            read_at = None  # the read is not followed: the next observe lists the table
        crashpoints.step("nft")
        status, _, errors = self._session.cmd(script)
        if status != 0:
            raise NetfilterError(f"nft refused the batch: {errors.strip()}")
        if read_at is not None:
            self._play_in_own_batch(ops, read_at)

    def _play_in_own_batch(self, ops: Sequence[Op], read_at: int) -> None:
        """Keep the read, with this batch of rules played into it, when the batch was the only
        commit since the read (nf_tables' generation moved by exactly one): a repair's
        confirming focused pass then lists nothing (the chains it changed were listed again
        before: the DNAT chain alone, a third of our 3,000 rules, ~9 ms), and when it did rules
        only (after_batch refuses anything more). Anything else leaves the whole table to the
        next observe. The new rules' handles come from the notifications of this commit, or
        from a listing of their chain once one is needed."""
        generation = self._session.generation()
        if generation != read_at + 1:
            return
        after = after_batch(self._ruleset, self._handles, ops)
        if after is None:
            return
        self._ruleset, self._handles = after
        self._read_at, self._added, self._derived = generation, (generation, ops), True

    def drop_derived_read(self) -> None:
        if self._derived:
            self._read_at = None

    def _learn_added_handles(self) -> None:
        """The handles of the rules our last batch added, from its commit's notifications.
        Before any replay: a deletion of one of them by someone else names a handle the read
        must know, or its whole chain is listed again."""
        if self._added is None or self._changes is None:
            return
        generation, ops = self._added
        commit = self._changes.since(generation - 1, generation, NOTIFIED_WITHIN)
        if commit is not None:
            self._handles = with_handles(self._handles, ops, commit)
        self._added = None

    def _know_handles(self, ops: Sequence[Op]) -> None:
        """The handles the batch's deletions need, where one is of a rule we added and did not
        learn the handle of: from the notifications, else by listing its chain."""
        if not unknown_handles(self._handles, ops):
            return
        self._learn_added_handles()
        if not self._list_again(unknown_handles(self._handles, ops)):
            # a chain that cannot be listed alone: the whole table, every handle with it
            self._read_at = None
            self.observe()

    def _list_again(self, chains: Collection[str]) -> bool:
        """These chains of our table listed into the read (one listing a call: libnftables
        prints nothing for two); False when one cannot be, the read then left without those
        chains' listings (the caller lists the whole table)."""
        listings = []
        for chain in sorted(chains):
            status, output, _ = self._session.cmd(f"list chain inet {self.layout.table} {chain}")
            if status != 0:
                return False
            listings.append(output)
        if listings:
            self._ruleset, self._handles = with_chains(self._ruleset, self._handles,
                                                       *parse_list("".join(listings), self.layout))
        return True
