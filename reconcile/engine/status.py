"""`reconcile status`: what runs, as the kernel shows it, and how far it is from the spec."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from ipaddress import IPv4Interface, IPv6Interface

from pydantic import ValidationError

from controllers.cgroup import CgroupObservation
from controllers.container import ObservedContainer, Paths
from controllers.firewall_conflicts import Intruder, port_text
from controllers.network import NetworkObservation
from controllers.sandbox import ObservedSandbox
from kernel.rtnl_dump import Interface, ipv4_of, ipv6_of
from reconcile.engine import pinning
from reconcile.engine.session import Session, Target
from reconcile.engine.snapshot import Snapshot
from specs import names as kernel_names
from specs.errors import SpecErrors, format_loc
from specs.model import Container, PortMapping, Stack
from state import health as health_records
from state import lock
from state import volumes as stored_volumes
from state.images import ImageStore
from state.store import WatchStatus


@dataclass(frozen=True)
class StackSpec:
    """A stack's spec and where it came from: a file given on the command line, or the spec
    recorded at its last apply."""

    stack: Stack
    source: str


@dataclass(frozen=True)
class UnreadableSpec:
    """A stack whose spec recorded at its last apply no longer validates (a newer release
    tightened the model): its row shows why, the other stacks are reported as ever."""

    source: str
    message: str


MAX_SHOWN_ERRORS = 3


def recorded_specs(session: Session) -> tuple[dict[str, StackSpec], dict[str, UnreadableSpec]]:
    """Each stack's spec as recorded at its last apply, by name; those that no longer validate
    apart, with why."""
    specs: dict[str, StackSpec] = {}
    unreadable: dict[str, UnreadableSpec] = {}
    for record in session.store.stacks():
        try:
            specs[record.name] = StackSpec(Stack.model_validate(record.spec), record.source)
        except ValidationError as exc:
            problems = [f"{format_loc(tuple(e['loc']))}: {e['msg']}" if e["loc"] else e["msg"]
                        for e in exc.errors()]
            shown = "; ".join(problems[:MAX_SHOWN_ERRORS]) + (
                f"; and {len(problems) - MAX_SHOWN_ERRORS} more" if len(problems) > MAX_SHOWN_ERRORS else "")
            unreadable[record.name] = UnreadableSpec(record.source, (
                f"the spec recorded at its last apply no longer validates ({shown}): apply its file again "
                f"(or remove it: reconcile down --stack {record.name})"))
    return specs, unreadable


def _networks(name: str, spec: Stack | None, observed: NetworkObservation) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    keys = list(spec.networks) if spec else []
    keys += sorted(k.split("/", 1)[1] for k in observed.ours
                   if k.split("/", 1)[0] == name and k.split("/", 1)[1] not in keys)
    for key in keys:
        bridges = observed.ours.get(f"{name}/{key}", ())
        live = bridges[0] if bridges else None
        net = spec.networks.get(key) if spec else None
        address = ipv4_of(live.state.addresses) if live else None
        address6 = ipv6_of(live.state.addresses) if live else None
        rows.append({
            "name": key,
            "bridge": live.state.name if live else net.bridge if net else None,
            "subnet": str(net.subnet) if net and net.subnet else str(address.network) if address else None,
            "gateway": str(net.gateway) if net and net.gateway else str(address.ip) if address else None,
            "subnet6": str(net.subnet6) if net and net.subnet6 else str(address6.network) if address6 else None,
            "gateway6": str(net.gateway6) if net and net.gateway6 else str(address6.ip) if address6 else None,
            "state": ("missing" if live is None else "orphan" if net is None and spec
                      else "up" if live.state.up else "down"),
        })
    return rows


def _port(port: PortMapping) -> str:
    host = f"{port.host_ip}:{port.host}" if port.host_ip else str(port.host)
    return f"{host}:{port.container}/{port.protocol}"


def _containers(session: Session, name: str, spec: Stack | None, observed: Snapshot,
                resolved: Stack | None) -> list[dict[str, object]]:
    """`resolved`: the spec with its images' configs merged (their HEALTHCHECKs), when it resolves."""
    found = observed.containers.containers
    sandboxes = observed.sandboxes.sandboxes
    cgroups = observed.cgroups
    keys = list(spec.containers) if spec else []
    keys += sorted(k.split("/", 1)[1] for k in found if k.split("/", 1)[0] == name and k.split("/", 1)[1] not in keys)
    rows: list[dict[str, object]] = []
    store = ImageStore(session.settings.state_dir)
    with_health = resolved or spec
    for key in keys:
        live = found.get(f"{name}/{key}")
        sandbox = sandboxes.get(f"{name}/{key}")
        # Its files are looked at for a stopped or probed container only (a Path interns names).
        paths = partial(Paths.of, session.settings.state_dir, name, key)
        started = live is not None and (live.record is not None or live.started is not None)  # a lost store's too
        state = "running" if live and live.handle else "exited" if started else "missing"
        rows.append({
            "name": key,
            "state": state,
            "pid": live.handle.pid if live and live.handle else None,
            "netns": kernel_names.netns_name(name, key) if sandbox else None,
            "ips": _ips(sandbox, ipv4_of),
            "ips6": _ips(sandbox, ipv6_of),
            "ports": [_port(p) for p in spec.containers[key].ports] if spec and key in spec.containers else [],
            "image": spec.containers[key].image if spec and key in spec.containers else None,
            "image_digest": live.image_digest if live else None,
            "exposed_ports": _exposed_ports(store, live.image_digest if live else None),
            "restarts": live.record.restarts if live and live.record else 0,
            "exit_code": live.exit_code if live and state == "exited" else None,  # read by the observation
            "start_error": paths().last_start_error() if state != "running" else None,
            "resources": _resources(f"{name}/{key}", cgroups),
            "health": _health(paths, live, with_health.containers.get(key) if with_health else None),
        })
    return rows


