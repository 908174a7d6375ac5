"""The plan as people read it (terraform style) and as data (`-o json`)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from controllers.change import Action, Change
from reconcile.engine.health import one_line
from reconcile.engine.images import ImageRow
from reconcile.engine.plan import Plan
from state.volumes import StoredVolume

_SYMBOLS = {Action.CREATE: "+", Action.UPDATE: "~", Action.RECREATE: "-/+", Action.DELETE: "-"}
_COLOURS = {Action.CREATE: "32", Action.UPDATE: "33", Action.RECREATE: "35", Action.DELETE: "31"}


def use_colour(stream: TextIO) -> bool:
    """Colour on a terminal only, and never when NO_COLOR is set (no-color.org)."""
    return stream.isatty() and "NO_COLOR" not in os.environ


def _paint(text: str, code: str, colour: bool) -> str:
    return f"\033[{code}m{text}\033[0m" if colour else text


def _value(value: object) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return "(none)" if value is None else str(value)


def _headline(change: Change) -> str:
    what = f"{change.kind} {change.key}"
    if change.action is Action.UPDATE:
        mode = "recreates" if change.disruptive else "in place"
        return f"{what} ({mode}: {change.reason})"
    if change.action is Action.RECREATE:
        return f"{what} (recreate: {change.reason})"
    return f"{what} ({change.reason})" if change.reason else what


def _field_line(change: Change, path: str, old: object, new: object) -> str:
    if change.action is Action.CREATE:
        return f"{path}: {_value(new)}"
    if change.action is Action.DELETE:
        return f"{path}: {_value(old)}"
    return f"{path}: {_value(old)} → {_value(new)}"


def format_changes(plan: Plan, colour: bool) -> list[str]:
    lines: list[str] = []
    for change in plan.changes:
        symbol = _paint(_SYMBOLS[change.action], _COLOURS[change.action], colour)
        lines.append(f"  {symbol} {_headline(change)}")
        lines += [f"      {_field_line(change, f.path, f.old, f.new)}" for f in change.fields]
    return lines


def _warned(plan: Plan, text: str) -> str:
    """The plan's warnings first: read before the changes they may explain."""
    return "\n".join([*format_warnings(plan), text])


def format_warnings(plan: Plan) -> list[str]:
    return [f"WARNING: {warning}" for warning in plan.warnings]


def format_plan(plan: Plan, colour: bool) -> str:
    if plan.empty:
        return _warned(plan, "No changes. The host matches the spec.")
    s = plan.summary()
    return _warned(plan, "\n".join(format_changes(plan, colour) + [
        "", f"Plan: {s.add} to add, {s.change} to change, {s.destroy} to destroy."]))


def format_applied(plan: Plan, colour: bool) -> str:
    if plan.empty:
        return _warned(plan, "No changes. The host matches the spec.")
    s = plan.summary()
    return _warned(plan, "\n".join(format_changes(plan, colour) + [
        "", f"Apply complete: {s.add} added, {s.change} changed, {s.destroy} destroyed."]))


def format_failed(plan: Plan, colour: bool, interrupted: bool = False) -> str:
    """What a failed or interrupted (Ctrl-C) apply or down made before it stopped, and its
    warnings (a failure's error follows, on stderr)."""
    if plan.empty and not interrupted:
        return "\n".join(format_warnings(plan))
    s = plan.summary()
    made = f"{s.add} added, {s.change} changed, {s.destroy} destroyed"
    tail = f"Interrupted: {made} before Ctrl-C; run it again to finish." if interrupted else \
        f"Failed partway: {made} before the error."
    return _warned(plan, "\n".join(format_changes(plan, colour) + ["", tail]))


def stopped_json(plan: Plan) -> dict[str, object]:
    """What a failed or interrupted apply or down had made, as JSON: never in sync, not applied."""
    return {**plan_json(plan), "in_sync": False, "applied": False}


def plan_json(plan: Plan) -> dict[str, object]:
    return {"changes": [c.to_json() for c in plan.changes], "summary": plan.summary().to_json(),
            "in_sync": plan.empty, "warnings": list(plan.warnings)}


def emit(text: str, stream: TextIO | None = None) -> None:
    """`text` and a newline on `stream`, else on sys.stdout as it is now (not as it was when
    this module was imported: a caller may have replaced it since)."""
    (stream or sys.stdout).write(text + "\n")


def volumes_json(removed: Sequence[StoredVolume], kept: Sequence[StoredVolume]) -> dict[str, object]:
    """`down`: the named volumes it removed (`--volumes`) or kept."""
    def rows(found: Sequence[StoredVolume]) -> list[dict[str, str]]:
        return [{"stack": v.stack, "name": v.name, "path": str(v.path)} for v in found]
    return {"volumes_removed": rows(removed), "volumes_kept": rows(kept)}


def emit_volumes(removed: Sequence[StoredVolume], kept: Sequence[StoredVolume]) -> None:
    for volume in removed:
        emit(f"Removed volume {volume.stack}/{volume.name} ({volume.path}).")
    for volume in kept:
        emit(f"Kept volume {volume.stack}/{volume.name} ({volume.path}): down --volumes removes it.")


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
            for row in [headers, *rows]]


def _bytes(value: object) -> str:
    if not isinstance(value, int):
        return "-"
    for unit in ("B", "Ki", "Mi", "Gi"):
        if value < 1024 or unit == "Gi":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return "-"


