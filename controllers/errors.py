"""Errors raised while applying changes: reported together, never as a traceback."""

from __future__ import annotations

from collections.abc import Sequence


class ApplyError(Exception):
    """One change could not be carried out; the message says which and why."""


class ApplyErrors(Exception):
    """Every failure of one batch: a batch keeps going past a failed change so that one bad
    object does not leave the rest unconverged (teardown especially)."""

    def __init__(self, errors: Sequence[ApplyError]):
        self.errors = list(errors)
        super().__init__("\n".join(str(e) for e in self.errors))
