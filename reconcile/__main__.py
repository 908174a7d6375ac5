"""`python -m reconcile` and the `reconcile` command. `reconcile.cli` and what it imports take
~70 ms to load: a Ctrl-C then ends the run as one during the verb does (130, no traceback).
Only the interpreter's own start-up, before this module runs, is left uncovered."""

from __future__ import annotations

import signal
import sys


def run() -> None:
    try:
        from reconcile.cli import main
    except KeyboardInterrupt:
        sys.exit(128 + signal.SIGINT)  # as cli.EXIT_INTERRUPTED, which cannot be imported now
    sys.exit(main())


if __name__ == "__main__":
    run()
