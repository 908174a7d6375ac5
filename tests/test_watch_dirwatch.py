"""The stack directory's watch (inotify, no root needed): what changes before it is armed is
not left for the resync."""

from __future__ import annotations

import io
import threading
from pathlib import Path

from reconcile.watch.actionlog import ActionLog
from reconcile.watch.dirwatch import DirectoryWatch
from tests.waiting import eventually


def test_every_file_is_read_again_once_the_watch_is_armed(tmp_path: Path) -> None:
    """The agent reads the directory before its file thread arms the watch: a file written
    in between (a git-sync flip during a restart) is read again once the watch is armed,
    and a later write is its own event."""
    calls: list[tuple[set[Path] | None, str]] = []
    stop = threading.Event()
    watch = DirectoryWatch(tmp_path, 10, lambda path: path.suffix == ".yaml",
                           lambda paths, why: calls.append((paths, why)), ActionLog(io.StringIO()), stop)
    thread = threading.Thread(target=watch.run, daemon=True)
    thread.start()
    try:
        assert eventually(lambda: calls[:1], [(None, "watch armed")]) == [(None, "watch armed")]
        (tmp_path / "a.yaml").write_text("name: a\n")
        assert eventually(lambda: calls[1:2], [({tmp_path / "a.yaml"}, "file changed")]) == \
            [({tmp_path / "a.yaml"}, "file changed")]
    finally:
        stop.set()
        thread.join(5)
