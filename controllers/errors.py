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


class Held(Exception):
    """A change not made for now, by choice rather than by failure: what it needs is not there
    yet, may still come, and the caller chose not to wait for it (the watch agent's start whose
    dependency is not healthy yet: waiting would stall every other repair). `change` names it
    (None while the gate that held it raises it: the controller names it); `dependencies`:
    what it waits on; `remaining`: seconds left before the wait fails."""

    def __init__(self, reason: str, dependencies: Sequence[str] = (), remaining: float = 0.0,
                 change: Change | None = None):
        super().__init__(reason)
        self.reason = reason
        self.dependencies = tuple(dependencies)
        self.remaining = remaining
        self.change = change

    def of(self, change: Change) -> Held:
        """This hold, of `change`."""
        return Held(self.reason, self.dependencies, self.remaining, change)


class ApplyErrors(Exception):
    """Every failure of one batch: a batch keeps going past a failed change so that one bad
    object does not leave the rest unconverged (teardown especially). `held`: the batch's
    changes held back (not made, not failed), raised with it even when nothing failed."""

    def __init__(self, errors: Sequence[ApplyError], held: Sequence[Held] = ()):
        self.errors = list(errors)
        self.held = list(held)
        super().__init__("\n".join([*(str(e) for e in self.errors),
                                     *(f"{h.change.key if h.change else '?'}: held: {h.reason}" for h in self.held)]))


class InterruptedPartway(KeyboardInterrupt):
    """Ctrl-C during a batch, with the changes of it that were carried out (`made`): a
    controller that knows them says so, and the interruption goes on."""

    def __init__(self, made: Sequence[Change]):
        super().__init__()
        self.made = list(made)
