"""The watch agent's producer for the stack directory: inotify (watchfiles, debounced) on the
directory the root names when armed, re-armed (and every file re-read) when the root names
another one: a symlink flipped to the next revision (as git-sync does), the directory swapped
with `mv`, or deleted and made again."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path

import watchfiles

from reconcile.watch.actionlog import ActionLog

REARM_CHECK = 0.5
"""Seconds between checks that the watched path still names the directory being watched."""

Changed = Callable[[set[Path] | None, str], None]
"""Told which files changed (None: re-read them all) and why."""


def _identity(directory: Path) -> tuple[int, int] | None:
    """The directory a path names now (symlinks followed), None when there is none."""
    try:
        found = os.stat(directory)
    except OSError:
        return None
    return (found.st_dev, found.st_ino) if stat.S_ISDIR(found.st_mode) else None


class DirectoryWatch:
    def __init__(self, root: Path, debounce_ms: int, is_stack_file: Callable[[Path], bool], changed: Changed,
                 log: ActionLog, stop: threading.Event) -> None:
        self._root = root
        self._debounce_ms = debounce_ms
        self._is_stack_file = is_stack_file
        self._changed = changed
        self._log = log
        self._stop = stop

    def run(self) -> None:
        """Until `stop` is set. Each time the watch is armed, every file is read again once it
        is (the first yield comes after the inotify watch is in place): what changed between
        the directory's last reading (the agent's start, a re-arm) and the arming would
        otherwise wait for the next resync."""
        root = self._root
        armed = _identity(root)
        while not self._stop.is_set():
            if armed is not None:
                try:
                    settled = False
                    for changes in watchfiles.watch(root, debounce=self._debounce_ms, step=20,
                                                    stop_event=self._stop, recursive=False,
                                                    rust_timeout=int(REARM_CHECK * 1000), yield_on_timeout=True):
                        if not settled:
                            settled = True
                            self._changed(None, "watch armed")
                        elif changes:
                            self._changed(self._dirty({Path(path) for _, path in changes}), "file changed")
                        if _identity(root) != armed:
                            break
                except FileNotFoundError:  # gone between the check and the arming
                    pass
            elif self._stop.wait(REARM_CHECK):
                return
            now = _identity(root)
            if now != armed:
                self._log.emit("watch re-armed", directory=str(root),
                               target=os.path.realpath(root) if now else None,
                               why="the directory was replaced" if now else "the directory is gone; waiting for it")
                armed = now
                self._changed(None, "watched directory replaced")

    def _dirty(self, paths: set[Path]) -> set[Path] | None:
        """The stack files to re-read; None (all) when anything else changed: what stack files
        read (a Compose file's `.env`, its env_file entries), or the entries they may point
        through (a symlink or directory of the root, a ConfigMap-style `..data` flip)."""
        return paths if all(self._is_stack_file(path) for path in paths) else None