def _usage_cells(resources: object) -> list[str]:
    """Memory use (peak) / limit, CPU seconds (throttled seconds), pids / limit, OOM kills."""
    if not isinstance(resources, dict):
        return ["-", "-", "-", "-"]
    limits, usage = resources["limits"] or {}, resources["usage"] or {}
    cpu, throttled = usage.get("cpu_usec"), usage.get("throttled_usec")
    return [f"{_bytes(usage.get('memory_bytes'))} ({_bytes(usage.get('memory_peak_bytes'))}) / "
            f"{_bytes(limits['memory']) if limits.get('memory') else 'none'}",
            "-" if cpu is None else f"{cpu / 1e6:.2f} ({(throttled or 0) / 1e6:.2f})",
            f"{usage.get('pids', '-')} / {limits.get('pids') or 'none'}",
            str(usage.get("oom_kills", "-"))]


def format_status(document: dict[str, object]) -> str:
    stacks = document["stacks"]
    invalid = document.get("invalid_files") or []
    assert isinstance(stacks, list) and isinstance(invalid, list)
    if not stacks and not invalid:
        return "No stacks."
    lines: list[str] = [f"file {w['source']}: Error (watch{_stopped(w)}, {w['updated']})\n{_indented(w['error'])}\n"
                        for w in invalid]
    for stack in stacks:
        lines.append(f"stack {stack['name']}: {stack['sync']}"
                     + (f" ({stack['source']})" if stack.get("source") else ""))
        if stack.get("watch"):
            watch = stack["watch"]
            lines.append(f"  watch{_stopped(watch)}: {watch['sync']}, last apply {watch['last_apply'] or 'never'}")
            lines += [f"  watch error: {line}" for line in (watch["error"] or "").splitlines()]
        rows = [[str(n["name"]), str(n["bridge"]), _dual(n["subnet"], n.get("subnet6")),
                 _dual(n["gateway"], n.get("gateway6")), str(n["state"])] for n in stack["networks"]]
        lines += ["  " + line for line in _table(["NETWORK", "BRIDGE", "SUBNET", "GATEWAY", "STATE"], rows)]
        rows = [[c["name"], _state_cell(c),
                 str(c["pid"] or "-"),
                 " ".join(f"{n}={_dual(a, c.get('ips6', {}).get(n), ',')}" for n, a in c["ips"].items()) or "-",
                 " ".join(c["ports"]) or "-", str(c["restarts"]), *_usage_cells(c["resources"])]
                for c in stack["containers"]]
        if rows:
            lines += ["  " + line for line in _table(
                ["CONTAINER", "STATE", "PID", "IPS", "PORTS", "RESTARTS", "MEM (PEAK) / LIMIT", "CPU s (THROTTLED)",
                 "PIDS", "OOM"], rows)]
        lines += [f"  intruder: {i['message']}" for i in stack.get("port_intruders") or []]
        lines += [f"  volume {v['name']}: {v['state']} ({v['path']})" for v in stack.get("volumes") or []]
        lines += [f"  container {c['name']} did not start: {c['start_error']}" for c in stack["containers"]
                  if c.get("start_error")]
        lines += [f"  container {c['name']} {_health_line(c['health'])}" for c in stack["containers"]
                  if c.get("health")]
        lines += [_indented(f"error: {e}") for e in stack["errors"]]
        lines += [f"  drift: {d['action']} {d['kind']} {d['key']}" + (f" ({d['reason']})" if d["reason"] else "")
                  for d in stack["drift"]]
        lines.append("")
    return "\n".join(lines).rstrip()


def _stopped(watch: dict[str, Any]) -> str:
    """Said of a watch row when no agent runs: it is what the agent said before it stopped."""
    return "" if watch.get("agent_running", True) else " (no agent running; it last said)"


def _indented(text: str) -> str:
    """Each line of a message (several errors of one file) under its stack or file."""
    return "\n".join(f"  {line}" for line in text.splitlines())


def _state_cell(container: dict[str, Any]) -> str:
    """`running (healthy)`, as `docker ps` shows health beside the state."""
    if container["exit_code"] is not None:
        return f"exited ({container['exit_code']})"
    health = container.get("health")
    return f"{container['state']} ({health['status']})" if health else str(container["state"])


def _health_line(health: dict[str, Any]) -> str:
    last = health["last_probe"]
    if last is None:
        return f"{health['status']}: no probe yet"
    shown = one_line(str(last["output"]))
    return f"{health['status']}: last probe {last['at']}: exit {last['exit_code']}" + (f": {shown}" if shown else "")


def format_images(rows: Sequence[ImageRow]) -> str:
    if not rows:
        return "No images."
    cells = [[r.image.reference, r.image.digest[:19], _bytes(r.image.size), str(len(r.image.layers)),
              ", ".join(r.used_by) or "-"] for r in rows]
    return "\n".join(_table(["IMAGE", "DIGEST", "SIZE", "LAYERS", "USED BY"], cells))


def _dual(ipv4: object, ipv6: object, separator: str = " ") -> str:
    """A cell of a dual-stack network or endpoint: the IPv6 value beside the IPv4 one."""
    return f"{ipv4}{separator}{ipv6}" if ipv6 is not None else str(ipv4)
