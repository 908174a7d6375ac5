"""/proc/PID/mountinfo fields: the kernel writes space, tab, newline and backslash in paths and
sources as octal escapes (`\\040`); every reader of the file takes them back here."""

from __future__ import annotations

import re

_ESCAPED = re.compile(r"\\([0-7]{3})")


def unescape(field: str) -> str:
    return _ESCAPED.sub(lambda match: chr(int(match[1], 8)), field)
