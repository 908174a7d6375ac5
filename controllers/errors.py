"""Errors raised while applying changes: reported together, never as a traceback."""

from __future__ import annotations

from collections.abc import Sequence

from controllers.change import Change


class ApplyError(Exception):
    """One change could not be carried out; the message says which and why. `change` names it
    when the failure is that change's own: when every failure of a batch names its change, the
    changes named by none were carried out."""

    def __init__(self, message: str, change: Change | None = None):
        super().__init__(message)
        self.change = change

    @classmethod
    def of(cls, change: Change, exc: BaseException) -> ApplyError:
        """`change` failed, alone, for the reason `exc` gives."""
        return cls(f"{change.action} {change.kind} {change.key}: {exc}", change)


class ApplyErrors(Exception):
    """Every failure of one batch: a batch keeps going past a failed change so that one bad
    object does not leave the rest unconverged (teardown especially)."""

    def __init__(self, errors: Sequence[ApplyError]):
        self.errors = list(errors)
        super().__init__("\n".join(str(e) for e in self.errors))
