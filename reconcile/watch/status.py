"""What the watch agent tells `reconcile status`: one row per stack file in the store (its
stack, Synced / OutOfSync / Error, its last apply, its error), written only when it says
something new, so a pass that changes nothing costs no fsync."""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from dataclasses import replace
from pathlib import Path

from state.store import Store, WatchStatus


class StatusWriter:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._written = {row.source: row for row in store.watch_statuses()}  # by source: the row last stored

    def stack(self, source: str, name: str, errors: Sequence[str], held: Sequence[str], applied: bool) -> None:
        """A stack's row: Error with its errors, OutOfSync while restarts are held back, else
        Synced. `applied`: its spec was applied just now; otherwise its last apply stands."""
        now = time.time()
        sync = "Error" if errors else "OutOfSync" if held else "Synced"
        previous = self._written.get(source)
        applied_at = now if applied else (previous.applied_at if previous else None)
        self._write(WatchStatus(source, name, sync, applied_at, "\n".join([*errors, *held]) or None, now))

    def invalid_file(self, path: Path, error: str) -> None:
        """A file that has never been valid: a row with no stack."""
        previous = self._written.get(str(path))
        self._write(WatchStatus(str(path), None, "Error", previous.applied_at if previous else None, error,
                                time.time()))

    def forget_invalid_files(self, still_invalid: Collection[Path]) -> None:
        """The rows of files never valid that are gone or good now."""
        for source in [s for s, row in self._written.items() if row.stack is None and Path(s) not in still_invalid]:
            self._forget(source)

    def stack_moved(self, name: str, path: Path) -> None:
        """Another file defines the stack now: its row follows, with its last apply."""
        for source, row in [(s, r) for s, r in self._written.items() if r.stack == name and s != str(path)]:
            self._forget(source)
            self._write(replace(row, source=str(path)))

    def forget_stack(self, name: str) -> None:
        for source in [s for s, row in self._written.items() if row.stack == name]:
            self._forget(source)

    def _write(self, status: WatchStatus) -> None:
        previous = self._written.get(status.source)
        if previous is not None and replace(previous, updated_at=status.updated_at) == status:
            return
        self._store.record_watch_status(status)
        self._written[status.source] = status  # once stored: a failed write is tried again

    def _forget(self, source: str) -> None:
        self._store.forget_watch_status(source)
        del self._written[source]
