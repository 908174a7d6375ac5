"""Files written whole or not at all: a private temporary file beside the target, flushed to
disk, then renamed over it. A reader (or a process after a power cut) sees the old file, no
file, or the whole new one; never a part."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_durably(path: Path, data: bytes, temporary_prefix: str) -> None:
    """Write `data` to `path` so. The temporary file's name starts with `temporary_prefix` (so
    whoever cleans the directory can tell a killed writer's leftover); it is removed when the
    write fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=temporary_prefix, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
