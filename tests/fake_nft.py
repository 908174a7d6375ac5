"""A captured `nft -a` listing and a stand-in for libnftables and the iptables tools (no tests here)."""

from __future__ import annotations

import subprocess
from typing import Any

CAPTURED = """\
table inet reconcile { # handle 1
\tchain PREROUTING { # handle 1
\t\ttype nat hook prerouting priority dstnat; policy accept;
\t\tfib daddr type local jump RECONCILE-DNAT comment "reconcile/v1 chains" # handle 14
\t}

\tchain OUTPUT { # handle 2
\t\ttype nat hook output priority -100; policy accept;
\t\tfib daddr type local jump RECONCILE-DNAT comment "reconcile/v1 chains" # handle 15
\t}

\tchain POSTROUTING { # handle 3
\t\ttype nat hook postrouting priority srcnat; policy accept;
\t\tjump RECONCILE-SNAT comment "reconcile/v1 chains" # handle 16
\t}

\tchain INPUT { # handle 4
\t\ttype filter hook input priority filter; policy accept;
\t\tjump RECONCILE-INPUT comment "reconcile/v1 chains" # handle 17
\t}

\tchain FORWARD { # handle 5
\t\ttype filter hook forward priority filter; policy accept;
\t\tjump RECONCILE-FORWARD comment "reconcile/v1 chains" # handle 18
\t}

\tchain RECONCILE-DNAT { # handle 6
\t\tip daddr 127.0.0.1 udp dport 5353 dnat ip to 10.88.1.10:53 comment "reconcile/v1 port demo/web/127.0.0.1:5353/udp" # handle 34
\t\ttcp dport 8080 dnat ip to 10.88.1.10:80 comment "reconcile/v1 port demo/web/8080/tcp" # handle 35
\t}

\tchain RECONCILE-SNAT { # handle 7
\t\tip saddr 10.88.1.0/24 oifname != "rcbr0" masquerade comment "reconcile/v1 network demo/front" # handle 25
\t\tip saddr 10.88.1.0/24 oifname "rcbr0" ct status dnat masquerade comment "reconcile/v1 network demo/front" # handle 26
\t\tip saddr 127.0.0.0/8 oifname "rcbr0" masquerade comment "reconcile/v1 network demo/front" # handle 27
\t}

\tchain RECONCILE-INPUT { # handle 8
\t\tip daddr 127.0.0.0/8 iifname "rcbr0" ct state ! established,related ct status ! dnat drop comment "reconcile/v1 network demo/front" # handle 28
\t}

\tchain RECONCILE-INTERNAL { # handle 9
\t\tiifname "rcbr1" oifname != "rcbr1" drop comment "reconcile/v1 network demo/back" # handle 22
\t\tiifname != "rcbr1" oifname "rcbr1" drop comment "reconcile/v1 network demo/back" # handle 23
\t}

\tchain RECONCILE-ISOLATE-FROM { # handle 10
\t\tiifname "rcbr0" oifname != "rcbr0" jump RECONCILE-ISOLATE-TO comment "reconcile/v1 network demo/front" # handle 29
\t}

\tchain RECONCILE-ISOLATE-TO { # handle 11
\t\toifname "rcbr0" drop comment "reconcile/v1 network demo/front" # handle 30
\t}

\tchain RECONCILE-ACCEPT { # handle 12
\t\tiifname "rcbr1" oifname "rcbr1" accept comment "reconcile/v1 network demo/back" # handle 24
\t\toifname "rcbr0" ct state established,related accept comment "reconcile/v1 network demo/front" # handle 31
\t\toifname "rcbr0" ct status dnat accept comment "reconcile/v1 network demo/front" # handle 32
\t\tiifname "rcbr0" accept comment "reconcile/v1 network demo/front" # handle 33
\t}

\tchain RECONCILE-FORWARD { # handle 13
\t\tjump RECONCILE-INTERNAL comment "reconcile/v1 chains" # handle 19
\t\tct status ! dnat jump RECONCILE-ISOLATE-FROM comment "reconcile/v1 chains" # handle 20
\t\tjump RECONCILE-ACCEPT comment "reconcile/v1 chains" # handle 21
\t}
}
"""  # noqa: E501 - nft's output, verbatim
"""`nft -a list table inet reconcile` after the DEMO stack was applied in a sandbox (nft 1.0.6)."""


class FakeNft:
    """Stands in for libnftables (an NftSession: lists `listing`, or "no such table", and
    records scripts) and for the iptables tools' runner."""

    def __init__(self, listing: str | None = CAPTURED, usable: bool = True, forward: str = "ACCEPT"):
        self.listing = listing
        self.usable = usable
        self.forward = forward
        self.scripts: list[str] = []
        self.listings = 0
        self.chain_listings: list[str] = []
        self.committed: int | None = 1
        """nf_tables' generation as `generation` reports it: each script commits one more; None
        stands for a kernel that cannot be asked."""

    def __call__(self, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        if argv[0] == "iptables":
            return subprocess.CompletedProcess(argv, 0, "iptables v1.8.9 (nf_tables)\n", "")
        if argv[0] == "iptables-save":
            return subprocess.CompletedProcess(argv, 0, f"*filter\n:FORWARD {self.forward} [0:0]\nCOMMIT\n", "")
        return subprocess.CompletedProcess(argv, 0, "", "")

    def cmd(self, text: str) -> tuple[int, str, str]:
        if text.startswith("list table "):
            self.listings += 1
            if self.listing is None:
                return 1, "", "Error: No such file or directory"
            return 0, self.listing, ""
        if text.startswith("list chain "):
            self.chain_listings.append(text.split()[-1])
            return self._chain(text.split()[-1])
        self.scripts.append(text)
        if self.committed is not None:
            self.committed += 1
        return 0, "", ""

    def _chain(self, name: str) -> tuple[int, str, str]:
        """`list chain`: that chain of `listing`, in its table's braces, as nft prints it."""
        lines = (self.listing or "").splitlines()
        opening = next((i for i, line in enumerate(lines) if line.startswith(f"\tchain {name} {{")), None)
        if opening is None:
            return 1, "", "Error: No such file or directory"
        closing = lines.index("\t}", opening)
        return 0, "\n".join(["table inet reconcile {", *lines[opening:closing + 1], "}", ""]), ""

    def generation(self) -> int | None:
        return self.committed

    def session(self) -> FakeNft | None:
        """What open_session gives: None where libnftables is not usable."""
        return self if self.usable else None
