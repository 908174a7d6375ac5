"""A real OCI registry for tests: Debian's `docker-registry` (the CNCF distribution registry
2.8) on 127.0.0.1 inside a Sandbox's network namespace, plain HTTP, storage under the
sandbox's workdir; and a StallingProxy in front of it that dies in the middle of a blob.

    from tests.registry import registry  # noqa: F401   (the fixture; needs `sandbox`)
    # or, clean under plain pyflakes (which ignores noqa):
    #   from tests import registry as registry_fixtures;  registry = registry_fixtures.registry

    def test_pull(sandbox, registry, tmp_path):
        image = build(tmp_path / "img", [Layer.busybox()], cmd=["sh"])
        digest = push(image.ref, registry.address, "busybox:1", sandbox)

Both servers are processes in the sandbox's netns: Sandbox.close() kills them if a test did
not stop them, and a fresh netns per sandbox means the default ports are always free.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Any
from urllib.parse import urlsplit

import pytest

from tests.sandbox import Sandbox

START_TIMEOUT = 10.0
"""Seconds a server gets to answer; it needs ~0.15 s on an idle machine."""

CONFIG = """\
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: {address}
"""

PROBE = """\
import sys, time, urllib.request
deadline = time.monotonic() + float(sys.argv[2])
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
while True:
    try:
        with opener.open(sys.argv[1], timeout=1) as answer:
            if answer.status == 200:
                sys.exit(0)
    except OSError:
        pass
    if time.monotonic() > deadline:
        sys.exit(1)
    time.sleep(0.05)
