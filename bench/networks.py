"""Networks: cold apply, no-op diff, no-op apply and down for 1, 10 and 100 bridge networks,
beside the floor: the same kernel work as one `ip -batch` (create, address, up; then delete).

Run as root: `.venv/bin/python bench/networks.py` (it re-executes itself in a throwaway host).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import print_table, reexec_in_throwaway_host, time_cli_round, timed  # noqa: E402

SIZES = (1, 10, 100)


def stack_text(n: int) -> str:
    nets = "".join(f"  n{i}:\n    subnet: 10.{100 + i // 256}.{i % 256}.0/24\n" for i in range(n))
    return f"name: bench\nnetworks:\n{nets}"


def floor(n: int) -> tuple[float, float]:
    up = "".join(f"link add fl{i} type bridge\naddr add 10.{200 + i // 256}.{i % 256}.1/24 dev fl{i}\n"
                 f"link set fl{i} up\n" for i in range(n))
    down = "".join(f"link del fl{i}\n" for i in range(n))
    return timed(["ip", "-batch", "-"], input=up), timed(["ip", "-batch", "-"], input=down)


def main() -> None:
    reexec_in_throwaway_host()
    rows = []
    for n in SIZES:
        times = time_cli_round(stack_text(n))
        floor_up, floor_down = floor(n)
        rows.append([n, times.cold_apply, times.noop_diff, times.noop_apply, times.down, floor_up, floor_down,
                     f"{times.cold_apply / floor_up:.0f}x"])
    print_table(["networks", "cold apply s", "no-op diff s", "no-op apply s", "down s",
                 "floor up s (ip -batch)", "floor down s", "cold/floor"], rows)


if __name__ == "__main__":
    main()
