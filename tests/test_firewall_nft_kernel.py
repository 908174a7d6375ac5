"""The firewall controller on the nftables backend against the real kernel (inside a sandbox):
the rendered text reads back from `nft` verbatim, the round trip (apply, no-op, drift, repair,
scope, teardown leaving no table), switching backends both ways with nothing of the other
left, and foreign tables (Docker's iptables-nft chains, an admin's own inet table) byte-identical
throughout."""

from __future__ import annotations

import sys

import pytest

from controllers.firewall_rules import NFT_LAYOUT
from kernel.netfilter import IP6_PREFIX
from kernel.netfilter_nft import parse_list
from tests.firewall_canaries import DOCKER_NO_DROP, FOREIGN_INET
from tests.firewall_plans import BOTH, converge, desired
from tests.firewall_support import FakeBackend, foreign_nft, foreign_rules, heads, our_nft, our_rules, run_controller
from tests.sandbox import Sandbox

ADMIN = "inet rc-h17-admin"


@pytest.fixture
def host(sandbox: Sandbox) -> dict[str, str]:
    """Our bridges, Docker-like iptables-nft chains (FORWARD policy left ACCEPT: see
    docs/spec.md on a foreign DROP policy) and the admin's inet table; returns every foreign
    table as nft lists it."""
    sandbox.sh("for b in rcbr0 rcbr1 rcbr9; do ip link add $b type bridge; done")
    sandbox.run("iptables-restore", "--noflush", input=DOCKER_NO_DROP)
    sandbox.run("nft", "-f", "-", input=FOREIGN_INET)
    return foreign_nft(sandbox)


def _converged(sandbox: Sandbox, doc: dict, foreign: dict[str, str]) -> None:
    assert heads(run_controller(sandbox, "plan", doc, "nftables")) == []
    assert foreign_nft(sandbox) == foreign


def test_rendered_text_is_what_nft_lists(sandbox: Sandbox, host: dict[str, str]) -> None:
    run_controller(sandbox, "apply", BOTH, "nftables")
    fake = FakeBackend()
    converge(desired(BOTH["stacks"]), fake)  # the same rules, in iptables' chain order
    real, _ = parse_list(sandbox.run("nft", "-a", "list", "table", "inet", "reconcile").stdout, NFT_LAYOUT)
    for table, chains in fake.ruleset.tables.items():
        if table.startswith(IP6_PREFIX):
            continue  # iptables places a rule for both families twice, nft once
        for name, chain in chains.items():
            if chain.rules:
                assert len(real.tables[table][name].rules) == len(chain.rules), (table, name)
    assert our_rules(sandbox) == []  # nothing in iptables' tables


@pytest.mark.parametrize(("drift", "expected"), [
    ("nft flush chain inet reconcile RECONCILE-DNAT", ("create", "port", "demo/web/8080/tcp")),
    ("nft flush chain inet reconcile RECONCILE-SNAT", ("update", "firewall", "other/net")),
    ("nft flush chain inet reconcile FORWARD", ("update", "firewall", "chains")),
    ("nft add rule inet reconcile RECONCILE-ACCEPT accept", ("update", "firewall", "chains")),
    ("nft delete chain inet reconcile RECONCILE-FORWARD 2>/dev/null || "
     "(nft flush chain inet reconcile FORWARD && nft delete chain inet reconcile RECONCILE-FORWARD)",
     ("update", "firewall", "chains")),
    ("nft delete table inet reconcile", ("create", "firewall", "chains")),
])
def test_round_trip_repairs_drift(sandbox: Sandbox, host: dict[str, str], drift: str,
                                  expected: tuple[str, str, str]) -> None:
    first = run_controller(sandbox, "apply", BOTH, "nftables")
    assert ("create", "firewall", "chains") in heads(first) and first["errors"] == []
    _converged(sandbox, BOTH, host)
    assert heads(run_controller(sandbox, "apply", BOTH, "nftables")) == []
    sandbox.sh(drift)
    assert expected in heads(run_controller(sandbox, "plan", BOTH, "nftables"))
    assert run_controller(sandbox, "apply", BOTH, "nftables")["errors"] == []
    _converged(sandbox, BOTH, host)


