"""`reconcile watch` as a user runs it, inside a sandbox, and what the watch tests read and write
around it (no tests here)."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path

from tests.sandbox import Sandbox

NETWORKS = """\
name: {name}
networks:
  net: {{subnet: {subnet}}}
"""


LOG_TAIL = 120
"""Log lines of a stopped agent printed for a failing test's report."""


class Agent:
    """`reconcile watch DIR` running inside the sandbox; its JSON log lines are collected."""

    def __init__(self, sandbox: Sandbox, directory: Path, *flags: str) -> None:
        self.lines: list[dict[str, object]] = []
        self.proc = sandbox.spawn(sys.executable, "-m", "reconcile", "watch", str(directory), *flags)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            try:
                self.lines.append(json.loads(line))
            except json.JSONDecodeError:
                self.lines.append({"event": "non-json", "text": line})

    def saw(self, event: str, **fields: object) -> bool:
        return any(record.get("event") == event and all(record.get(k) == v for k, v in fields.items())
                   for record in list(self.lines))

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(10)
        self._reader.join(5)
        # Captured by pytest and shown only when the test fails: what the agent did and why.
        print(f"== the agent's last {LOG_TAIL} log lines", *map(json.dumps, self.lines[-LOG_TAIL:]), sep="\n")
        assert not self.saw("non-json"), self.lines  # no traceback, ever
        return code


def has_address(sandbox: Sandbox, ifname: str, cidr: str) -> bool:
    link = sandbox.link(ifname)
    return link is not None and any(f"{a['local']}/{a['prefixlen']}" == cidr for a in link["addr_info"])


def watch_row(sandbox: Sandbox, stack: str) -> dict[str, object] | None:
    return next((s["watch"] for s in sandbox.status()["stacks"] if s["name"] == stack), None)


def save_atomically(path: Path, text: str) -> None:
    """An editor's atomic save: a temporary file renamed over the stack file."""
    partial = path.with_name(f".{path.name}.swp")
    partial.write_text(text)
    os.replace(partial, path)
