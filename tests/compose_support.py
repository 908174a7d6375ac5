"""Shared by the compose end-to-end tests (no tests here): an image to serve from, the CLI, and
HTTP from the sandbox."""

from __future__ import annotations

from pathlib import Path

from tests.image_builder import BuiltImage, Layer, build
from tests.sandbox import Sandbox


def web_image(path: Path) -> BuiltImage:
    return build(path, [Layer.busybox(), Layer(files={"/www/index.html": "hello from compose\n"})],
                 cmd=["sleep", "100000"], env={"PATH": "/bin"}, tag="v1")


def reconcile_ok(sandbox: Sandbox, *args: str) -> str:
    result = sandbox.reconcile(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


GET = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=2).read().decode(), end='')"
"""An HTTP client that resolves names through the libc (busybox-static's wget cannot here)."""


def fetch(sandbox: Sandbox, url: str) -> str:
    return sandbox.run("python3", "-c", GET, url, check=False).stdout
