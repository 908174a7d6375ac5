"""The watched directory as specs: the last good spec of every file, and the errors of files
that are not good now. A file that turns invalid (or clashes with another stack) keeps its last
good spec in force; a file that disappears takes its stack with it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from specs.errors import SpecError, SpecErrors
from specs.loader import StackFile, cross_check, load_file, stack_paths
from specs.model import Stack


@dataclass(frozen=True)
class Refresh:
    changed: frozenset[str]
    """Stacks whose spec is new or different."""
    removed: frozenset[str]
    """Stacks no file defines any more (the file deleted, or its stack renamed)."""
    errors: Mapping[Path, list[SpecError]]
    """Files (re)read just now that are not good: their last good spec stays."""


@dataclass
class StackDir:
    root: Path
    good: dict[Path, StackFile] = field(default_factory=dict)
    errors: dict[Path, list[SpecError]] = field(default_factory=dict)

    def stacks(self) -> dict[str, StackFile]:
        return {f.stack.name: f for f in self.good.values()}

    def refresh(self, paths: Iterable[Path] | None = None) -> Refresh:
        """Re-read these files (None: every stack file of the directory, and forget files
        that are gone). Level-triggered: what matters is each file as it is now, not the
        events that named it."""
        before = {name: f.stack for name, f in self.stacks().items()}
        if not self.root.is_dir():  # unmounted, or moved away: not a reason to prune anything
            errors = {self.root: [SpecError(str(self.root), 0, 0, (), "the watched directory is gone; "
                                            "every stack stays on its last good spec")]}
            self.errors.update(errors)
            return Refresh(frozenset(), frozenset(), errors)
        self.errors.pop(self.root, None)
        on_disk = set(stack_paths(self.root))
        todo = on_disk | set(self.good) | set(self.errors) if paths is None else {Path(p) for p in paths}
        todo = {p for p in todo if self._is_stack_file(p)}
        for path in todo - on_disk:  # removals first: a renamed file must not clash with its old self
            self.errors.pop(path, None)
            self.good.pop(path, None)
        errors: dict[Path, list[SpecError]] = {}
        for path in sorted(todo & on_disk):
            self.errors.pop(path, None)
            try:
                candidate = load_file(path)
            except SpecErrors as exc:
                errors[path] = exc.errors
                continue
            # The accepted files are valid together; any clash is the newcomer's to fix.
            clash = cross_check([*(f for p, f in self.good.items() if p != path), candidate])
            if clash:
                errors[path] = clash
            else:
                self.good[path] = candidate
        self.errors.update(errors)
        after = {name: f.stack for name, f in self.stacks().items()}
        return Refresh(changed=frozenset(n for n, s in after.items() if before.get(n) != s),
                       removed=frozenset(set(before) - set(after)), errors=errors)

    def adopt(self, path: Path, stack: Stack) -> bool:
        """Take `stack` as the last good spec of an invalid file (the spec it was last applied
        with, after an agent restart), unless it clashes with the stacks in force."""
        candidate = StackFile(path, stack)
        if cross_check([*(f for p, f in self.good.items() if p != path), candidate]):
            return False
        self.good[path] = candidate
        return True

    def _is_stack_file(self, path: Path) -> bool:
        return path.parent == self.root and path.suffix in (".yaml", ".yml") and not path.name.startswith(".")
