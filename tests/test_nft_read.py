"""The nftables backend's kept read brought up to date without listing (pure, no kernel): the
ledger of what each generation changed, built from nf_tables messages as the kernel sends them,
and the edits of a read (someone's deletions by handle, our own batch, the handles of what we
added) checked against what a listing of the result reads."""

from __future__ import annotations

import errno
import time

import pytest

from controllers.firewall_rules import NFT_LAYOUT
from kernel import rtnl_wire as wire
from kernel.events import _read_datagrams
from kernel.events_wire import NFNL_SUBSYS_NFTABLES, NFPROTO_INET, NFPROTO_IPV4, messages
from kernel.netfilter import Op, OpKind
from kernel.netfilter_nft import Nftables, nft_script, parse_list
from kernel.nft_changes import KEPT_GENERATIONS, NftChanges, RuleChange
from kernel.nft_read import after_batch, replayed, unknown_handles, with_handles, without_rules
from tests.fake_nft import CAPTURED, FakeNft

NEWTABLE, NEWCHAIN, DELCHAIN, NEWRULE, DELRULE, NEWGEN = 0, 3, 5, 6, 8, 15
DNAT = "RECONCILE-DNAT"
UDP = ('ip daddr 127.0.0.1 udp dport 5353 dnat ip to 10.88.1.10:53 '
       'comment "reconcile/v1 port demo/web/127.0.0.1:5353/udp"')
TCP = 'tcp dport 8080 dnat ip to 10.88.1.10:80 comment "reconcile/v1 port demo/web/8080/tcp"'


def _message(message: int, family: int, *attrs: bytes) -> tuple[int, bytes]:
    return NFNL_SUBSYS_NFTABLES << 8 | message, bytes([family, 0, 0, 0]) + b"".join(attrs)


def _rule(message: int, chain: str, handle: int, table: str = "reconcile", family: int = NFPROTO_INET
          ) -> tuple[int, bytes]:
    return _message(message, family, wire.attr_str(1, table), wire.attr_str(2, chain),
                    wire.attr(3, handle.to_bytes(8, "big")))


def _generation(generation: int) -> tuple[int, bytes]:
    return _message(NEWGEN, 0, wire.attr(1, generation.to_bytes(4, "big")))


def _fed(*messages: tuple[int, bytes]) -> NftChanges:
    """A ledger subscribed during generation 10 (its first transaction may be partly unseen)."""
    changes = NftChanges("reconcile")
    for kind, body in (_rule(DELRULE, DNAT, 33), _generation(10), *messages):
        changes.notification(kind, body)
    return changes


def test_a_generation_is_known_once_its_newgen_arrived() -> None:
    changes = _fed(_rule(DELRULE, DNAT, 35), _rule(NEWRULE, "X", 7, table="other"),
                   _rule(NEWRULE, DNAT, 90, family=NFPROTO_IPV4), _generation(11),
                   _rule(NEWRULE, DNAT, 91))  # generation 12 not notified yet
    assert changes.since(10, 11, wait=0) == [RuleChange(DNAT, 35, added=False)]
    assert changes.since(11, 11, wait=0) == []
    assert changes.since(10, 12, wait=0) is None
    assert changes.since(9, 11, wait=0) is None  # generation 10 was seen only in part
    changes.notification(*_generation(12))
    assert changes.since(10, 12, wait=0) == [RuleChange(DNAT, 35, False), RuleChange(DNAT, 91, True)]


@pytest.mark.parametrize("message", [
    _message(NEWCHAIN, NFPROTO_INET, wire.attr_str(1, "reconcile"), wire.attr_str(3, "NEW")),
    _message(DELCHAIN, NFPROTO_INET, wire.attr_str(1, "reconcile"), wire.attr_str(3, DNAT)),
    _message(NEWTABLE, NFPROTO_INET, wire.attr_str(1, "reconcile")),
    _message(NEWRULE, NFPROTO_INET, wire.attr_str(1, "reconcile"), wire.attr_str(2, DNAT)),  # no handle
])
def test_more_than_rules_of_ours_makes_a_generation_unknown(message: tuple[int, bytes]) -> None:
    changes = _fed(_rule(DELRULE, DNAT, 35), message, _generation(11), _generation(12))
    assert changes.since(10, 11, wait=0) is None
    assert changes.since(11, 12, wait=0) == []
    foreign = _message(NEWCHAIN, NFPROTO_INET, wire.attr_str(1, "admin"), wire.attr_str(3, "NEW"))
    assert _fed(foreign, _generation(11)).since(10, 11, wait=0) == []


