"""Where each field of a stack came from, when the stack was converted from another format
(a Compose file): errors found on the native stack must name the field the user wrote, at its
place in the file the user wrote, not a path in a document they never saw."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from specs.errors import Loc


@dataclass(frozen=True)
class Origins:
    """Native field path -> source field path. Empty: the stack file is the source (native)."""

    sources: Mapping[Loc, Loc] = field(default_factory=dict)

    def translate(self, loc: Loc) -> Loc:
        """The source path of the deepest recorded prefix of `loc`. What lies below it is not
        appended: below a converted field, native and source paths differ (a port string
        becomes {host, container}); a subtree passed through unchanged records every node."""
        if not self.sources:
            return loc
        for end in range(len(loc), -1, -1):
            source = self.sources.get(loc[:end])
            if source is not None:
                return source
        return ()