def test_scope_and_teardown_leave_no_table(sandbox: Sandbox, host: dict[str, str]) -> None:
    run_controller(sandbox, "apply", BOTH, "nftables")
    run_controller(sandbox, "apply", {"stacks": {}, "scope": ["demo"]}, "nftables")
    ours = our_nft(sandbox) or ""
    assert "demo/" not in ours and "other/" in ours
    _converged(sandbox, {"stacks": {"other": BOTH["stacks"]["other"]}}, host)
    assert run_controller(sandbox, "apply", {"stacks": {}, "scope": ["other"]}, "nftables")["errors"] == []
    assert our_nft(sandbox) is None and foreign_nft(sandbox) == host


def test_switching_backends_both_ways_leaves_nothing_behind(sandbox: Sandbox, host: dict[str, str]) -> None:
    iptables_canary = foreign_rules(sandbox)
    run_controller(sandbox, "apply", BOTH, "iptables")
    only_iptables = our_rules(sandbox)

    moved = run_controller(sandbox, "apply", BOTH, "nftables")
    assert moved["errors"] == [] and our_rules(sandbox) == []
    assert ("delete", "firewall", "chains") in heads(moved)
    assert heads(run_controller(sandbox, "plan", BOTH, "nftables")) == []

    back = run_controller(sandbox, "apply", BOTH, "iptables")
    assert back["errors"] == [] and our_nft(sandbox) is None
    assert our_rules(sandbox) == only_iptables
    assert heads(run_controller(sandbox, "plan", BOTH, "iptables")) == []
    # iptables-restore instantiates the built-in chains it writes to (nat OUTPUT): compare the
    # iptables tables as iptables-save shows them (built-in chains always listed), the rest as nft.
    assert foreign_rules(sandbox) == iptables_canary
    assert foreign_nft(sandbox)[ADMIN] == host[ADMIN]


def test_a_switch_in_one_scope_keeps_the_other_stacks_rules_where_they_are(
        sandbox: Sandbox, host: dict[str, str]) -> None:
    run_controller(sandbox, "apply", BOTH, "iptables")
    run_controller(sandbox, "apply", {"stacks": {"demo": BOTH["stacks"]["demo"]}, "scope": ["demo"]}, "nftables")
    assert [rule for rule in our_rules(sandbox) if "demo/" in rule] == []
    assert [rule for rule in our_rules(sandbox) if "other/" in rule] != []  # not in scope: left in iptables
    assert "demo/" in (our_nft(sandbox) or "") and "other/" not in (our_nft(sandbox) or "")


def test_auto_picks_nftables_here(sandbox: Sandbox) -> None:
    code = "from controllers.firewall import backends; print(backends('auto')[0].name)"
    assert sandbox.python(code).stdout == "nftables\n"


def test_the_libnftables_socket_is_not_inherited_by_what_we_run(sandbox: Sandbox) -> None:
    """libnftables opens its netlink socket without close-on-exec; a program reconcile runs must
    never hold a socket that speaks for root to the host's nf_tables."""
    code = ("import os, subprocess\n"
            "from kernel.netfilter_nft import open_session\n"
            "assert open_session() is not None\n"
            "print(subprocess.run(['ls', '-l', '/proc/self/fd'], close_fds=False, capture_output=True,"
            " text=True).stdout.count('socket:'))\n")
    assert sandbox.run(sys.executable, "-c", code).stdout.strip() == "0"


LISTING_MEMORY = """
import ctypes
from kernel.netfilter_nft import open_session

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

mallinfo2 = ctypes.CDLL(None).mallinfo2
mallinfo2.restype = MallInfo2
session = open_session()
rules = "".join(f"add rule inet rc-h17-cache c ip saddr 10.1.{i // 250}.{i % 250} accept\\n" for i in range(3000))
assert session.cmd("add table inet rc-h17-cache\\nadd chain inet rc-h17-cache c\\n" + rules)[0] == 0
before = mallinfo2().uordblks
status, listing, _ = session.cmd("list table inet rc-h17-cache")
assert status == 0 and listing.count("accept") == 3000
print(mallinfo2().uordblks - before)
"""


def test_a_listing_leaves_no_cache_of_its_rules(sandbox: Sandbox) -> None:
    """libnftables keeps the cache of a context's last command: a listing's would hold every
    rule it printed (~5 MB for 3,000) for as long as the next command is not run."""
    kept = int(sandbox.python(LISTING_MEMORY).stdout)
    assert kept < 1 << 20