def test_a_drop_makes_what_was_queued_unknown_and_the_drain_forgets_everything() -> None:
    """As the socket delivers it: the drop is reported (ENOBUFS) before what is still queued,
    which may lack any part of any transaction; then the queue is drained."""
    changes = _fed(_generation(11), _rule(DELRULE, DNAT, 35))  # generation 12's start, read whole
    changes.lost()
    changes.notification(*_rule(DELRULE, DNAT, 36))  # its tail: what came between was dropped
    changes.notification(*_generation(12))
    changes.notification(*_generation(13))  # whole, for all the ledger can tell
    assert changes.since(10, 11, wait=0) == []  # read before the drop was seen
    assert changes.since(11, 12, wait=0) is None
    assert changes.since(12, 13, wait=0) is None
    changes.notification(*_rule(DELRULE, DNAT, 37))  # after the drain's last datagram
    changes.overflowed()
    changes.notification(*_generation(14))
    changes.notification(*_generation(15))
    assert changes.since(10, 11, wait=0) is None  # forgotten
    assert changes.since(13, 14, wait=0) is None  # its start may have been dropped
    assert changes.since(14, 15, wait=0) == []


def test_only_the_last_generations_are_kept() -> None:
    changes = _fed(*(_generation(g) for g in range(11, KEPT_GENERATIONS + 20)))
    assert changes.since(KEPT_GENERATIONS + 18, KEPT_GENERATIONS + 19, wait=0) == []
    assert changes.since(11, 12, wait=0) is None


def test_a_generation_never_notified_is_not_waited_for_once_a_later_one_was() -> None:
    changes = _fed(_generation(11), _generation(13))  # 12's NEWGEN lost (or without its id)
    started = time.monotonic()
    assert changes.since(11, 12, wait=30) is None
    assert time.monotonic() - started < 15  # returned at once: it did not wait out the 30 s


def test_someones_deletions_are_played_in_by_handle() -> None:
    ruleset, handles = parse_list(CAPTURED, NFT_LAYOUT)
    played, played_handles, relist = replayed(ruleset, handles, [RuleChange(DNAT, 35, False),
                                                                 RuleChange("RECONCILE-SNAT", 26, False)])
    expected = parse_list("\n".join(line for line in CAPTURED.splitlines()
                                    if not line.endswith(("# handle 35", "# handle 26"))), NFT_LAYOUT)
    assert relist == set()
    assert played.tables == expected[0].tables and played_handles == expected[1]
    assert played.chain("filter", "FORWARD") is ruleset.chain("filter", "FORWARD")  # the rest is shared


def test_additions_and_unknown_handles_send_their_chain_to_be_listed() -> None:
    ruleset, handles = parse_list(CAPTURED, NFT_LAYOUT)
    played, _, relist = replayed(ruleset, handles, [RuleChange(DNAT, 35, False), RuleChange(DNAT, 99, True),
                                                    RuleChange("RECONCILE-SNAT", 98, False),
                                                    RuleChange("RECONCILE-ACCEPT", 24, False)])
    assert relist == {DNAT, "RECONCILE-SNAT"}
    assert played.chain("filter", "RECONCILE-ACCEPT").rules == ruleset.chain("filter", "RECONCILE-ACCEPT").rules[1:]
    assert without_rules(ruleset, handles, "NO-SUCH-CHAIN", {1}) is None


def test_a_deletion_from_a_text_whose_handles_do_not_match_its_rules_lists_the_chain_again() -> None:
    """More or fewer handles than rules of a text (no read a listing or an edit here makes):
    which rule went is not known, so the chain is listed anew rather than guessed."""
    ruleset, handles = parse_list(CAPTURED, NFT_LAYOUT)
    spec = ruleset.chain("nat", DNAT).rules[0]
    assert without_rules(ruleset, {**handles, (DNAT, spec): [34, 77]}, DNAT, {34}) is None
    assert without_rules(ruleset, {**handles, (DNAT, spec): []}, DNAT, {34}) is None
    left = without_rules(ruleset, handles, DNAT, {34})
    assert left is not None and left[0].chain("nat", DNAT).rules == ruleset.chain("nat", DNAT).rules[1:]


def test_a_read_caught_up_is_derived_only_once_rules_of_ours_were_played_in() -> None:
    """A commit to another table leaves the kept read a listing, which a pass over everything
    keeps, as does someone's addition (its chain is listed again, whole); someone's deletion in
    our table, played in by handle, makes it derived until the next pass over everything lists
    the table again."""
    session = FakeNft()
    session.committed = 10
    ledger = _fed()
    backend = Nftables(NFT_LAYOUT, session, ledger)
    backend.observe()
    ledger.notification(*_generation(11))  # someone's transaction, no rule of our table in it
    session.committed = 11
    backend.observe()
    backend.drop_derived_read()
    backend.observe()
    assert session.listings == 1
    for message in (_rule(DELRULE, DNAT, 35), _generation(12)):
        ledger.notification(*message)
    session.committed = 12
    assert TCP not in backend.observe().chain("nat", DNAT).rules and session.listings == 1
    ledger.notification(*_generation(13))  # another table's commit after it: still derived
    session.committed = 13
    backend.observe()
    backend.drop_derived_read()
    assert TCP in backend.observe().chain("nat", DNAT).rules and session.listings == 2  # CAPTURED again
    for message in (_rule(NEWRULE, DNAT, 36), _generation(14)):  # an addition: its chain listed whole
        ledger.notification(*message)
    session.committed = 14
    backend.observe()
    backend.drop_derived_read()
    backend.observe()
    assert session.chain_listings == [DNAT] and session.listings == 2


