"""skopeo, the containers project's image tool: what reconcile fetches images with.

Why skopeo: it speaks the registry protocol with everything users expect (TLS, the usual
credential files: `auth.json`, Docker's `config.json`; token auth; retries; multi-arch
indexes resolved to this host's platform) and reads local sources alike. reconcile drives its
image proxy (`skopeo experimental-image-proxy`, the interface ostree and bootc fetch images
through): skopeo fetches and verifies each blob and streams it down a pipe, which reconcile
unpacks as it arrives (state.images). `skopeo copy` into a layout first, then unpacking, wrote
every layer twice and could not start unpacking before the last byte came (measured in
bench/README.md).

Sources are skopeo transports: `docker://REF`, `oci:/DIR[:TAG]`, `docker-archive:/FILE`.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SKOPEO = ["skopeo"]
"""skopeo keeps a cache of which blobs registries hold in /var/lib/containers/cache (for root),
as every tool of the containers family does; the layout under the state dir is ours."""
PROXY_PROTOCOL = "0.2."
"""The image proxy protocol reconcile speaks (skopeo 1.9 answers 0.2.3; later 0.2.x add calls)."""
PROXY_MESSAGE_MAX = 32 * 1024
"""The proxy's largest message; payloads (manifests, blobs) come down pipes."""
PIPE_SIZE = 1 << 20
"""Bytes a payload pipe holds, and read at once (Linux's default pipe-max-size)."""
PROXY_EXIT_WAIT = 5.0
"""Seconds the proxy gets to exit once its socket is closed, before it is killed."""


NOT_INSTALLED = "skopeo is not installed (Debian package skopeo; scripts/setup.sh installs it)"


class SkopeoError(Exception):
    """skopeo failed; the message is its own last words."""


@dataclass(frozen=True)
class BlobPipe:
    """A blob on its way: `file` is the read end of the pipe skopeo writes it into. The pipe
    ends (EOF) only once ImageProxy.finish has taken skopeo's verdict on it."""

    file: PipeReader
    pipe_id: int