KEPT_READ = """
import subprocess
from controllers.firewall_rules import NFT_LAYOUT
from kernel.netfilter_nft import Nftables, open_session
backend = Nftables(NFT_LAYOUT, open_session())
first = backend.observe()
assert backend.observe() is first, "read again with nothing committed"
subprocess.run(["nft", "add", "table", "inet", "rc-h17-other"], check=True)  # another table, anyone's
second = backend.observe()
assert second is not first and second.tables == first.tables
subprocess.run(["nft", "flush", "chain", "inet", "reconcile", "RECONCILE-DNAT"], check=True)
assert backend.observe().chain("nat", "RECONCILE-DNAT").rules == ()
print("ok")
"""


def test_a_kept_read_follows_every_commit_of_nf_tables(sandbox: Sandbox, host: dict[str, str]) -> None:
    """One backend observing again (the watch agent's focused passes): the same read while
    nothing is committed, a fresh one after any transaction, ours or not, on any table."""
    run_controller(sandbox, "apply", BOTH, "nftables")
    assert "dnat ip to" in (our_nft(sandbox) or "")
    assert sandbox.python(KEPT_READ).stdout.strip() == "ok"
    sandbox.run("nft", "delete", "table", "inet", "rc-h17-other")


FOLLOWED_WRITE = """
import subprocess, sys
from controllers.firewall_rules import NFT_LAYOUT
from kernel.netfilter import Op, OpKind
from kernel.netfilter_nft import Nftables, open_session

class Listings:  # the real session, counting the listings it is asked for
    def __init__(self, session):
        self.session, self.lists = session, 0
    def cmd(self, text):
        self.lists += text.startswith("list table")
        return self.session.cmd(text)
    def generation(self):
        return self.session.generation()

def fresh():
    return Nftables(NFT_LAYOUT, open_session()).observe().tables

session = Listings(open_session())
backend = Nftables(NFT_LAYOUT, session)
dnat = backend.observe().chain("nat", "RECONCILE-DNAT").rules
first, last = dnat[0], dnat[-1]
backend.apply([Op(OpKind.DELETE_RULE, "nat", "RECONCILE-DNAT", first),
               Op(OpKind.APPEND_RULE, "nat", "RECONCILE-DNAT", first),
               Op(OpKind.INSERT_RULE, "nat", "RECONCILE-DNAT", last)])
kept = backend.observe()
assert session.lists == 1, "our own batch, the only commit since the read: the table not listed again"
assert kept.tables == fresh()
assert kept.chain("nat", "RECONCILE-DNAT").rules == (last, *dnat[1:], first)
backend.apply([Op(OpKind.DELETE_RULE, "nat", "RECONCILE-DNAT", last)])  # by the handle its chain's listing read
assert backend.observe().tables == fresh() and session.lists == 1
assert fresh()["nat"]["RECONCILE-DNAT"].rules == (*dnat[1:], first)
subprocess.run(["nft", "add", "table", "inet", "rc-h17-other"], check=True)  # anyone's commit
backend.apply([Op(OpKind.INSERT_RULE, "nat", "RECONCILE-DNAT", last)])
assert backend.observe().tables == fresh() and session.lists == 2, "listed again after a foreign commit"
backend.apply([Op(OpKind.FLUSH_CHAIN, "nat", "RECONCILE-DNAT")])
assert backend.observe().tables == fresh() and session.lists == 3, "listed again after more than rules"
print("ok")
"""


def test_our_own_batch_keeps_the_read_current(sandbox: Sandbox, host: dict[str, str]) -> None:
    """A batch of rule deletions and additions, the only commit since the read, is followed in
    the kept read (the chains it changed listed again): what the next observe returns is what a
    fresh listing reads, without listing the table; any other commit, or a batch that does
    more than rules, makes it list the table again."""
    run_controller(sandbox, "apply", BOTH, "nftables")
    assert sandbox.python(FOLLOWED_WRITE).stdout.strip() == "ok"
    sandbox.run("nft", "delete", "table", "inet", "rc-h17-other")


