"""The watched directory as specs: the last good spec of every file, and the errors of files
that are not good now. A file that turns invalid (or clashes with another stack) keeps its last
good spec in force; a file that disappears takes its stack with it, unless another file of the
directory declares that stack (a rename, a copy then a delete): the stack moves to that file.

A clash is resolved the same way whenever it is seen, by a live agent or by one just started:
the file a stack was last applied from keeps it, the newcomer is refused."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from specs.errors import SpecError, SpecErrors
from specs.loader import StackFile, cross_check, load_file, stack_paths
from specs.model import Stack
from specs.shared import shared


@dataclass(frozen=True)
class Refresh:
    changed: frozenset[str]
    """Stacks whose spec is new or different."""
    removed: frozenset[str]
    """Stacks no file defines any more (the file deleted, or its stack renamed)."""
    errors: Mapping[Path, list[SpecError]]
    """Files (re)read just now that are not good (their last good spec stays): those named, and
    of a whole read those whose errors are new (a file that stayed bad says nothing new)."""
    moved: Mapping[str, Path] = field(default_factory=dict)
    """Stacks now defined by another file than before: the file that defines them now."""


def renewed(before: Stack, after: Stack) -> list[str]:
    """The containers ("stack/name") of `before` that `after` leaves out or specifies otherwise
    (the order of their mappings included)."""
    return [f"{before.name}/{key}" for key, container in before.containers.items()
            if key not in after.containers or not container.same_as(after.containers[key])]


def _unsaid(errors: Mapping[Path, list[SpecError]],
            said: Mapping[Path, list[str]]) -> dict[Path, list[SpecError]]:
    """The files whose errors differ from those last reported for them (`said`, as text)."""
    return {path: found for path, found in errors.items() if [str(e) for e in found] != said.get(path)}


@dataclass
class StackDir:
    root: Path
    owners: dict[str, Path] = field(default_factory=dict)
    """The file each stack was last accepted (applied) from; an agent starts it from the store."""
    good: dict[Path, StackFile] = field(default_factory=dict)
    errors: dict[Path, list[SpecError]] = field(default_factory=dict)
    _refused: dict[Path, StackFile] = field(default_factory=dict)
    """Valid files refused for a clash: tried again when what they clash with changes."""

    def stacks(self) -> dict[str, StackFile]:
        return {f.stack.name: f for f in self.good.values()}

    def refresh(self, paths: Iterable[Path] | None = None) -> Refresh:
        """Re-read these files (None: every stack file of the directory, and forget files
        that are gone). Level-triggered: what matters is each file as it is now, not the
        events that named it."""
        before = self.stacks()
        said = {path: [str(e) for e in errors] for path, errors in self.errors.items()}
        if not self.root.is_dir():  # unmounted, or moved away: not a reason to prune anything
            gone = {self.root: [SpecError(str(self.root), 0, 0, (), "the watched directory is gone; "
                                          "every stack stays on its last good spec")]}
            self.errors.update(gone)
            return Refresh(frozenset(), frozenset(), _unsaid(gone, said))
        self.errors.pop(self.root, None)
        on_disk = set(stack_paths(self.root))
        todo = on_disk | set(self.good) | set(self.errors) if paths is None else {Path(p) for p in paths}
        todo = {p for p in todo if self.is_stack_file(p)}
        for path in todo - on_disk:  # removals first: a renamed file must not clash with its old self
            self._forget(path)
        candidates: dict[Path, StackFile] = {}
        errors: dict[Path, list[SpecError]] = {}
        for path in todo & on_disk:
            self._forget(path, keep_good=True)
            try:
                candidates[path] = self._kept(load_file(path))
            except SpecErrors as exc:
                errors[path] = exc.errors
        pending = {**self._refused, **candidates}  # refused files: what they clashed with may be gone
        clashes = self._accept(pending)
        for path, clash in clashes.items():
            if path in candidates or [str(e) for e in clash] != [str(e) for e in self.errors[path]]:
                errors[path] = clash  # reported when read anew, or when it clashes differently
            self._refused[path] = pending[path]
            self.errors[path] = clash
        self.errors.update(errors)
        if paths is None:  # a whole read (start, resync, the directory's events): what is new only
            errors = _unsaid(errors, said)
        after = self.stacks()
        return Refresh(changed=frozenset(n for n, f in after.items()
                                         if n not in before or not before[n].stack.same_as(f.stack)),
                       removed=frozenset(set(before) - set(after)), errors=errors,
                       moved={n: f.path for n, f in after.items() if n in before and before[n].path != f.path})

    def _accept(self, pending: dict[Path, StackFile]) -> dict[Path, list[SpecError]]:
        """Accept every pending file that fits with the accepted ones (which are valid together:
        any clash is the newcomer's to fix), in passes until none more fits: a file accepted in
        a pass may free what an earlier one clashed with (a stack renamed in its file). Returns
        the clashes of the files left out."""
        waiting = sorted(pending, key=lambda p: self._precedence(pending[p]))
        clashes: dict[Path, list[SpecError]] = {}
        accepted = True
        while accepted:
            accepted, clashes = False, {}
            for path in waiting:
                clash = cross_check([*(f for p, f in self.good.items() if p != path), pending[path]])
                if clash:
                    clashes[path] = clash
                    continue
                self._forget(path)
                self.good[path] = pending[path]
                self.owners[pending[path].stack.name] = path
                accepted = True
            waiting = list(clashes)
        return clashes

    def _kept(self, loaded: StackFile) -> StackFile:
        """The file as read, holding the spec in force when it is the same (the order of its
        mappings included: `SpecModel.same_as`): a resync reads every file again, and a
        thousand containers' models built anew each time would replace the ones in force all
        over the heap, whose freed pages glibc keeps while a few objects still live in each. A
        new or different spec is held with its equal parts shared (specs.shared: half the
        memory of a thousand containers' models)."""
        kept = self.good.get(loaded.path)
        in_force = kept.stack if kept is not None and kept.stack.same_as(loaded.stack) else shared(loaded.stack)
        return replace(loaded, stack=in_force)

    def _precedence(self, candidate: StackFile) -> tuple[bool, Path]:
        """The file its stack was last applied from first, then by name."""
        return self.owners.get(candidate.stack.name) != candidate.path, candidate.path

    def _forget(self, path: Path, keep_good: bool = False) -> None:
        self.errors.pop(path, None)
        self._refused.pop(path, None)
        if not keep_good:
            self.good.pop(path, None)

    def adopt(self, path: Path, stack: Stack) -> bool:
        """Take `stack` as the last good spec of an invalid file (the spec it was last applied
        with, after an agent restart), unless it clashes with the stacks in force."""
        candidate = StackFile(path, shared(stack))
        if cross_check([*(f for p, f in self.good.items() if p != path), candidate]):
            return False
        self.good[path] = candidate
        return True

    def is_stack_file(self, path: Path) -> bool:
        return path.parent == self.root and path.suffix in (".yaml", ".yml") and not path.name.startswith(".")