def _ips(sandbox: ObservedSandbox | None,
         family_of: Callable[[tuple[Interface, ...]], IPv4Interface | IPv6Interface | None]) -> dict[str, str]:
    """The address of one family each endpoint holds, by network."""
    if sandbox is None:
        return {}
    return {net: str(address.ip) for net, ep in sandbox.endpoints.items()
            if ep.state and (address := family_of(ep.state.addresses)) is not None}


def _health(paths: Callable[[], Paths], live: ObservedContainer | None,
            spec: Container | None) -> dict[str, object] | None:
    """starting / healthy / unhealthy of the running process, with its last probe (None: no
    health check, or not running). Only a record of this very process counts."""
    if spec is None or not spec.probed or live is None or live.handle is None:
        return None
    recorded = health_records.load(paths().health)
    if recorded is None or not recorded.of(live.handle.pid, live.handle.start_time):
        return {"status": health_records.STARTING, "failing_streak": 0, "last_probe": None}
    last = recorded.last
    return {"status": recorded.status, "failing_streak": recorded.failing_streak,
            "last_probe": None if last is None else {"at": _iso(last.ended_at), "exit_code": last.exit_code,
                                                     "output": last.output}}


def _exposed_ports(store: ImageStore, digest: str | None) -> list[str]:
    """The ports the image of a running container says it listens on (published or not)."""
    image = store.by_digest(digest) if digest else None
    return list(image.config.exposed_ports) if image else []


def _resources(key: str, cgroups: CgroupObservation) -> dict[str, object] | None:
    """Limits in force and live usage, from the container's cgroup (None: it has none)."""
    limits = cgroups.limits.get(key)
    usage = cgroups.usage.get(key)
    if limits is None and usage is None:
        return None
    # Shallow: dataclasses.asdict deep-copies every value (~25 ms for a thousand containers).
    return {"limits": dict(vars(limits)) if limits else None, "usage": dict(vars(usage)) if usage else None}


