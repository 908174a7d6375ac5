"""The watch agent's image pulls, each in a process of its own (`python -P -m
reconcile.watch.pulls REF`, the child side below).

A pull hashes and unpacks every layer it fetches (hundreds of megabytes), which the agent's own
process is kept from: its heap would keep the pages the decompressors and the tar reader left
in pieces, and the layers' sha256 wants OpenSSL's libcrypto, 3.35 MiB resident for good once
loaded, which the agent otherwise has no use for (kernel.memory.leave_openssl_unloaded). The
child resolves the agent's settings from its environment and takes the image store's lock as
any pull does (shared: the agent's pulls, one thread and child each, run side by side); it
reports on stdout, one JSON object a line: `waiting` (the removal holding the lock, if any),
then `pulled` (the digest) or `failed` (the error). It is killed with the agent (a parent-death
signal, as the skopeo it runs), in a session of its own (a Ctrl-C to the agent's terminal is
the agent's to handle); one ended midway leaves the store as a killed pull does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable

from reconcile.engine.images import verify_tls
from reconcile.engine.settings import Settings
from specs.images import ImageReference, parse_reference
from state.images import ImageStore

STOP_WAIT = 5.0
"""Seconds a pull is given to end on SIGTERM when the agent stops, before SIGKILL."""


class PullFailed(Exception):
    """The child's error, or how it ended."""


class ChildPulls:
    def __init__(self, settings: Settings) -> None:
        # Its own allocator: PYTHONMALLOC=malloc is the agent's choice (kernel/memory.py).
        self._environment = {k: v for k, v in os.environ.items() if k != "PYTHONMALLOC"} | settings.environment()
        self._running: set[subprocess.Popen[str]] = set()
        self._lock = threading.Lock()
        self._stopped = False

    def pull(self, ref: ImageReference, waiting: Callable[[str], None]) -> str:
        """The digest of the image pulled for `ref`; `waiting` is told who holds the image
        store's lock, if anyone; PullFailed with the child's reason."""
        argv = ["setpriv", "--pdeathsig", "KILL", "--", sys.executable, "-P", "-m", __name__, str(ref)]
        with self._lock:
            if self._stopped:
                raise PullFailed("the agent is stopping")
            errors = tempfile.TemporaryFile()  # read once it has ended: a pipe could fill and stall it
            child = subprocess.Popen(argv, env=self._environment, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=errors, text=True, start_new_session=True)
            self._running.add(child)
        report: dict[str, str] = {}
        with errors:
            try:
                assert child.stdout is not None
                for line in child.stdout:
                    report = json.loads(line)
                    if report.get("event") == "waiting":
                        waiting(report["holder"])
                child.wait()
            finally:
                with self._lock:
                    self._running.discard(child)
            if report.get("event") == "pulled":
                return report["digest"]
            if report.get("event") == "failed":
                raise PullFailed(report["error"])
            errors.seek(0)
            said = errors.read().decode(errors="replace").strip()[-500:]
        raise PullFailed(f"the pull ended with {child.returncode}" + (f": {said}" if said else ""))

    def stop(self) -> None:
        """Ends the pulls under way: SIGTERM, then SIGKILL after STOP_WAIT; none is left."""
        with self._lock:
            self._stopped = True
            running = list(self._running)
        for child in running:
            child.terminate()
        for child in running:
            try:
                child.wait(STOP_WAIT)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def _report(**fields: str) -> None:
    print(json.dumps(fields), flush=True)


def main(text: str) -> int:
    """The child: pull `text` with the settings of the environment."""
    try:
        ref = parse_reference(text)
        settings = Settings.resolve(None, None)
        image = ImageStore(settings.state_dir).pull(ref, verify_tls(ref, settings), settings.pull_stall_timeout,
                                                    lambda event: None,
                                                    lambda holder: _report(event="waiting", holder=holder))
    except Exception as exc:  # noqa: BLE001 - reported to the agent, which logs it and tries again
        _report(event="failed", error=str(exc) or type(exc).__name__)
        return 1
    _report(event="pulled", digest=image.digest)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
