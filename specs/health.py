"""Docker Compose's `healthcheck` and `depends_on` fields, read exactly as Compose reads them:
a Compose file's values pass through to these fields unchanged (the Compose front end relies on
it), so every spelling Compose takes is taken here, and the defaults are Docker's.
"""

from __future__ import annotations

import re

from specs.errors import quoted
from specs.fields import SubfieldError, describe_value

DEFAULT_INTERVAL = 30.0
DEFAULT_TIMEOUT = 30.0
DEFAULT_RETRIES = 3
DEFAULT_START_PERIOD = 0.0
DEFAULT_START_INTERVAL = 5.0
"""Docker's defaults, in seconds: what a timing that neither the spec nor the image's
HEALTHCHECK gives (or gives as 0: Docker's `0 means inherit`) is (Healthcheck.over)."""

MIN_DURATION = 0.001
"""Docker refuses a duration below 1ms other than 0 (0: the default)."""

TEST_KINDS = ("CMD", "CMD-SHELL", "NONE")
CONDITIONS = ("service_started", "service_healthy", "service_completed_successfully")

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
# Go's time.ParseDuration, which Compose uses: "1m30s", "1.5s", "500ms", "0"; no sign here.
_PART_RE = re.compile(r"([0-9]{1,12}(?:\.[0-9]{0,9})?|\.[0-9]{1,9})(ns|us|µs|μs|ms|s|m|h)")
DURATION_FORMS = "a duration like '30s', '1m30s' or '500ms'"


def to_duration(value: object) -> float:
    """A Compose duration as seconds. A number is refused, as Compose refuses it: `interval: 30`
    would be 30 nanoseconds to Go, not what anyone means. A float is taken back (the JSON
    form of a validated spec holds the normalised text, see format_duration)."""
    if isinstance(value, float) and not isinstance(value, bool):
        return value
    if not isinstance(value, str):
        number = isinstance(value, int) and not isinstance(value, bool)
        raise ValueError(f"expected {DURATION_FORMS}, got {describe_value(value)}"
                         + (f': add a unit ("{value}s")' if number else ""))
    text = value.strip()
    if text == "0":
        return 0.0
    parts = list(_PART_RE.finditer(text))
    if not parts or "".join(p.group(0) for p in parts) != text:
        raise ValueError(f"expected {DURATION_FORMS}, got {quoted(value)}")
    seconds = sum(float(p.group(1)) * _UNITS[p.group(2)] for p in parts)
    if 0 < seconds < MIN_DURATION:
        raise ValueError(f"must be 0 or at least 1ms, got {quoted(value)}")
    return seconds


def format_duration(seconds: float) -> str:
    """The text to_duration reads back to the same float (the state store's JSON round trip)."""
    return f"{int(seconds)}s" if seconds.is_integer() else f"{seconds!r}s"


_NANOSECONDS = {"h": 3_600_000_000_000, "m": 60_000_000_000, "s": 1_000_000_000, "ms": 1_000_000, "µs": 1_000, "ns": 1}


def go_duration(seconds: float) -> str:
    """As Go's time.Duration prints itself, which is how Docker words a duration in what it
    records (`Health check exceeded timeout (1m30s)`): "500ms", "1.5s", "1m30s", "1h0m0s"."""
    nanoseconds = round(seconds * _NANOSECONDS["s"])
    if 0 < nanoseconds < _NANOSECONDS["s"]:  # one unit, the largest that is at least 1
        unit = next((u for u in ("ms", "µs") if nanoseconds >= _NANOSECONDS[u]), "ns")
        return _decimal(nanoseconds, _NANOSECONDS[unit]) + unit
    hours, rest = divmod(nanoseconds, _NANOSECONDS["h"])
    minutes, rest = divmod(rest, _NANOSECONDS["m"])
    text = _decimal(rest, _NANOSECONDS["s"]) + "s"
    if hours:
        return f"{hours}h{minutes}m{text}"
    return f"{minutes}m{text}" if minutes else text


def _decimal(value: int, unit: int) -> str:
    """`value` in `unit`s, its fraction without trailing zeros (Go's fmtFrac)."""
    whole, fraction = divmod(value, unit)
    digits = str(fraction).rjust(len(str(unit)) - 1, "0").rstrip("0")
    return f"{whole}.{digits}" if digits else str(whole)


def to_health_test(value: object) -> object:
    """`test` as Docker's list: a string is ["CMD-SHELL", string]; a list starts with CMD (the
    argv follows), CMD-SHELL (the shell command line follows) or NONE (alone: no check)."""
    if isinstance(value, str):
        return ["CMD-SHELL", value]
    if not isinstance(value, list):
        return value  # the model names the accepted types
    if not value:
        raise ValueError("expected [\"CMD\", ...], [\"CMD-SHELL\", \"...\"], [\"NONE\"] or a shell command "
                         "line, got an empty list (say NONE, or leave healthcheck out for the image's "
                         "HEALTHCHECK)")
    kind = value[0]
    if kind not in TEST_KINDS:
        raise SubfieldError((0,), f"expected CMD, CMD-SHELL or NONE first, got {quoted(str(kind))}")
    if kind == "NONE" and len(value) > 1:
        raise ValueError("[\"NONE\"] takes nothing after it")
    if kind != "NONE" and len(value) < 2:
        raise ValueError(f"[\"{kind}\"] needs " + ("a program to run" if kind == "CMD" else "a command line"))
    return value


def dependency_restart(value: bool) -> bool:
    """Compose's `restart: true` restarts a dependent when Compose restarts its dependency;
    reconcile has no such operation (a recreate of the dependency leaves dependents running):
    refused rather than silently ignored."""
    if value:
        raise ValueError("restart: true is not supported: reconcile never restarts a container because "
                         "its dependency restarted (remove it, or set false)")
    return value