def test_our_batch_is_played_in_with_its_new_rules_unknown_until_notified() -> None:
    ruleset, handles = parse_list(CAPTURED, NFT_LAYOUT)
    ops = [Op(OpKind.APPEND_RULE, "nat", DNAT, UDP), Op(OpKind.DELETE_RULE, "nat", DNAT, UDP),
           Op(OpKind.INSERT_RULE, "nat", DNAT, "tcp dport 1 accept")]
    after = after_batch(ruleset, handles, ops)
    assert after is not None
    played, played_handles = after
    assert played.chain("nat", DNAT).rules == ("tcp dport 1 accept", TCP, UDP)
    assert played_handles[(DNAT, UDP)] == [None] and played_handles[(DNAT, "tcp dport 1 accept")] == [None]
    assert unknown_handles(played_handles, [Op(OpKind.DELETE_RULE, "nat", DNAT, UDP)]) == {DNAT}
    commit = [RuleChange(DNAT, 34, False), RuleChange(DNAT, 40, True), RuleChange(DNAT, 41, True)]
    learned = with_handles(played_handles, ops, commit)  # the insertion comes first in the script
    assert learned[(DNAT, "tcp dport 1 accept")] == [40] and learned[(DNAT, UDP)] == [41]
    assert with_handles(played_handles, ops, commit[:2]) == played_handles  # a count that does not match
    assert after_batch(ruleset, handles, [Op(OpKind.FLUSH_CHAIN, "nat", DNAT)]) is None
    assert after_batch(played, played_handles, [Op(OpKind.DELETE_RULE, "nat", DNAT, UDP)]) is None


def test_a_text_added_twice_to_a_chain_keeps_its_handles_unknown() -> None:
    ruleset, handles = parse_list(CAPTURED, NFT_LAYOUT)
    ops = [Op(OpKind.APPEND_RULE, "nat", DNAT, TCP), Op(OpKind.INSERT_RULE, "nat", DNAT, TCP)]
    after = after_batch(ruleset, handles, ops)
    assert after is not None
    assert after[0].chain("nat", DNAT).rules == (TCP, UDP, TCP, TCP)
    assert after[1][(DNAT, TCP)] == [None, 35, None]
    learned = with_handles(after[1], ops, [RuleChange(DNAT, 40, True), RuleChange(DNAT, 41, True)])
    assert learned[(DNAT, TCP)] == [None, 35, None]


class _DroppingSocket:
    """Stands in for a congested netlink socket: queued datagrams, with the kernel's ENOBUFS
    reported before the first of them (as sock_error() is checked before dequeuing)."""

    def __init__(self, datagrams: list[bytes]) -> None:
        self.datagrams, self.reported = list(datagrams), False

    def recv_into(self, buffer: bytearray) -> int:
        if not self.reported:
            self.reported = True
            raise OSError(errno.ENOBUFS, "No buffer space available")
        if not self.datagrams:
            raise BlockingIOError
        data = self.datagrams.pop(0)
        buffer[:len(data)] = data
        return len(data)


def test_the_ledger_hears_of_a_drop_before_the_datagrams_still_queued() -> None:
    """As the event loop feeds it: each datagram as it is read, the end of the drain last."""
    changes = _fed()
    kind, body = _generation(11)
    datagram = wire.HEADER.pack(wire.HEADER.size + len(body), kind, 0, 0, 0) + body
    read: list[bytes | None] = []
    for data in _read_datagrams(_DroppingSocket([datagram]), bytearray(4096), changes.lost):  # type: ignore[arg-type]
        read.append(data)
        if data is None:
            changes.overflowed()
            continue
        for kind, _port, body in messages(data):
            changes.notification(kind, body)
        assert changes.since(10, 11, wait=0) is None  # queued behind the drop: maybe not whole
    assert read == [datagram, None]


def test_handles_are_learned_in_the_order_the_script_adds_the_rules() -> None:
    """The kernel gives a batch's new rules increasing handles in the order of its script."""
    ruleset, handles = parse_list(CAPTURED, NFT_LAYOUT)
    ops = [Op(OpKind.APPEND_RULE, "nat", DNAT, "tcp dport 1 accept"),
           Op(OpKind.INSERT_RULE, "nat", DNAT, "tcp dport 2 accept"),
           Op(OpKind.APPEND_RULE, "filter", "RECONCILE-ACCEPT", "tcp dport 3 accept"),
           Op(OpKind.APPEND_RULE, "nat", DNAT, "tcp dport 4 accept")]
    script = nft_script(ops, NFT_LAYOUT, ruleset, handles).splitlines()
    added = [line.split()[4:] for line in script if line.startswith(("add rule", "insert rule"))]
    commit = [RuleChange(words[0], 100 + index, True) for index, words in enumerate(added)]
    after = after_batch(ruleset, handles, ops)
    assert after is not None
    learned = with_handles(after[1], ops, commit)
    for index, words in enumerate(added):
        assert learned[(words[0], " ".join(words[1:]))] == [100 + index]
