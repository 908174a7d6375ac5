"""One JSON line per thing the agent does (what, why, how long), for journald and log
shippers: machine-readable without a parser of our own."""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import TextIO


class ActionLog:
    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self._stream = stream
        self._lock = threading.Lock()  # lines from the file, event and worker threads never interleave

    def emit(self, event: str, **fields: object) -> None:
        line = json.dumps({"ts": round(time.time(), 3), "event": event, **fields}, default=str)
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()