def report(session: Session, observed: Snapshot, names: Sequence[str], specs: Mapping[str, StackSpec],
           unreadable: Mapping[str, UnreadableSpec] | None = None) -> dict[str, object]:
    """The status document: `{"stacks": [{"name", "networks": [...], "containers": [...], ...}]}`,
    from one observation of the host (`observed`, the one the stacks' names came from). A stack
    in `unreadable` is shown as the kernel has it, its sync an Error saying why."""
    unreadable = unreadable or {}
    intruders = observed.firewall.intruders()
    watched = session.store.watch_statuses()
    agent = {w.stack: w for w in watched if w.stack}
    agent_running = lock.held(session.settings.state_dir, lock.AGENT_LOCK_NAME)
    stacks: list[dict[str, object]] = []
    for name in sorted(names):
        spec = specs.get(name)
        broken = unreadable.get(name)
        entry: dict[str, object] = {
            "name": name,
            "source": spec.source if spec else broken.source if broken else None,
            "networks": _networks(name, spec.stack if spec else None, observed.networks),
        }
        sync, errors, drift, resolved = ("Error", [broken.message], [], None) if broken and not spec else _drift(
            session, observed, spec)
        entry["containers"] = _containers(session, name, spec.stack if spec else None, observed, resolved)
        entry["port_intruders"] = [_intruder_row(i) for i in intruders if i.port.stack == name]
        entry["volumes"] = _volumes(session, name, spec.stack if spec else None)
        entry["sync"], entry["errors"], entry["drift"] = sync, errors, drift
        entry["watch"] = _watch_row(agent[name], agent_running) if name in agent else None
        stacks.append(entry)
    return {"stacks": stacks, "invalid_files": [_watch_row(w, agent_running) for w in watched if not w.stack]}


def _volumes(session: Session, name: str, spec: Stack | None) -> list[dict[str, object]]:
    """The stack's named volumes: declared ones (`missing` until a container mounting one first
    starts) and kept ones no longer declared (`undeclared`: kept until `down --volumes`). No
    size: measuring a volume walks every file in it."""
    found = {v.name: v.path for v in stored_volumes.stored(session.settings.state_dir, name)}
    declared = list(spec.volumes) if spec else []
    rows: list[dict[str, object]] = []
    for key in declared + sorted(set(found) - set(declared)):
        path = found.get(key) or stored_volumes.volume_path(session.settings.state_dir, name, key)
        state = "missing" if key not in found else "present" if key in declared or spec is None else "undeclared"
        rows.append({"name": key, "path": str(path), "state": state})
    return rows


def _intruder_row(intruder: Intruder) -> dict[str, object]:
    """A host process listening on a port the stack publishes (it gets none of its traffic)."""
    listener = intruder.listener
    return {"port": port_text(intruder.port), "container": intruder.port.container,
            "address": str(listener.address), "pid": listener.pid, "command": listener.command,
            "message": intruder.describe()}


def _watch_row(status: WatchStatus, agent_running: bool) -> dict[str, object]:
    """What the watch agent last reported for a stack file (its own view, with the time), and
    whether an agent runs now (else nothing repairs drift: the row is what a stopped one said)."""
    return {"source": status.source, "sync": status.sync, "last_apply": _iso(status.applied_at),
            "error": status.error, "updated": _iso(status.updated_at), "agent_running": agent_running}


def _iso(moment: float | None) -> str | None:
    return None if moment is None else datetime.fromtimestamp(moment, timezone.utc).isoformat(timespec="seconds")


def _drift(session: Session, observed: Snapshot,
           spec: StackSpec | None) -> tuple[str, list[str], list[dict[str, object]], Stack | None]:
    """Synced / OutOfSync / Error against the stack's spec, why it is an Error, the changes apply
    would make, and the spec resolved (images pinned, their configs merged) when it resolves."""
    if spec is None:
        return "Unknown", [], [], None
    name = spec.stack.name
    try:
        target = pinning.resolve(Target({name: spec.stack}, frozenset({name})), session.settings,
                                pinning.Pulling(allowed=False, ask_registry=False))
        desired = session.desired(target, observed)
    except SpecErrors as exc:
        return "Error", [str(e) for e in exc.errors], [], None
    resolved = target.stacks[name]
    diffs = session.controllers.diff(desired, observed)
    if any(d.issues for d in diffs):
        return "Error", [i.message for d in diffs for i in d.issues], [], resolved
    drift = [change.to_json() for d in diffs for change in d.changes]
    return ("OutOfSync" if drift else "Synced"), [], drift, resolved
