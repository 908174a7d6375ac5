"""A change is data: the plan printer, JSON output, apply loop and tests consume the same list."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Action(StrEnum):
    CREATE = "create"
    UPDATE = "update"  # in place: the object (and any process using it) survives
    RECREATE = "recreate"  # delete then create: disruptive
    DELETE = "delete"


@dataclass(frozen=True)
class FieldChange:
    path: str
    old: object
    new: object


@dataclass(frozen=True)
class Change:
    action: Action
    kind: str  # resource kind: "network", "sysctl", "endpoint", "container", ...
    key: str  # "<stack>/<name>[...]" or a host-wide key such as "net.ipv4.ip_forward"
    fields: tuple[FieldChange, ...] = ()
    reason: str = ""
    disruptive: bool = False
    follows: frozenset[tuple[str, str]] = field(default=frozenset(), compare=False, repr=False)
    """(kind, key) of the changes of its pass it comes after and needs made: a pass that keeps
    only some of them (a narrowed selection) leaves it for a later one (Plan.selected)."""
    # What apply needs (desired and/or observed records); not part of the plan's identity.
    desired: object = field(default=None, compare=False, repr=False)
    observed: object = field(default=None, compare=False, repr=False)

    @property
    def stack(self) -> str | None:
        return self.key.split("/", 1)[0] if "/" in self.key else None

    def to_json(self) -> dict[str, object]:
        return {
            "action": self.action.value,
            "kind": self.kind,
            "key": self.key,
            "fields": [{"path": f.path, "old": f.old, "new": f.new} for f in self.fields],
            "reason": self.reason,
            "disruptive": self.disruptive,
        }
