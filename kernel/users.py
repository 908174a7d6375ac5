"""Users and groups as a container's own /etc/passwd and /etc/group define them: the OCI runtime
takes numeric ids, and a name means what the image (or root directory) says, not the host."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kernel.inroot import read_in_root


class UnknownUser(Exception):
    pass


@dataclass(frozen=True)
class Ids:
    uid: int
    gid: int
    groups: tuple[int, ...]  # supplementary groups


def _table(root: Path, path: str) -> list[list[str]]:
    """Lines of a colon-separated file inside the container's root (symlinks resolved inside it)."""
    text = read_in_root(root, path) or ""
    return [line.split(":") for line in text.splitlines() if line.count(":") >= 2]


def lookup(user: str, root: Path) -> Ids:
    """`UID`, `UID:GID`, `NAME` or `NAME:GROUP`, resolved in the files under `root` (the
    container's root as seen from here). A numeric uid needs no passwd entry, as with Docker."""
    name, _, group = user.partition(":")
    passwd, groups = _table(root, "/etc/passwd"), _table(root, "/etc/group")
    entry = next((e for e in passwd if e[0] == name or (name.isdigit() and e[2] == name)), None)
    if entry is None and not name.isdigit():
        raise UnknownUser(f"unknown user '{name}' in the container's /etc/passwd")
    uid = int(name) if name.isdigit() or entry is None else int(entry[2])
    gid = int(entry[3]) if entry and len(entry) > 3 and entry[3].isdigit() else 0  # Docker's: group root
    if group:
        match = next((g for g in groups if g[0] == group or g[2] == group), None)
        if match is None and not group.isdigit():
            raise UnknownUser(f"unknown group '{group}' in the container's /etc/group")
        gid = int(group) if group.isdigit() or match is None else int(match[2])
    member_of = tuple(int(g[2]) for g in groups
                      if len(g) > 3 and entry is not None and entry[0] in g[3].split(",") and g[2].isdigit())
    return Ids(uid, gid, member_of)