class ImageProxy:
    """One `skopeo experimental-image-proxy`, for one pull: JSON calls over a SOCK_SEQPACKET
    socket pair. skopeo answers calls one at a time, but streams any number of blobs at once,
    each verified (digest and size) as it goes; `finish` gives the verdict. Closing the proxy
    (or its death) ends every pipe, so a reader never waits on a dead skopeo."""

    def __init__(self, tls_verify: bool, tmpdir: Path, stall_timeout: float):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._socket = ours
        self._stderr = tempfile.TemporaryFile()
        self._watch = _StallWatch(stall_timeout)
        try:
            if shutil.which(SKOPEO[0]) is None:
                raise SkopeoError(NOT_INSTALLED)
            # Killed with its caller (util-linux's setpriv sets the parent-death signal, kept
            # across exec): the proxy answers one call at a time, so while it waits on a stalled
            # registry it would not see its socket close, and outlive a killed pull.
            self._process = _start(["setpriv", "--pdeathsig", "KILL", "--", *SKOPEO, "--tmpdir", str(tmpdir),
                                    "experimental-image-proxy",
                                    f"--sockfd={theirs.fileno()}", f"--tls-verify={str(tls_verify).lower()}"],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._stderr,
                                   pass_fds=(theirs.fileno(),))
        except BaseException:
            ours.close()
            self._stderr.close()
            raise
        finally:
            theirs.close()
        self._watch.start(self._process)
        try:
            version, _ = self._call("Initialize")
            if not str(version).startswith(PROXY_PROTOCOL):
                raise SkopeoError(f"this skopeo's image proxy speaks protocol {version}, "
                                  f"reconcile speaks {PROXY_PROTOCOL}x")
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> ImageProxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the proxy (it exits when its socket closes; killed if it lingers)."""
        if self._socket.fileno() < 0:
            return
        self._watch.stop()
        self._socket.close()
        try:
            self._process.wait(PROXY_EXIT_WAIT)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._stderr.close()

    def open(self, source: str) -> int:
        """A handle on the image `source` names (a skopeo transport reference)."""
        handle, _ = self._call("OpenImage", source)
        return int(handle)

    def manifest(self, image: int) -> tuple[str, bytes]:
        """(the digest of the manifest as the source holds it, the manifest as OCI): an index
        is resolved to this host's platform, a Docker manifest converted, once per handle."""
        digest, pipe = self._call("GetManifest", image)
        return str(digest), self._whole(pipe)

    def converted_config(self, image: int) -> bytes:
        """The image's config converted to OCI: the one a converted manifest names, which the
        source does not hold."""
        _, pipe = self._call("GetFullConfig", image)
        return self._whole(pipe)

    def blob(self, image: int, digest: str, size: int) -> BlobPipe:
        """Start streaming the blob; read `file` to its end, then `finish` the pipe."""
        _, pipe = self._call("GetBlob", image, digest, size)
        if pipe is None:
            raise SkopeoError(f"the image proxy sent no pipe for blob {digest}")
        return pipe

    def read_blob(self, image: int, digest: str, size: int) -> bytes:
        """A small blob (a config), whole and verified."""
        return self._whole(self.blob(image, digest, size))

    def finish(self, pipe: BlobPipe) -> None:
        """Wait until skopeo has written the whole blob, then end the pipe; SkopeoError if the
        fetch failed or the blob is not the one its digest names."""
        self._call("FinishPipe", pipe.pipe_id)

    def _whole(self, pipe: BlobPipe | None) -> bytes:
        if pipe is None:
            raise SkopeoError("the image proxy sent no pipe for its answer")
        chunks: list[bytes] = []
        with pipe.file:
            reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: pipe.file.read(1 << 16), b"")),
                                      daemon=True)
            reader.start()  # skopeo writes before it finishes: a pipe holds only 64 KiB
            try:
                self.finish(pipe)
            finally:
                reader.join()
        return b"".join(chunks)

    def _call(self, method: str, *args: object) -> tuple[Any, BlobPipe | None]:
        try:
            with self._watch.waiting():
                self._socket.sendmsg([json.dumps({"method": method, "args": list(args)}).encode()])
                message, fds, _, _ = socket.recv_fds(self._socket, PROXY_MESSAGE_MAX, 1)
        except OSError:
            message, fds = b"", []
        pipe = None
        for fd in fds:
            os.set_inheritable(fd, False)
        if not message:
            for fd in fds:
                os.close(fd)
            raise SkopeoError(self._watch.stalled or self._last_words()
                              or f"skopeo's image proxy stopped answering ({method})")
        try:
            reply = json.loads(message)
        except ValueError:
            reply = {"error": f"an answer that is not JSON to {method}"}
        if fds:
            pipe = BlobPipe(PipeReader(_pipe_reader(fds[0]), self._watch), int(reply.get("pipeid") or 0))
        if not reply.get("success"):
            if pipe is not None:
                pipe.file.close()
            raise SkopeoError(" ".join(str(reply.get("error") or f"{method} failed").split()))
        return reply.get("value"), pipe

    def _last_words(self) -> str:
        try:
            self._process.wait(PROXY_EXIT_WAIT)
        except subprocess.TimeoutExpired:
            return ""
        self._stderr.seek(0)
        return _last_words(self._stderr.read().decode(errors="replace"))


