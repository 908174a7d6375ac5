"""Stop signals as Docker reads them (`STOPSIGNAL`, `--stop-signal`, Compose's `stop_signal`): a
name with or without `SIG`, in any case (SIGINT, INT, sigquit), a real-time one as
`SIGRTMIN+N` / `SIGRTMAX-N`, or a number. Kept in one canonical spelling (`SIGINT`), so that
a record of a start compares equal however the spec wrote it.
"""

from __future__ import annotations

import re
import signal

from specs.errors import quoted
from specs.fields import describe_value

DEFAULT_STOP_SIGNAL = "SIGTERM"
"""Docker's, when neither the spec nor the image names one."""

_REALTIME_RE = re.compile(r"SIGRTMIN\+([0-9]{1,2})|SIGRTMAX-([0-9]{1,2})")
_FORMS = "a signal name like SIGINT or INT, or its number"


def to_stop_signal(value: object) -> str:
    """The canonical name of a signal written as Docker takes it; ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"expected {_FORMS}, got {describe_value(value)}")
    text = str(value).strip().upper()
    number = int(text) if text.isdigit() else _number_of_name(text if text.startswith("SIG") else f"SIG{text}")
    name = _name_of(number) if number is not None and 1 <= number <= signal.SIGRTMAX else None
    if name is None:
        raise ValueError(f"expected {_FORMS}, got {quoted(str(value))}")
    return name


def signal_number(name: str) -> int:
    """The number of a canonical name (to_stop_signal's)."""
    number = _number_of_name(name)
    if number is None:
        raise ValueError(f"not a signal: {quoted(name)}")
    return number


def _number_of_name(name: str) -> int | None:
    realtime = _REALTIME_RE.fullmatch(name)
    if realtime is not None:
        number = (signal.SIGRTMIN + int(realtime[1]) if realtime[1] is not None
                  else signal.SIGRTMAX - int(realtime[2]))
        return number if signal.SIGRTMIN <= number <= signal.SIGRTMAX else None
    try:
        return int(signal.Signals[name])
    except KeyError:
        return None


def _plain_name(number: int) -> str | None:
    try:
        return signal.Signals(number).name
    except ValueError:
        return None


def _name_of(number: int) -> str | None:
    """None for 32 and 33: glibc's own, no program's to be stopped with."""
    if signal.SIGRTMIN < number < signal.SIGRTMAX:
        return f"SIGRTMIN+{number - signal.SIGRTMIN}"
    return _plain_name(number)
