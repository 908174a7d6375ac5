"""What each nf_tables transaction changed in one table of ours, as the kernel's notifications
tell it: the nftables backend's kept read (kernel/netfilter_nft.py) is brought up to date from
them instead of listing the table again.

Why: a rule deleted behind the watch agent's back moves nf_tables' generation, and the pass that
repairs it listed our whole table (3,000 rules at a thousand containers) to learn what one
notification already said. The kernel sends every object a transaction changes (each rule with
its chain and handle, also each rule a flush or a table deletion takes) and then NEWGEN with the
transaction's generation, the number NFT_MSG_GETGEN returns once it is committed, so a
generation whose notifications all arrived is known exactly.

What is trusted: only generations whose NEWGEN was seen, each as the list of its rule additions
and deletions in our table, and only when all of their messages can have been seen: not the
first one (it may have begun before the subscription), and none closed between a drop the
kernel reports (ENOBUFS comes before whatever is still queued, which may have gaps anywhere)
and the end of that queue, after which everything before is forgotten. A chain or the table
itself created, changed (a policy) or deleted makes the generation unknown (the reader lists
the whole table); so does anything not seen yet after a short wait.

Fed by the watch agent's event loop (kernel/events.py), read by its worker: thread-safe.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from kernel import rtnl_wire as wire
from kernel.events_wire import (
    NFGENMSG_SIZE,
    NFNL_SUBSYS_NFTABLES,
    NFPROTO_INET,
    NFT_MSG_DELCHAIN,
    NFT_MSG_DELRULE,
    NFT_MSG_DELTABLE,
    NFT_MSG_NEWCHAIN,
    NFT_MSG_NEWGEN,
    NFT_MSG_NEWRULE,
    NFT_MSG_NEWTABLE,
    NFTA_CHAIN_TABLE,
    NFTA_GEN_ID,
    NFTA_RULE_CHAIN,
    NFTA_RULE_HANDLE,
    NFTA_RULE_TABLE,
    NFTA_TABLE_NAME,
)

KEPT_GENERATIONS = 256
"""Generations remembered: a read older than that is listed again (and a repair keeps up)."""


@dataclass(frozen=True)
class RuleChange:
    """One rule added to or deleted from a chain of the table, by its kernel handle."""

    chain: str
    handle: int
    added: bool


Commit = tuple[RuleChange, ...] | None
"""One generation's rule changes in the table, in the kernel's order; None when more than rules
changed there, or when what changed is not known."""


class NftChanges:
    """The commits of the last KEPT_GENERATIONS generations, for one `inet` table."""

    def __init__(self, table: str) -> None:
        self.table = table
        self._commits: OrderedDict[int, Commit] = OrderedDict()
        self._latest: int | None = None  # the last generation closed
        self._open: list[RuleChange] | None = None
        """The transaction being notified; None: some of it may be unseen (the first one, whose
        start may precede the subscription, or one cut by a drop)."""
        self._lossy = False  # a drop was seen and the queue not yet drained: nothing is whole
        self._seen = threading.Condition()

    def notification(self, kind: int, body: bytes) -> None:
        """One nf_tables message as it arrived (any family, any table, any object)."""
        if kind >> 8 != NFNL_SUBSYS_NFTABLES or len(body) < NFGENMSG_SIZE:
            return
        message = kind & 0xFF
        attrs = wire.attributes(body, NFGENMSG_SIZE)
        if message == NFT_MSG_NEWGEN:
            generation = attrs.get(NFTA_GEN_ID)
            if generation is not None:
                self._close(int.from_bytes(generation[:4], "big"))
            return
        if body[0] != NFPROTO_INET:
            return
        if message in (NFT_MSG_NEWRULE, NFT_MSG_DELRULE):
            handle = attrs.get(NFTA_RULE_HANDLE)
            chain = wire.text(attrs.get(NFTA_RULE_CHAIN))
            if wire.text(attrs.get(NFTA_RULE_TABLE)) != self.table:
                return
            if self._open is not None:
                if handle is None or chain is None:
                    self._open = None
                else:
                    self._open.append(RuleChange(chain, int.from_bytes(handle[:8], "big"), message == NFT_MSG_NEWRULE))
        elif message in (NFT_MSG_NEWCHAIN, NFT_MSG_DELCHAIN, NFT_MSG_NEWTABLE, NFT_MSG_DELTABLE):
            named = attrs.get(NFTA_TABLE_NAME if message in (NFT_MSG_NEWTABLE, NFT_MSG_DELTABLE) else NFTA_CHAIN_TABLE)
            if wire.text(named) == self.table:
                self._open = None

    def lost(self) -> None:
        """The kernel dropped notifications (ENOBUFS, seen before any datagram still queued):
        what was read so far is whole; what is still queued may have gaps anywhere, so every
        generation closed until the queue is drained is unknown."""
        with self._seen:
            self._lossy = True

    def overflowed(self) -> None:
        """The queue is drained after a drop: nothing before now can be trusted, nor the
        transaction being notified (its start may be among what was dropped)."""
        with self._seen:
            self._commits.clear()
            self._open = None
            self._lossy = False

    def _close(self, generation: int) -> None:
        with self._seen:
            self._commits[generation] = None if self._open is None or self._lossy else tuple(self._open)
            self._latest = generation
            self._open = []
            while len(self._commits) > KEPT_GENERATIONS:
                self._commits.popitem(last=False)
            self._seen.notify_all()

    def since(self, read_at: int, now: int, wait: float) -> list[RuleChange] | None:
        """Every rule change of the generations after `read_at` up to `now`, in order; None
        unless each of them is known. Waits up to `wait` seconds for `now` to be notified, not
        once a later one was (an unknown generation is not waited for twice)."""
        if not 0 <= now - read_at <= KEPT_GENERATIONS:
            return None
        deadline = time.monotonic() + wait
        with self._seen:
            if self._latest is None:
                return None  # nothing closed yet: the first generation seen is unknown anyway
            while self._latest < now and (left := deadline - time.monotonic()) > 0:
                self._seen.wait(left)
            changes: list[RuleChange] = []
            for generation in range(read_at + 1, now + 1):
                commit = self._commits.get(generation)
                if commit is None:
                    return None
                changes += commit
            return changes
