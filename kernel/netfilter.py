"""Netfilter rules behind a small backend interface: render a rule, observe the ruleset, apply a
batch of operations atomically.

The controller builds backend-neutral `Rule` records and compares the text a backend renders
for them with the text the backend reads back; each backend implements `Backend`. This module
holds iptables on nf_tables (iptables 1.8.9; kernel.netfilter_nft the native nftables one):

- A rule has an address family (`Rule.family`): IPv4 or IPv6 when it matches or NATs to an
  address, both when it only matches interfaces, states or ports (hooks, isolation, accepts).
  IPv6 rules live in ip6tables' tables, which this backend shows to the controller as the
  logical tables `ip6 nat` and `ip6 filter` (IP6_PREFIX): a rule of both families is placed
  twice, once in `nat`/`filter` and once in `ip6 nat`/`ip6 filter`, the same text in each
  (`tables`). The controller's per-owner diff is unchanged: an owner just has more rules.
- Observe is ONE `iptables-save` and ONE `ip6tables-save` (every table of a family at once);
  apply is at most ONE `iptables-restore --noflush` and ONE `ip6tables-restore --noflush`,
  each a batch of its own (`batches`). iptables-nft commits each table's section (`*nat` ...
  `COMMIT`) as one nf_tables transaction: a failed line rolls its whole table back, nothing
  half-applied.
- `render` prints a rule exactly as `iptables-save` prints it back (match order, quoting,
  /32 suffixes), so observed and desired rules compare as plain strings.
- Never run `iptables-legacy` (nor `ip6tables-legacy`), not even to list: it instantiates a legacy table that cannot be
  removed and makes every later iptables call warn. The backend is detected from `iptables -V`
  and /proc/net/ip_tables_names instead.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum, IntEnum
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path
from typing import Protocol

from kernel import crashpoints, sysctl

LEGACY_TABLES = Path("/proc/net/ip_tables_names")
"""Tables of the legacy (x_tables) backend that are instantiated in this namespace."""

_CTSTATE_ORDER = ("INVALID", "NEW", "RELATED", "ESTABLISHED", "UNTRACKED", "SNAT", "DNAT")
"""The order iptables prints conntrack states in, whatever order they were given in."""

_UNQUOTED = re.compile(r"^[A-Za-z0-9_-]+$")
"""Characters xtables_save_string prints without quotes; anything else quotes the whole word."""


IP6_PREFIX = "ip6 "
"""Prefixed to an ip6tables table's name (`ip6 nat`, `ip6 filter`) in the iptables backend's
rulesets and operations: the plan shows it, so a v6 rule reads as `ip6 nat: -A ...`."""


class NetfilterError(Exception):
    """The backend is unusable on this host, or a batch was refused (and rolled back)."""


@dataclass(frozen=True)
class Iface:
    """An interface match: `-i/-o NAME`, or `! -i/-o NAME` when negated."""

    name: str
    negated: bool = False


class Family(Enum):
    """The address family a rule applies to."""

    IPV4 = 4
    IPV6 = 6
    BOTH = 0


@dataclass(frozen=True)
class Rule:
    """One rule, backend-neutral: only the matches and targets reconcile uses."""

    table: str
    """The logical table: nat or filter."""
    chain: str
    target: str
    """ACCEPT, DROP, MASQUERADE, DNAT, or the name of a chain to jump to."""
    comment: str
    source: IPv4Network | IPv6Network | None = None
    destination: IPv4Network | IPv6Network | None = None
    destination_negated: bool = False
    """`! -d`: every destination but `destination`."""
    in_iface: Iface | None = None
    out_iface: Iface | None = None
    protocol: str | None = None
    dport: int | None = None
    dst_local: bool = False
    """`-m addrtype --dst-type LOCAL`: any address of this host, 127.0.0.1 included."""
    ctstate: tuple[str, ...] = ()
    ctstate_negated: bool = False
    to_destination: tuple[IPv4Address | IPv6Address, int] | None = None
    """DNAT target address and port."""

    def __post_init__(self) -> None:
        _family_of(self)  # a rule mixing families is refused when built, not when rendered

    @property
    def family(self) -> Family:
        """The family of its addresses; BOTH for a rule without any (it matches interfaces,
        states or ports only, which apply to IPv4 and IPv6 packets alike)."""
        return _family_of(self)


def _family_of(rule: Rule) -> Family:
    addresses = [rule.source, rule.destination, rule.to_destination[0] if rule.to_destination else None]
    versions = {address.version for address in addresses if address is not None}
    if len(versions) > 1:
        raise ValueError(f"a rule cannot mix IPv4 and IPv6 addresses: {rule}")
    return Family(versions.pop()) if versions else Family.BOTH


@dataclass(frozen=True)
class Chain:
    name: str
    rules: tuple[str, ...]
    """Rule specs in kernel order, as rendered (without the `-A CHAIN ` prefix)."""


@dataclass(frozen=True, eq=False)
class Ruleset:
    """Every chain of every table, as the backend reads them back. One read is equal only to
    itself (hashed by identity, so what is derived from a read can be kept with it); compare
    `tables` for content."""

    tables: Mapping[str, Mapping[str, Chain]]

    def chain(self, table: str, name: str) -> Chain | None:
        return self.tables.get(table, {}).get(name)


@dataclass(frozen=True)
class BaseChain:
    """A chain of ours attached to a netfilter hook (what a built-in chain is to iptables)."""

    table: str
    """The logical table (nat, filter) whose rules it holds."""
    name: str
    type: str
    hook: str
    priority: str
    """As nft takes it: a keyword (dstnat, srcnat, filter) or a number."""

    @property
    def declaration(self) -> str:
        return f"{{ type {self.type} hook {self.hook} priority {self.priority}; policy accept; }}"


class OpKind(IntEnum):
    """Operations of a batch, in the order they run within a table: chains exist before rules
    go in, rules are deleted before chains they reference are flushed and removed."""

    DECLARE_CHAIN = 0  # create the chain, or empty it if it exists
    DELETE_RULE = 1
    INSERT_RULE = 2  # at the top of the chain
    APPEND_RULE = 3
    FLUSH_CHAIN = 4  # empty it, keep it (a rule we may not delete still jumps to it)
    DELETE_CHAIN = 5  # flush and remove


@dataclass(frozen=True)
class Op:
    kind: OpKind
    table: str
    chain: str
    spec: str = ""


def in_batch_order(ops: Iterable[Op]) -> list[Op]:
    """The ops as a batch runs them: by kind (OpKind's order), each kind in the given order.
    What the kernel notifies of a batch follows it, so whatever matches notifications to ops
    must order them so too."""
    return sorted(ops, key=lambda op: op.kind)


class Dialect(Protocol):
    """The pure half of a backend: where a rule goes and how it reads back."""

    def render(self, rule: Rule) -> str:
        """The rule's spec exactly as `observe` reads it back."""
        ...

    def tables(self, table: str, family: Family) -> tuple[str, ...]:
        """The backend's tables that hold a rule of this logical table and family."""
        ...

    def is_ipv6(self, table: str, spec: str) -> bool:
        """Whether a rule read back from `table` applies to IPv6 packets only."""
        ...

    def jump_targets(self, table: str, spec: str) -> tuple[tuple[str, str], ...]:
        """The chains, as (table, name), that a rule read back from `table` jumps or goes to."""
        ...

    def chain_name(self, table: str, chain: str) -> str:
        """A chain as the backend's own tools name it, for messages."""
        ...


class Backend(Dialect, Protocol):
    name: str
    base_chains: tuple[BaseChain, ...]
    """Hook chains the backend owns (nftables: base chains of its own table); empty when the
    hooks are the built-in chains of shared tables (iptables), which are never ours."""

    def __hash__(self) -> int:
        """By identity (what is derived from a backend's read is kept per backend)."""
        ...

    def observe(self) -> Ruleset:
        """One bulk read of every table."""
        ...

    def drop_derived_read(self) -> None:
        """Let the read kept go when rules were played into it (our own batches, the kernel's
        notifications) since it was last listed whole, so that the next observe lists it: a
        pass over everything checks what earlier passes derived. Nothing, for a backend that
        keeps no read."""
        ...

    def batches(self, ops: Sequence[Op]) -> list[list[Op]]:
        """The ops split into the batches `apply` takes, each atomic on its own (in order)."""
        ...

    def apply(self, ops: Sequence[Op]) -> None:
        """One batch of `batches`, atomic (per table): raises NetfilterError and changes
        nothing of a table whose part fails."""
        ...


Runner = Callable[..., "subprocess.CompletedProcess[str]"]
"""subprocess.run, or a stand-in for tests."""


def _quote(word: str) -> str:
    """iptables-save quoting: a word with anything but plain characters goes in double quotes."""
    if _UNQUOTED.match(word):
        return word
    if any(c in word for c in "\"'\\"):
        raise ValueError(f"cannot render {word!r}: quotes and backslashes would be escaped")
    return f'"{word}"'


def _iface(flag: str, iface: Iface | None) -> list[str]:
    if iface is None:
        return []
    return (["!"] if iface.negated else []) + [flag, iface.name]


def _network(network: IPv4Network | IPv6Network) -> str:
    return f"{network.network_address}/{network.prefixlen}"


def _endpoint(address: IPv4Address | IPv6Address, port: int) -> str:
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"


def render_iptables(rule: Rule) -> str:
    """The rule in the match order iptables-save (and ip6tables-save: `-s fd00::/64`, a /128
    suffix on one address, `--to-destination [fd00::2]:80`) prints: addresses, interfaces,
    protocol, then the matches, comment and target (an nf_tables rule keeps its expressions in
    this order)."""
    words: list[str] = []
    if rule.source is not None:
        words += ["-s", _network(rule.source)]
    if rule.destination is not None:
        words += [*(["!"] if rule.destination_negated else []), "-d", _network(rule.destination)]
    words += _iface("-i", rule.in_iface) + _iface("-o", rule.out_iface)
    if rule.protocol is not None:
        words += ["-p", rule.protocol]
        if rule.dport is not None:
            words += ["-m", rule.protocol, "--dport", str(rule.dport)]
    if rule.dst_local:
        words += ["-m", "addrtype", "--dst-type", "LOCAL"]
    if rule.ctstate:
        states = ",".join(s for s in _CTSTATE_ORDER if s in rule.ctstate)
        words += ["-m", "conntrack"] + (["!"] if rule.ctstate_negated else []) + ["--ctstate", states]
    words += ["-m", "comment", "--comment", _quote(rule.comment), "-j", rule.target]
    if rule.to_destination is not None:
        words += ["--to-destination", _endpoint(*rule.to_destination)]
    return " ".join(words)


_JUMP = re.compile(r"(?:^| )-[jg] (\S+)")


def _jump_target(spec: str) -> str | None:
    """The chain or target a rule jumps or goes to (`-j X` / `-g X`), if any: the last one, as
    iptables-save prints the target after every match (a comment may contain `-j` too)."""
    targets = _JUMP.findall(spec)
    return targets[-1] if targets else None


def parse_save(text: str, prefix: str = "") -> Ruleset:
    """`iptables-save` output -> chains by table (named `prefix` + table), rules in kernel order."""
    tables: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.startswith("*"):
            current = tables.setdefault(prefix + line[1:], {})
        elif line.startswith(":"):
            current.setdefault(line[1:].split(" ", 1)[0], [])
        elif line.startswith("-A "):
            chain, _, spec = line[3:].partition(" ")
            current.setdefault(chain, []).append(spec)
    return Ruleset({table: {name: Chain(name, tuple(rules)) for name, rules in chains.items()}
                    for table, chains in tables.items()})


def restore_script(ops: Sequence[Op]) -> str:
    """An `iptables-restore --noflush` (or ip6tables-restore: the ops of one family) script:
    one section per table, operations in OpKind order (stable within a kind, so appends keep
    the order they were given in)."""
    lines: list[str] = []
    for table in dict.fromkeys(op.table for op in ops):
        mine = sorted((op for op in ops if op.table == table), key=lambda op: op.kind)
        lines += [f"*{table.removeprefix(IP6_PREFIX)}", *(_op_line(op) for op in mine)]
        lines += [f"-X {op.chain}" for op in mine if op.kind is OpKind.DELETE_CHAIN]
        lines.append("COMMIT")
    return "".join(f"{line}\n" for line in lines)


def _op_line(op: Op) -> str:
    """DELETE_CHAIN only flushes here: every doomed chain is flushed before any is removed,
    since our chains jump to each other."""
    return {
        OpKind.DECLARE_CHAIN: f":{op.chain} - [0:0]",
        OpKind.DELETE_RULE: f"-D {op.chain} {op.spec}",
        OpKind.INSERT_RULE: f"-I {op.chain} 1 {op.spec}",
        OpKind.APPEND_RULE: f"-A {op.chain} {op.spec}",
        OpKind.FLUSH_CHAIN: f"-F {op.chain}",
        OpKind.DELETE_CHAIN: f"-F {op.chain}",
    }[op.kind]


def _failed_line(script: str, stderr: str) -> str:
    """iptables-restore names the failing line by number ("line 3 failed", or "Error occurred at
    line: 3" for a parse error); show the line itself."""
    match = re.search(r"line:? (\d+)", stderr)
    lines = script.splitlines()
    if match and 0 < int(match[1]) <= len(lines):
        return f" at `{lines[int(match[1]) - 1]}`"
    return ""


class IptablesNft:
    """iptables 1.8 on the nf_tables backend: iptables for IPv4, ip6tables for IPv6."""

    name = "iptables-nft"
    base_chains: tuple[BaseChain, ...] = ()

    def __init__(self, run: Runner = subprocess.run):
        self._run = run

    def render(self, rule: Rule) -> str:
        return render_iptables(rule)

    def tables(self, table: str, family: Family) -> tuple[str, ...]:
        v4 = (table,) if family is not Family.IPV6 else ()
        return v4 + ((IP6_PREFIX + table,) if family is not Family.IPV4 else ())

    def is_ipv6(self, table: str, spec: str) -> bool:
        return table.startswith(IP6_PREFIX)

    def jump_targets(self, table: str, spec: str) -> tuple[tuple[str, str], ...]:
        target = _jump_target(spec)
        return ((table, target),) if target else ()

    def chain_name(self, table: str, chain: str) -> str:
        return f"{table} {chain}"

    def observe(self) -> Ruleset:
        tables: dict[str, Mapping[str, Chain]] = {}
        for command, prefix in (("iptables-save", ""), ("ip6tables-save", IP6_PREFIX)):
            proc = self._run([command], capture_output=True, text=True)
            if proc.returncode != 0:
                raise NetfilterError(f"{command} failed: {proc.stderr.strip()}")
            tables.update(parse_save(proc.stdout, prefix).tables)
        return Ruleset(tables)

    def drop_derived_read(self) -> None:
        """Every observe reads: nothing kept."""

    def forward_drops(self) -> bool:
        """Whether the shared `filter FORWARD` chain of either family has policy DROP (Docker
        sets it): only a rule inside that chain can accept a forwarded packet for it."""
        for command in ("iptables-save", "ip6tables-save"):
            proc = self._run([command, "-t", "filter"], capture_output=True, text=True)
            if proc.returncode == 0 and any(line.startswith(":FORWARD DROP") for line in proc.stdout.splitlines()):
                return True
        return False

    def batches(self, ops: Sequence[Op]) -> list[list[Op]]:
        """IPv4 then IPv6: two restore commands, two transactions."""
        split = ([op for op in ops if not op.table.startswith(IP6_PREFIX)],
                 [op for op in ops if op.table.startswith(IP6_PREFIX)])
        return [batch for batch in split if batch]

    def apply(self, ops: Sequence[Op]) -> None:
        for batch in self.batches(ops):
            command = "ip6tables-restore" if batch[0].table.startswith(IP6_PREFIX) else "iptables-restore"
            script = restore_script(batch)
            crashpoints.step(command)
            proc = self._run([command, "--noflush"], input=script, capture_output=True, text=True)
            if proc.returncode != 0:
                raise NetfilterError(f"{command} refused the batch{_failed_line(script, proc.stderr)}: "
                                     f"{proc.stderr.strip()}")


def read_route_localnet(ifaces: Iterable[str] | None = None) -> dict[str, str]:
    """route_localnet of these interfaces (every one of this namespace by default; "0"/"1"):
    DNAT to 127.0.0.1 from the host routes a loopback-sourced packet out of the bridge, a
    martian unless this is set on the outgoing interface. A few named ones (a focused pass's)
    are kept open from pass to pass (kernel.sysctl)."""
    if ifaces is None:
        return sysctl.read_each(("net", "ipv4", "conf"), "route_localnet")
    values: dict[str, str] = {}
    for iface in sorted(ifaces):
        try:
            values[iface] = sysctl.read("net", "ipv4", "conf", iface, "route_localnet")
        except FileNotFoundError:  # the interface went away meanwhile
            continue
    return values


def set_route_localnet(iface: str, value: str) -> None:
    sysctl.write(value, "net", "ipv4", "conf", iface, "route_localnet")


def legacy_tables(path: Path = LEGACY_TABLES) -> list[str]:
    try:
        return path.read_text().split()
    except FileNotFoundError:
        return []


def detect(run: Runner = subprocess.run, legacy_path: Path = LEGACY_TABLES) -> IptablesNft:
    """The backend for this host: iptables must be the nf_tables variant."""
    try:
        version = run(["iptables", "-V"], capture_output=True, text=True).stdout.strip()
    except FileNotFoundError as exc:
        raise NetfilterError("iptables is not installed: reconcile needs iptables (nf_tables "
                             "backend) for published ports and masquerade") from exc
    if "nf_tables" in version:
        return IptablesNft(run)
    loaded = legacy_tables(legacy_path)
    where = f"; legacy tables in use: {', '.join(loaded)}" if loaded else ""
    raise NetfilterError(f"iptables on this host is the legacy backend ({version or 'unknown'}{where}); "
                         "reconcile needs the nf_tables backend: install iptables >= 1.8 and select "
                         "it with `update-alternatives --set iptables /usr/sbin/iptables-nft`")