"""
"""Polls a URL from inside the netns until it answers 200 (one process, not one per poll)."""


def _spawn_in(sandbox: Sandbox, *cmd: str, stdin: int | IO[str] | None = None, stdout: int | IO[str] | None = None,
              stderr: int | IO[str] | None = None) -> subprocess.Popen[str]:
    """A long-running process in the sandbox's network and mount namespaces. nsenter without
    --fork execs the command, so the Popen's pid is the server's own."""
    return subprocess.Popen(["nsenter", "-t", str(sandbox.pid), "-n", "-m", "--", *cmd],
                            stdin=stdin, stdout=stdout, stderr=stderr, text=True, env=sandbox.env)


def _wait_until_answering(sandbox: Sandbox, server: subprocess.Popen[str], url: str, what: str,
                          log: Path) -> None:
    """Return once `url` answers 200 inside the sandbox from `server` itself; fail with the
    server's log if it exits or does not answer within START_TIMEOUT. An answer from another
    process already on the port (a second server refused the address) is not this one's: on a
    busy machine the probe can get it before the refused server has exited."""
    probe = _spawn_in(sandbox, sys.executable, "-c", PROBE, url, str(START_TIMEOUT))
    try:
        while probe.poll() is None and server.poll() is None:
            time.sleep(0.02)
    finally:
        if probe.poll() is None:
            probe.kill()
        probe.wait()
    port = urlsplit(url).port
    assert port is not None
    if probe.returncode != 0 or not _listens(server.pid, port):
        try:
            server.wait(START_TIMEOUT)  # refused: it says why in its log as it exits
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        raise RuntimeError(f"{what} did not answer {url} (exit {server.returncode}):\n{log.read_text()}")


def _listens(pid: int, port: int) -> bool:
    """Whether process `pid` holds the listening TCP socket on `port` of its network namespace."""
    try:
        sockets = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
        rows = [line.split() for name in ("tcp", "tcp6")
                for line in Path(f"/proc/{pid}/net/{name}").read_text().splitlines()[1:]]
    except OSError:
        return False
    return any(row[3] == "0A" and int(row[1].rsplit(":", 1)[1], 16) == port and f"socket:[{row[9]}]" in sockets
               for row in rows)


class Registry:
    """`docker-registry serve` on 127.0.0.1:<port> inside `sandbox`. Storage (and the
    registry's log) live in a temporary directory under the sandbox's workdir and survive
    stop() and restart()."""

    def __init__(self, sandbox: Sandbox, port: int = 5000):
        self.sandbox = sandbox
        self.port = port
        self.directory = Path(tempfile.mkdtemp(prefix="registry-", dir=sandbox.workdir))
        self.storage = self.directory / "storage"
        self.storage.mkdir()
        self.config_path = self.directory / "config.yml"
        self.config_path.write_text(CONFIG.format(root=self.storage, address=self.address))
        self.log_path = self.directory / "registry.log"
        self._process: subprocess.Popen[str] | None = None

    @classmethod
    def start(cls, sandbox: Sandbox, port: int = 5000) -> Registry:
        registry = cls(sandbox, port)
        registry._start()
        return registry

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def blob_paths(self) -> list[Path]:
        """Every blob the registry stores (content-addressed, once whatever the repositories)."""
        return sorted((self.storage / "docker/registry/v2/blobs").glob("sha256/*/*/data"))

    def _start(self) -> None:
        if self.running:
            return
        with self.log_path.open("a") as log:
            self._process = _spawn_in(self.sandbox, "docker-registry", "serve", str(self.config_path),
                                      stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        _wait_until_answering(self.sandbox, self._process, f"http://{self.address}/v2/",
                              "docker-registry", self.log_path)

    def stop(self) -> None:
        """Kill the registry (SIGKILL: a crash, not a drain) and reap it. Idempotent."""
        if self._process is not None:
            if self._process.poll() is None:
                self._process.kill()
            self._process.wait()
            self._process = None

    def restart(self) -> None:
        self.stop()
        self._start()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()


@pytest.fixture
def registry(sandbox: Sandbox) -> Iterator[Registry]:
    """A started registry in the test's sandbox, stopped at the end."""
    with Registry.start(sandbox) as started:
        yield started


PROXY = r"""
import collections, json, re, socket, sys, threading, time

listen_port, upstream_host, upstream_port = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
state = {"cut_after": int(sys.argv[4]) if sys.argv[4] != "-" else None, "hold": float(sys.argv[5]),
         "dead": False, "delay": 0.0}
lock = threading.Lock()
connections = set()
gets = collections.Counter()  # blob GETs by digest
in_flight = collections.Counter()  # blob GETs held by the delay, by repository
seen = {"most_repositories": 0}  # the most repositories with a blob GET held at once
REQUEST = re.compile(rb"^([A-Z]+) (\S+) HTTP/1\.[01]\r?$", re.M)
BLOB = re.compile(rb"^/v2/(\S+)/blobs/(sha256:[0-9a-f]+)$")

def delayed(path):
    # A blob GET waits state["delay"] seconds before it goes up: a slow registry, and a window
    # in which GETs of pulls under way at once are seen side by side.
    repository, digest = (part.decode() for part in BLOB.match(path).groups())
    with lock:
        gets[digest] += 1
        in_flight[repository] += 1
        seen["most_repositories"] = max(seen["most_repositories"], len(+in_flight))
        delay = state["delay"]
    time.sleep(delay)
    with lock:
        in_flight[repository] -= 1

def close(sock):
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()

def die(listener):
    # The registry "crashes": every connection and the listening socket go away at once.
    with lock:
        state["dead"] = True
        victims = list(connections)
    close(listener)
    for sock in victims:
        close(sock)

def relay(client, upstream, listener):
    # Go's client sends the next request only after reading the whole previous response, so
    # once a blob GET went up, the bytes coming down belong to its response.
    pending = {"blob": False, "sent": 0}

    def upward():
        try:
            while (data := client.recv(65536)):
                if (request := REQUEST.search(data)):
                    method, path = request.groups()
                    pending["blob"], pending["sent"] = method == b"GET" and bool(BLOB.match(path)), 0
                    if pending["blob"]:
                        delayed(path)
                upstream.sendall(data)
        except OSError:
            pass
        close(upstream)

    threading.Thread(target=upward, daemon=True).start()
    try:
        while (data := upstream.recv(65536)):
            limit = state["cut_after"]
            if pending["blob"] and limit is not None and pending["sent"] + len(data) >= limit:
                client.sendall(data[:limit - pending["sent"]])
                time.sleep(state["hold"])
                die(listener)
                return
            pending["sent"] += len(data)
            client.sendall(data)
    except OSError:
        pass
    close(client)

def commands(listener):
    for line in sys.stdin:
        word, *rest = line.split()
        with lock:
            if word == "arm":
                state["cut_after"], state["hold"] = int(rest[0]), float(rest[1])
            elif word == "disarm":
                state["cut_after"] = None
            elif word == "delay":
                state["delay"] = float(rest[0])
            elif word == "seen":
                print(json.dumps({"gets": gets, **seen}), flush=True)
                continue
        print("ok", flush=True)

listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", listen_port))
listener.listen(64)
threading.Thread(target=commands, args=(listener,), daemon=True).start()
print("listening", flush=True)
while True:
    try:
        client = listener.accept()[0]
    except OSError:
        break
    try:
        upstream = socket.create_connection((upstream_host, upstream_port))
    except OSError:
        close(client)
        continue
    with lock:
        if state["dead"]:
            close(client)
            close(upstream)
            continue
        connections.update((client, upstream))
    threading.Thread(target=relay, args=(client, upstream, listener), daemon=True).start()
threading.Event().wait()
"""


class StallingProxy:
    """A TCP proxy on 127.0.0.1:<port> in the sandbox, in front of a registry, that plays a
    registry dying mid-pull: once armed, after `cut_after` bytes of a blob GET's response
    (headers included) it holds the connection silent for `hold` seconds, then closes every
    connection and its listening socket for good (new connections are refused). Until armed, it
    forwards everything.

    Why a proxy rather than killing the registry during a pull: the kill races the download (a
    small blob is done before the kill lands, a big one makes the test slow), while the proxy
    cuts at a byte count, every time. Why it dies instead of cutting one response: skopeo and
    later pullers may retry or resume a blob with a Range request; a dead endpoint makes the
    failure certain. `hold` > 0 plays a registry that hangs before dying (client timeouts).

    It also plays a slow registry (`delay`: each blob GET held that long before it goes up)
    and says what it saw (`seen`): the blob GETs by digest, and the most repositories with a
    GET held at once (2 or more: pulls of two images were under way side by side)."""

    def __init__(self, sandbox: Sandbox, upstream: str, port: int = 5001, *,
                 cut_after: int | None = None, hold: float = 0.0):
        self.sandbox = sandbox
        self.port = port
        host, upstream_port = upstream.rsplit(":", 1)
        self.log_path = Path(tempfile.mkstemp(prefix="proxy-", suffix=".log", dir=sandbox.workdir)[1])
        with self.log_path.open("w") as log:
            self._process: subprocess.Popen[str] | None = _spawn_in(
                sandbox, sys.executable, "-c", PROXY, str(port), host, upstream_port,
                "-" if cut_after is None else str(cut_after), str(hold),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)
        assert self._process.stdout is not None
        line = self._process.stdout.readline().strip()
        if line != "listening":
            self.stop()
            raise RuntimeError(f"proxy did not start: {line!r}\n{self.log_path.read_text()}")

    @classmethod
    def start(cls, sandbox: Sandbox, upstream: str, port: int = 5001, *,
              cut_after: int | None = None, hold: float = 0.0) -> StallingProxy:
        return cls(sandbox, upstream, port, cut_after=cut_after, hold=hold)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def arm(self, cut_after: int, hold: float = 0.0) -> None:
        """Die after `cut_after` bytes of the next blob response (and of any blob response
        already under way)."""
        self._command(f"arm {cut_after} {hold}")

    def disarm(self) -> None:
        self._command("disarm")

    def delay(self, seconds: float) -> None:
        """Hold each blob GET `seconds` before it goes up."""
        self._command(f"delay {seconds}")

    def seen(self) -> dict[str, Any]:
        """{"gets": {digest: blob GETs}, "most_repositories": the most repositories whose blob
        GETs were held by the delay at once}."""
        return dict(json.loads(self._command("seen")))

    def _command(self, line: str) -> str:
        """Its answer: "ok", or what `seen` says (a JSON line)."""
        assert self._process is not None and self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.write(line + "\n")
        self._process.stdin.flush()
        answer = self._process.stdout.readline().strip()
        if answer != "ok" and not answer.startswith("{"):
            raise RuntimeError(f"proxy did not take {line!r}:\n{self.log_path.read_text()}")
        return answer

    def stop(self) -> None:
        """Kill the proxy and reap it. Idempotent."""
        if self._process is not None:
            if self._process.poll() is None:
                self._process.send_signal(signal.SIGKILL)
            self._process.wait()
            for pipe in (self._process.stdin, self._process.stdout):
                if pipe is not None:
                    pipe.close()
            self._process = None

    def __enter__(self) -> StallingProxy:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()
