"""A root filesystem to run containers from without an image (no tests here)."""

from __future__ import annotations

import shutil
from pathlib import Path


def busybox_rootfs(root: Path) -> Path:
    """A busybox root filesystem (Debian's busybox-static), with a page for httpd to serve."""
    for sub in ("bin", "etc", "www", "proc", "dev", "tmp", "run"):
        (root / sub).mkdir()
    shutil.copy("/usr/bin/busybox", root / "bin" / "busybox")
    for applet in ("sh", "httpd", "sleep", "hostname", "cat", "ps", "wget", "ping", "ip", "id", "touch", "env"):
        (root / "bin" / applet).symlink_to("busybox")
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    (root / "www" / "index.html").write_text("hello from web\n")
    return root
