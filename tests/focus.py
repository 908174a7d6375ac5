"""Focuses for the pure diff tests: a focused pass's diff must make exactly the whole diff's
changes about its focus."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from controllers.base import Focus
from specs.model import Stack


def focus_on(stacks: Mapping[str, Stack], stack: str, containers: Sequence[str]) -> Focus:
    """Focus.on these containers of `stack`; for one the spec no longer has (the watch agent
    then makes a whole pass instead), the focus built by hand, since every diff must still leave
    out what is not about it."""
    pairs = [(stack, name) for name in containers]
    spec = stacks[stack].containers
    joined = frozenset((stack, network) for name in containers if name in spec for network in spec[name].networks)
    return Focus.on(stacks, pairs) or Focus(frozenset(pairs), joined)
