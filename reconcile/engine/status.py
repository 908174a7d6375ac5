"""`reconcile status`: what runs, as the kernel shows it, and how far it is from the spec."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from controllers.network import NetworkObservation
from reconcile.engine.session import Session, Target
from specs.errors import SpecErrors
from specs.model import Stack


@dataclass(frozen=True)
class StackSpec:
    """A stack's spec and where it came from: a file given on the command line, or the spec
    recorded at its last apply."""

    stack: Stack
    source: str


def _networks(name: str, spec: Stack | None, observed: NetworkObservation) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    keys = list(spec.networks) if spec else []
    keys += sorted(k.split("/", 1)[1] for k in observed.ours
                   if k.split("/", 1)[0] == name and k.split("/", 1)[1] not in keys)
    for key in keys:
        bridges = observed.ours.get(f"{name}/{key}", ())
        live = bridges[0] if bridges else None
        net = spec.networks.get(key) if spec else None
        address = live.state.addresses[0] if live and live.state.addresses else None
        rows.append({
            "name": key,
            "bridge": live.state.name if live else net.bridge if net else None,
            "subnet": str(net.subnet) if net else str(address.network) if address else None,
            "gateway": str(net.gateway) if net else str(address.ip) if address else None,
            "state": ("missing" if live is None else "orphan" if net is None and spec
                      else "up" if live.state.up else "down"),
        })
    return rows


def report(session: Session, names: Sequence[str], specs: Mapping[str, StackSpec]) -> dict[str, object]:
    """The status document: `{"stacks": [{"name", "networks": [...], "containers": [...], ...}]}`."""
    observed = session.observe()
    networks = next(o for o in observed if isinstance(o, NetworkObservation))
    stacks: list[dict[str, object]] = []
    for name in sorted(names):
        spec = specs.get(name)
        entry: dict[str, object] = {
            "name": name,
            "source": spec.source if spec else None,
            "networks": _networks(name, spec.stack if spec else None, networks),
            "containers": [],
        }
        entry["sync"], entry["drift"] = _drift(session, observed, spec)
        stacks.append(entry)
    return {"stacks": stacks}


def _drift(session: Session, observed: list[object], spec: StackSpec | None) -> tuple[str, list[object]]:
    """Synced / OutOfSync / Error against the stack's spec, and the changes apply would make."""
    if spec is None:
        return "Unknown", []
    name = spec.stack.name
    try:
        desired = session.desired(Target({name: spec.stack}, frozenset({name})), observed)
    except SpecErrors as exc:
        return "Error", [str(e) for e in exc.errors]
    diffs = [c.diff(desired, o) for c, o in zip(session.controllers, observed)]
    if any(d.issues for d in diffs):
        return "Error", [i.message for d in diffs for i in d.issues]
    drift = [change.to_json() for d in diffs for change in d.changes]
    return ("OutOfSync" if drift else "Synced"), drift
