"""The watch agent's image pulls, each in a `reconcile image pull` process of its own.

A pull hashes and unpacks every layer it fetches (hundreds of megabytes), which the agent's own
process is kept from: its heap would keep the pages the decompressors and the tar reader left
in pieces, and the layers' sha256 wants OpenSSL's libcrypto, 3.4 MiB resident for good once
loaded, which the agent otherwise has no use for (kernel.memory.leave_openssl_unloaded). The
child resolves the agent's settings from its environment, and takes the image store's lock as
any `image pull` does; one stopped midway leaves the store as a killed pull does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

from reconcile.engine.settings import Settings
from specs.images import ImageReference


class PullFailed(Exception):
    """The child's own error message (`error: ` left out), or how it ended."""


class ChildPulls:
    def __init__(self, settings: Settings) -> None:
        self._environment = settings.environment()
        self._running: set[subprocess.Popen[str]] = set()
        self._lock = threading.Lock()
        self._stopped = False

    def pull(self, ref: ImageReference) -> str:
        """The digest of the image pulled for `ref`; PullFailed with the child's reason."""
        argv = [sys.executable, "-m", "reconcile", "image", "pull", "-o", "json", str(ref)]
        with self._lock:
            if self._stopped:
                raise PullFailed("the agent is stopping")
            child = subprocess.Popen(argv, env={**os.environ, **self._environment}, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            self._running.add(child)
        try:
            out, err = child.communicate()
        finally:
            with self._lock:
                self._running.discard(child)
        if child.returncode == 0:
            return str(json.loads(out.splitlines()[-1])["digest"])  # JSON lines; `pulled` last
        raise PullFailed(_reason(err, child.returncode))

    def stop(self) -> None:
        """Ends the pulls under way (SIGTERM): the agent leaves no process of its own behind."""
        with self._lock:
            self._stopped = True
            for child in self._running:
                child.terminate()


def _reason(err: str, code: int) -> str:
    """The child's errors, as it writes them on stderr whatever its output format."""
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line.removeprefix("error: ") for line in lines if line.startswith("error: ")] or lines[-1:]
    return "; ".join(errors) or f"`reconcile image pull` ended with {code}"
