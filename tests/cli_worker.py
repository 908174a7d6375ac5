"""A long-lived `reconcile` inside a Sandbox, for tests that run the CLI hundreds of times.

Each CLI process spends ~0.27 s of its ~0.3 s importing; a property test that applies, diffs
and tears down 8 times per example cannot afford that. The worker imports once, then runs
`reconcile.cli.main(argv)` per request, exactly the code a user's process runs after its imports
(nothing in the product caches kernel state between calls). It also answers `observe`: the
product's own observation of the host (every controller's observe(), through open_session),
rendered as plain JSON without what is never equal between two hosts (ifindexes, pids,
process start times, clocks).

Protocol: one JSON request per stdin line (`{"argv": [...]}` or `{"observe": true}`), one JSON
answer per line on the original stdout; anything else the run prints goes to stderr so a
child process inheriting fd 1 cannot corrupt the protocol.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from contextlib import redirect_stderr, redirect_stdout
from enum import Enum
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import Any

from tests.sandbox import Sandbox

UNEQUAL_BY_NATURE = frozenset({
    "index", "host_index", "inner_index", "pid", "start_time", "started_at",
    "links_by_name",  # every link of the host, by name, with its ifindex
    "bridges",  # bridge name -> ifindex
    "foreign_nets", "listeners",  # what is not ours
    "parent",  # the cgroup parent: one per sandbox
    "root",  # where a container's root is mounted: under the sandbox's own state dir
})
"""Observation fields left out of the rendering."""


def plain(value: Any) -> Any:
    """An observation as JSON-able data, keys sorted, UNEQUAL_BY_NATURE fields dropped."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)
                if f.name not in UNEQUAL_BY_NATURE}
    if isinstance(value, Mapping):
        return {str(plain(k)): plain(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (set, frozenset)):
        return sorted((plain(v) for v in value), key=str)
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (IPv4Address, IPv4Interface, IPv4Network)):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    return value


def _observe() -> dict[str, Any]:
    from reconcile.engine.session import open_session
    from reconcile.engine.settings import Settings

    with open_session(Settings.resolve(None, None), writable=False) as session:
        return {type(o).__name__: plain(o) for o in session.observe().ordered()}


def _serve() -> None:
    from reconcile.cli import main

    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("observe"):
            answers.write(json.dumps({"state": _observe()}) + "\n")
            continue
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = main(request["argv"])
        answers.write(json.dumps({"code": code, "out": out.getvalue(), "err": err.getvalue()}) + "\n")


class Worker:
    """The worker process, started inside `sandbox`'s namespaces."""

    def __init__(self, sandbox: Sandbox):
        self._proc = subprocess.Popen(
            ["nsenter", "-t", str(sandbox.pid), "-n", "-m", "--", sys.executable, "-m", "tests.cli_worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=sandbox.env)
        self.pid = self._proc.pid  # nsenter without --pid execs the command: this is the worker

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps(request) + "\n")
        self._proc.stdin.flush()
        answer = self._proc.stdout.readline()
        if not answer:
            raise RuntimeError(f"the CLI worker died (exit {self._proc.wait()})")
        return json.loads(answer)

    def reconcile(self, *argv: str) -> tuple[int, str]:
        """(exit code, stdout + stderr) of `reconcile ARGV...`."""
        answer = self._ask({"argv": list(argv)})
        return answer["code"], answer["out"] + answer["err"]

    def observe(self) -> dict[str, Any]:
        return self._ask({"observe": True})["state"]

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        self._proc.wait(timeout=30)


if __name__ == "__main__":
    _serve()