class _StallWatch:
    """Kills skopeo when a call or a pipe read has waited `timeout` seconds (0: never) with no
    byte coming (why is then `stalled`): the caller's socket and pipes then end, and the pull
    fails saying so. A registry that stops sending on an open connection would otherwise hold
    a pull for ever, and with it the image store's lock (removals wait on it) and the locks of
    the layers it fetches (other pulls of them wait on those). Only time spent waiting on
    skopeo counts, not our unpacking."""

    def __init__(self, timeout: float):
        self._timeout = timeout
        self._waiting = 0
        self._since = 0.0  # the last byte, or the start of the wait
        self._lock = threading.Lock()
        self._ended = threading.Event()
        self.stalled = ""

    def start(self, process: subprocess.Popen[Any]) -> None:
        if self._timeout > 0:
            threading.Thread(target=self._watch, args=(process,), name="skopeo stall watch", daemon=True).start()

    def stop(self) -> None:
        self._ended.set()

    @contextmanager
    def waiting(self) -> Iterator[None]:
        with self._lock:
            if self._waiting == 0:
                self._since = time.monotonic()
            self._waiting += 1
        try:
            yield
        finally:
            with self._lock:
                self._waiting -= 1
                self._since = time.monotonic()

    def _watch(self, process: subprocess.Popen[Any]) -> None:
        while not self._ended.wait(min(1.0, self._timeout / 4)):
            with self._lock:
                idle = time.monotonic() - self._since if self._waiting else 0.0
            if idle >= self._timeout:
                self.stalled = f"no data from the registry for {self._timeout:g} s (RECONCILE_PULL_STALL_TIMEOUT)"
                process.kill()
                return


class PipeReader:
    """A payload pipe whose reads count as waiting on skopeo (_StallWatch). A read returns what
    has come, up to `size` bytes (b"" at the end), as soon as anything has: a slow registry's
    trickle is progress, where a read of the whole `size` could wait past the stall limit."""

    def __init__(self, file: io.BufferedReader, watch: _StallWatch):
        self._file = file
        self._watch = watch

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            return b"".join(iter(lambda: self.read(PIPE_SIZE), b""))
        with self._watch.waiting():
            return self._file.read1(size)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> PipeReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def source_digest(source: str, tls_verify: bool, stall_timeout: float) -> str:
    """The digest of the manifest a pull of `source` would take, without pulling anything:
    resolved by the image proxy as a pull resolves it, so an index gives the entry skopeo
    chooses for this host (its architecture and variant, in skopeo's own order of preference),
    not one of our choosing that the pull would then not take."""
    with tempfile.TemporaryDirectory(prefix="rc-resolve-") as scratch, \
            ImageProxy(tls_verify, Path(scratch), stall_timeout) as proxy:
        digest, _ = proxy.manifest(proxy.open(source))
    return digest


def _pipe_reader(fd: int) -> io.BufferedReader:
    """The read end of a payload pipe, widened and read in large pieces: a decompressor reads
    8 KiB at a time, and each of those a syscall and a wake-up of skopeo's writer otherwise
    (a 100 MB layer streamed 2.5x slower)."""
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:  # above /proc/sys/fs/pipe-max-size for an unprivileged caller: the default then
        pass
    return io.BufferedReader(io.FileIO(fd, "rb"), PIPE_SIZE)


def _start(argv: list[str], **options: Any) -> subprocess.Popen[Any]:
    try:
        return subprocess.Popen(argv, **options)
    except FileNotFoundError:
        raise SkopeoError(NOT_INSTALLED) from None


def _run(args: list[str]) -> bytes:
    """skopeo's output; SkopeoError with its last words if it fails."""
    with _start([*SKOPEO, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as started:
        stdout, stderr = started.communicate()
    if started.returncode != 0:
        raise SkopeoError(_last_words(stderr.decode(errors="replace")) or f"skopeo exited {started.returncode}")
    return bytes(stdout)


def _last_words(stderr: str) -> str:
    """skopeo's error, one line, without its log prefix (`time="..." level=fatal msg="..."`)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    if not lines:
        return ""
    last = lines[-1]
    message = re.search(r'msg="(.*)"\s*$', last)
    text = message.group(1).replace('\\"', '"') if message else last
    return " ".join(text.split())