NOTIFIED = """
import subprocess, threading
from controllers.firewall_rules import NFT_LAYOUT
from kernel.events import KernelEvents
from kernel.netfilter import Op, OpKind
from kernel.netfilter_nft import Nftables, open_session, parse_list
from kernel.nft_changes import NftChanges
from tests.waiting import eventually

class Listings:  # the real session, recording what it is asked to list
    def __init__(self, session):
        self.session, self.lists, self.chains = session, 0, []
    def cmd(self, text):
        if text.startswith("list table"):
            self.lists += 1
        elif text.startswith("list chain"):
            self.chains.append(text.split()[-1])
        return self.session.cmd(text)
    def generation(self):
        return self.session.generation()

def fresh():
    return Nftables(NFT_LAYOUT, open_session()).observe().tables

def nft(*words):
    subprocess.run(["nft", *words], check=True)

def handle_of(rule):
    listing = subprocess.run(["nft", "-a", "list", "chain", "inet", "reconcile", "RECONCILE-DNAT"],
                             capture_output=True, text=True, check=True).stdout
    return next(line.rsplit(" ", 1)[1] for line in listing.splitlines() if line.strip().startswith(rule))

def same_as_listed():  # the rules, and every handle the read knows
    listed, handles = parse_list(open_session().cmd("list table inet reconcile")[1], NFT_LAYOUT)
    kept = {key: found for key, found in backend._handles.items() if found}
    return backend.observe().tables == listed.tables and all(
        known is None or known == handles[key][i] for key, found in kept.items() for i, known in enumerate(found))

changes = NftChanges("reconcile")
events = KernelEvents(lambda event: None, changes)
stop = threading.Event()
loop = threading.Thread(target=events.run, args=(stop,), daemon=True)
loop.start()
session = Listings(open_session())
nft("add", "table", "inet", "rc-h17-first")  # the first commit it sees may have begun before it listened
assert changes.since(session.generation() - 1, session.generation(), 5.0) is None
eventually(lambda: changes.since(session.generation(), session.generation(), 0.0), [])  # the loop closed it
nft("add", "table", "inet", "rc-h17-second")
assert changes.since(session.generation() - 1, session.generation(), 5.0) == []
backend = Nftables(NFT_LAYOUT, session, changes)
first = backend.observe().chain("nat", "RECONCILE-DNAT").rules[0]
nft("delete", "rule", "inet", "reconcile", "RECONCILE-DNAT", "handle", handle_of(first))  # someone's
assert backend.observe().tables == fresh() and (session.lists, session.chains) == (1, []), "played in by handle"
backend.apply([Op(OpKind.APPEND_RULE, "nat", "RECONCILE-DNAT", first)])  # the repair
assert backend.observe().tables == fresh() and (session.lists, session.chains) == (1, [])
nft("delete", "rule", "inet", "reconcile", "RECONCILE-DNAT", "handle", handle_of(first))  # what we added
assert backend.observe().tables == fresh() and (session.lists, session.chains) == (1, []), "its handle learned"
backend.apply([Op(OpKind.APPEND_RULE, "nat", "RECONCILE-DNAT", first)])
nft("add", "table", "inet", "rc-h17-third")  # any commit: the read catches up, learning the new rule's handle
assert same_as_listed() and None not in backend._handles[("RECONCILE-DNAT", first)]
nft("add", "rule", "inet", "reconcile", "RECONCILE-ACCEPT", "accept")  # someone's rule: its chain listed
assert backend.observe().tables == fresh() and (session.lists, session.chains) == (1, ["RECONCILE-ACCEPT"])
nft("add", "table", "inet", "rc-h17-other")  # another table: nothing of ours listed, the same read
kept = backend.observe()
assert backend.observe() is kept and (session.lists, session.chains) == (1, ["RECONCILE-ACCEPT"])
nft("flush", "chain", "inet", "reconcile", "RECONCILE-DNAT")  # every rule's deletion notified
assert backend.observe().tables == fresh() and session.lists == 1
assert fresh()["nat"]["RECONCILE-DNAT"].rules == ()
nft("add", "chain", "inet", "reconcile", "RC-H17-NEW")  # more than rules: the table listed
assert backend.observe().tables == fresh() and session.lists == 2
stop.set()
loop.join()
events.close()
print("ok")
"""


def test_a_kept_read_follows_the_notifications_of_what_changed(sandbox: Sandbox, host: dict[str, str]) -> None:
    """With nf_tables' notifications followed (the watch agent), someone's deletions are played
    into the kept read by handle, the handles of the rules we add are learned from our own
    commit's, a chain someone added rules to is listed alone, another table's commit lists
    nothing, and more than rules lists the table: each read equal to a fresh listing."""
    run_controller(sandbox, "apply", BOTH, "nftables")
    assert sandbox.python(NOTIFIED).stdout.strip() == "ok"
    for table in ("other", "first", "second", "third"):
        sandbox.run("nft", "delete", "table", "inet", f"rc-h17-{table}")
    assert foreign_nft(sandbox) == host
