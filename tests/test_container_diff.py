"""The container diff (pure, no kernel): changes from observations shaped as observe() reads a
real host (tests/container_snapshots.py). Nothing running, in sync, /etc/hosts or resolv.conf
drifted (rewritten in place), a field the process was started with changed (recreated), exited
(started again, unless this session started it or a one-shot is done), removed from the spec,
another stack's, a running container the store lost (adopted), one whose start was killed
before its record was saved, what its started file tells, what a crash leaves, and the
depends_on order of starts."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from controllers.base import Desired
from controllers.change import Action
from controllers.container import (
    GRACE_REASON,
    HOST_ROOT,
    KIND_CONTAINER,
    KIND_RUNTIME,
    RUNTIME_NAMESPACE,
    DesiredContainer,
    ObservedContainer,
    _started_in,
    diff_containers,
    stop_signal_of,
)
from controllers.container_files import LOCALHOST
from kernel.mountns import PinState
from kernel.rlimits import Ceilings
from reconcile.engine.plan import order
from tests.container_snapshots import (
    another_process,
    exited,
    leftover,
    lost_record,
    observation,
    running,
    with_record_spec,
    with_started,
)
from tests.firewall_support import build_desired
from tests.focus import focus_on

FRONT = {"subnet": "10.88.1.0/24", "bridge": "rcbr0"}
DB_DIGEST = "sha256:" + "a" * 64
DB_IMAGE = f"docker.io/library/postgres:16@{DB_DIGEST}"
OLD_DIGEST = "sha256:" + "b" * 64
WEB_COMMAND = ["/usr/bin/httpd", "-f"]
MIGRATE_COMMAND = ["/usr/bin/migrate", "up"]
WEB: dict[str, Any] = {"command": WEB_COMMAND, "networks": {"front": {"ip": "10.88.1.11"}},
                       "depends_on": {"db": {"condition": "service_healthy"}}}
DB: dict[str, Any] = {"image": DB_IMAGE, "command": ["postgres"], "env": {"PGDATA": "/data"},
                      "networks": {"front": {"ip": "10.88.1.10"}}, "healthcheck": {"test": ["CMD", "pg_isready"]}}
MIGRATE: dict[str, Any] = {"command": MIGRATE_COMMAND, "restart": "on-failure", "depends_on": ["db"]}
DEMO = {"networks": {"front": FRONT}, "containers": {"web": WEB, "db": DB, "migrate": MIGRATE}}
"""web is listed first but waits for db to be healthy; migrate, a one-shot, starts after db."""
BEFORE = {"networks": {"front": FRONT},
          "containers": {**DEMO["containers"], "old": {"command": ["/bin/sleep", "infinity"],
                                                       "networks": {"front": {"ip": "10.88.1.20"}}}}}
"""The stack as last applied: with `old`, since removed from the spec."""
OTHER = {"networks": {"net": {"subnet": "10.88.9.0/24", "bridge": "rcbr9"}},
         "containers": {"api": {"command": ["/usr/bin/api"], "networks": {"net": {"ip": "10.88.9.10"}}}}}

WANT = build_desired({"stacks": {"demo": DEMO}})
"""The run under test: demo in scope, other not."""
WAS = build_desired({"stacks": {"demo": BEFORE}})
OTHERS = build_desired({"stacks": {"other": OTHER}})

WEB_HOSTS = LOCALHOST + "10.88.1.11\tweb\n10.88.1.10\tdb\n"
"""Its own line first, then its peers in the stack's order."""
WEB_HOSTS_BEFORE = WEB_HOSTS + "10.88.1.20\told\n"
WEB_HOSTS_REORDERED = LOCALHOST + "10.88.1.10\tdb\n10.88.1.11\tweb\n"
RESOLV = "nameserver 10.0.0.2\nsearch corp.example\n"
RESOLV_BEFORE = "nameserver 10.0.0.1\nsearch corp.example\n"

OLD_WEB_COMMAND = ["/usr/bin/httpd"]
OLD_MIGRATE_COMMAND = ["/usr/bin/migrate"]
WEB_OLD_RECORD = with_record_spec(running(WANT, "demo", "web", pid=102), command=OLD_WEB_COMMAND)
"""web's record of its run before this spec's recreate (pid 102, since stopped)."""
IN_SYNC = (running(WANT, "demo", "db", pid=101), running(WANT, "demo", "web", pid=102),
           exited(WANT, "demo", "migrate", 0), running(OTHERS, "other", "api", pid=201))
"""demo as this spec started it (its one-shot ran to a successful end), and another stack's container."""
DB_NOW, WEB_NOW, MIGRATE_NOW, _ = IN_SYNC


def host(*changed: ObservedContainer) -> tuple[ObservedContainer, ...]:
    """IN_SYNC with `changed` in place of (or besides) the containers of the same keys."""
    by_key = {f"{c.stack}/{c.container}": c for c in IN_SYNC}
    by_key.update({f"{c.stack}/{c.container}": c for c in changed})
    return tuple(by_key.values())


Fields = tuple[tuple[str, object, object], ...]
Row = tuple[Action, str, str, str, bool, Fields]


def row(action: Action, key: str, reason: str, disruptive: bool = False, fields: Fields = ()) -> Row:
    return action, KIND_CONTAINER, f"demo/{key}", reason, disruptive, fields


DB_START: Fields = (("image", None, DB_IMAGE), ("command", None, ["postgres"]))
WEB_START: Fields = (("rootfs", None, HOST_ROOT), ("command", None, WEB_COMMAND))
MIGRATE_START: Fields = (("rootfs", None, HOST_ROOT), ("command", None, MIGRATE_COMMAND))

CASES = [
    pytest.param((), frozenset(), [row(Action.CREATE, "db", "not running", fields=DB_START),
                                   row(Action.CREATE, "web", "not running", fields=WEB_START),
                                   row(Action.CREATE, "migrate", "not running", fields=MIGRATE_START)],
                 id="nothing runs: dependencies first"),
    pytest.param(IN_SYNC, frozenset(), [], id="in sync, the one-shot done"),
    pytest.param(host(replace(WEB_NOW, hosts=WEB_HOSTS_BEFORE)), frozenset(),
                 [row(Action.UPDATE, "web", "peers changed", fields=(("/etc/hosts", "10.88.1.20\told", None),))],
                 id="hosts names a removed peer"),
    pytest.param(host(replace(WEB_NOW, hosts=WEB_HOSTS_REORDERED)), frozenset(),
                 [row(Action.UPDATE, "web", "peers changed",
                      fields=(("/etc/hosts", "(the same lines in another order)", "(in order)"),))],
                 id="hosts reordered"),
    pytest.param(host(replace(WEB_NOW, hosts=None)), frozenset(),
                 [row(Action.UPDATE, "web", "peers changed", fields=(("/etc/hosts", None, (
                     "127.0.0.1\tlocalhost; ::1\tlocalhost ip6-localhost ip6-loopback; 10.88.1.11\tweb; "
                     "10.88.1.10\tdb")),))],
                 id="hosts gone from the container"),
    pytest.param(host(replace(DB_NOW, resolv=RESOLV_BEFORE)), frozenset(),
                 [row(Action.UPDATE, "db", "the host's nameservers changed",
                      fields=(("/etc/resolv.conf", "nameserver 10.0.0.1", "nameserver 10.0.0.2"),))],
                 id="resolv.conf drifted"),
    pytest.param(host(with_record_spec(WEB_NOW, stop_grace=2.0)), frozenset(),
                 [row(Action.UPDATE, "web", GRACE_REASON, fields=(("stop_grace", 2.0, 10.0),))],
                 id="stop grace edited: recorded in place"),
    pytest.param(host(with_record_spec(replace(WEB_NOW, hosts=WEB_HOSTS_BEFORE), stop_grace=30.0)), frozenset(),
                 [row(Action.UPDATE, "web", f"peers changed, {GRACE_REASON}",
                      fields=(("/etc/hosts", "10.88.1.20\told", None), ("stop_grace", 30.0, 10.0)))],
                 id="stop grace and peers changed"),
    pytest.param(host(replace(WEB_NOW, hosts=WEB_HOSTS_BEFORE, resolv=RESOLV_BEFORE)), frozenset(),
                 [row(Action.UPDATE, "web", "peers changed", fields=(("/etc/hosts", "10.88.1.20\told", None),
                                                                     ("/etc/resolv.conf", "nameserver 10.0.0.1",
                                                                      "nameserver 10.0.0.2")))],
                 id="both files drifted"),
    pytest.param(host(with_record_spec(WEB_NOW, command=["/usr/bin/httpd"])), frozenset(),
                 [row(Action.RECREATE, "web", "command changed", True,
                      (("command", ["/usr/bin/httpd"], WEB_COMMAND),))],
                 id="command changed"),
    pytest.param(host(with_record_spec(DB_NOW, env={"PGDATA": "/var/lib/pg"})), frozenset(),
                 [row(Action.RECREATE, "db", "env changed", True,
                      (("env", {"PGDATA": "/var/lib/pg"}, {"PGDATA": "/data"}),))],
                 id="env changed"),
    pytest.param(host(with_record_spec(WEB_NOW, command=["/usr/bin/httpd"], networks={"front": "10.88.1.5"})),
                 frozenset(),
                 [row(Action.RECREATE, "web", "command, networks changed", True,
                      (("command", ["/usr/bin/httpd"], WEB_COMMAND),
                       ("networks", {"front": "10.88.1.5"}, {"front": "10.88.1.11"})))],
                 id="command and address changed"),
    pytest.param(host(replace(lost_record(DB_NOW), image_digest=OLD_DIGEST)), frozenset(),
                 [row(Action.RECREATE, "db", "image changed", True, (("image", OLD_DIGEST, DB_IMAGE),))],
                 id="store lost, root of another image"),
    pytest.param(host(with_record_spec(WEB_NOW, drop=("privileged",))), frozenset(),
                 [row(Action.RECREATE, "web", "started unconfined by an earlier version of reconcile", True,
                      (("privileged", None, False),))],
                 id="recorded before confinement"),
    pytest.param(host(with_record_spec(WEB_NOW, drop=("logging",))), frozenset(),
                 [row(Action.RECREATE, "web", "started without log rotation by an earlier version of reconcile",
                      True, (("logging", None, {"driver": "json-file",
                                                "options": {"max-size": 4194304, "max-file": 2}}),))],
                 id="recorded before log rotation"),
    pytest.param(host(replace(WEB_NOW, in_sandbox=False)), frozenset(),
                 [row(Action.RECREATE, "web", "its network namespace was replaced", True)],
                 id="out of its sandbox"),
    pytest.param(host(exited(WANT, "demo", "web", 137)), frozenset(),
                 [row(Action.CREATE, "web", "exited", fields=WEB_START)], id="exited, killed"),
    pytest.param(host(exited(WANT, "demo", "web", 137)), frozenset({"demo/web"}), [],
                 id="exited, started by this session"),
    pytest.param(host(exited(WANT, "demo", "web", None)), frozenset(),
                 [row(Action.CREATE, "web", "exited", fields=WEB_START)], id="exited, no exit file"),
    pytest.param(host(with_record_spec(exited(WANT, "demo", "web", 1), command=["/usr/bin/httpd"])), frozenset(),
                 [row(Action.RECREATE, "web", "exited; command changed",
                      fields=(("command", ["/usr/bin/httpd"], WEB_COMMAND),))],
                 id="exited, command changed since"),
    pytest.param(host(exited(WANT, "demo", "db", 0)), frozenset(),
                 [row(Action.CREATE, "db", "exited", fields=DB_START)], id="exited 0, restart always"),
    pytest.param(host(exited(WANT, "demo", "migrate", 1)), frozenset(),
                 [row(Action.CREATE, "migrate", "exited", fields=MIGRATE_START)], id="one-shot failed"),
    pytest.param(host(exited(WANT, "demo", "migrate", 1)), frozenset({"demo/migrate"}), [],
                 id="one-shot failed in this session"),
    pytest.param(host(with_record_spec(MIGRATE_NOW, command=["/usr/bin/migrate"])), frozenset(),
                 [row(Action.RECREATE, "migrate", "exited; command changed",
                      fields=(("command", ["/usr/bin/migrate"], MIGRATE_COMMAND),))],
                 id="one-shot done, command changed since"),
    pytest.param(host(running(WAS, "demo", "old", pid=103)), frozenset(),
                 [row(Action.DELETE, "old", "no longer in the spec")], id="removed from the spec"),
    pytest.param(host(exited(OTHERS, "other", "api", 1), leftover("other", "gone", root=True, runtime_state=True)),
                 frozenset(), [], id="another stack's, out of scope"),
    pytest.param(host(lost_record(WEB_NOW)), frozenset(),
                 [row(Action.UPDATE, "web", "adopt a running container (state store lost)")],
                 id="store lost: adopted"),
    pytest.param(host(replace(lost_record(WEB_NOW), hosts=WEB_HOSTS_BEFORE)), frozenset(),
                 [row(Action.UPDATE, "web", "peers changed", fields=(("/etc/hosts", "10.88.1.20\told", None),))],
                 id="store lost, hosts drifted: adopted by the rewrite"),
    pytest.param(host(with_started(another_process(WEB_OLD_RECORD), WANT)), frozenset(),
                 [row(Action.UPDATE, "web", "adopt a running container (its start was not recorded)")],
                 id="recreate killed before its record: the new process adopted"),
    pytest.param(host(with_started(another_process(WEB_NOW), WANT)), frozenset(),
                 [row(Action.UPDATE, "web", "adopt a running container (its start was not recorded)")],
                 id="restart killed before its record: the new process adopted"),
    pytest.param(host(another_process(WEB_OLD_RECORD)), frozenset(),
                 [row(Action.RECREATE, "web", "command changed", True, (("command", OLD_WEB_COMMAND, WEB_COMMAND),))],
                 id="another process, no started file (an earlier version's): its record tells"),
    pytest.param(host(with_started(lost_record(WEB_NOW), WANT, command=OLD_WEB_COMMAND)), frozenset(),
                 [row(Action.RECREATE, "web", "command changed", True, (("command", OLD_WEB_COMMAND, WEB_COMMAND),))],
                 id="store lost, started with another command: recreated"),
    pytest.param(host(with_started(lost_record(WEB_NOW), WANT)), frozenset(),
                 [row(Action.UPDATE, "web", "adopt a running container (state store lost)")],
                 id="store lost, started with this spec: adopted"),
    pytest.param(host(with_started(lost_record(MIGRATE_NOW), WANT)), frozenset(), [],
                 id="store lost, the one-shot done"),
    pytest.param(host(with_started(lost_record(exited(WANT, "demo", "migrate", 1)), WANT)), frozenset(),
                 [row(Action.CREATE, "migrate", "not running", fields=MIGRATE_START)],
                 id="store lost, the one-shot failed"),
    pytest.param(host(with_started(lost_record(MIGRATE_NOW), WANT, command=OLD_MIGRATE_COMMAND)), frozenset(),
                 [row(Action.RECREATE, "migrate", "not running; command changed",
                      fields=(("command", OLD_MIGRATE_COMMAND, MIGRATE_COMMAND),))],
                 id="store lost, the one-shot done with another command"),
    pytest.param(host(lost_record(MIGRATE_NOW)), frozenset(),
                 [row(Action.CREATE, "migrate", "not running", fields=MIGRATE_START)],
                 id="store lost, no started file (an earlier version's one-shot)"),
    pytest.param(host(with_started(with_record_spec(MIGRATE_NOW, command=OLD_MIGRATE_COMMAND), WANT)), frozenset(),
                 [], id="one-shot's recreate killed before its record, then done"),
    pytest.param(host(with_started(with_record_spec(exited(WANT, "demo", "web", 137), command=OLD_WEB_COMMAND),
                                   WANT)), frozenset(),
                 [row(Action.CREATE, "web", "exited", fields=WEB_START)],
                 id="recreate killed before its record, then exited: started again"),
    pytest.param(host(leftover("demo", "web")), frozenset(),
                 [row(Action.CREATE, "web", "not running", fields=WEB_START)], id="crash left a files dir"),
    pytest.param(host(leftover("demo", "web", root=True, runtime_state=True)), frozenset(),
                 [row(Action.CREATE, "web", "not running", fields=WEB_START)],
                 id="crash left a root and runtime state"),
    pytest.param(host(leftover("demo", "db", root=True, image_digest=DB_DIGEST)), frozenset(),
                 [row(Action.CREATE, "db", "not running", fields=DB_START)], id="crash left a root of the image"),
    pytest.param(host(leftover("demo", "old", root=True, runtime_state=True)), frozenset(),
                 [row(Action.DELETE, "old", "no longer in the spec")], id="crash left a removed container's root"),
]


@pytest.mark.parametrize(("observed", "started", "expected"), CASES)
def test_changes_take_the_host_to_the_spec(observed: tuple[ObservedContainer, ...], started: frozenset[str],
                                           expected: list[Row]) -> None:
    snapshot = observation(*observed)
    diff = diff_containers(WANT, snapshot, started)
    assert diff.issues == []
    assert [(c.action, c.kind, c.key, c.reason, c.disruptive, tuple((f.path, f.old, f.new) for f in c.fields))
            for c in diff.changes] == expected
    # Apply stops and cleans up what was observed (a leftover's root and runtime state too).
    assert all(c.observed is snapshot.containers.get(c.key) for c in diff.changes)


@pytest.mark.parametrize(("observed", "started", "expected"), CASES)
@pytest.mark.parametrize("containers", [["web"], ["db"], ["old"], ["web", "migrate"]])
def test_a_focused_pass_makes_the_whole_diffs_changes_about_its_focus(
        observed: tuple[ObservedContainer, ...], started: frozenset[str], expected: list[Row],
        containers: list[str]) -> None:
    focus = focus_on(WANT.stacks, "demo", containers)
    whole = diff_containers(WANT, observation(*observed), started)
    only = observation(*(found for found in observed if (found.stack, found.container) in focus.containers))
    about = [c for c in whole.changes if focus.has_container(c.key)]
    assert diff_containers(replace(WANT, focus=focus), only, started).changes == about
    assert diff_containers(replace(WANT, focus=focus), observation(*observed), started).changes == about


def test_a_focused_pass_diffs_its_containers_in_the_specs_order() -> None:
    spec_order = list(WANT.stacks["demo"].containers)
    focus = focus_on(WANT.stacks, "demo", list(reversed(spec_order)) + ["gone"])
    focus = replace(focus, containers=focus.containers | {("other", "web")})  # another stack's
    assert replace(WANT, focus=focus).containers_of(WANT.stacks["demo"]) == spec_order
    assert replace(WANT, focus=focus_on(WANT.stacks, "demo", ["gone"])).containers_of(WANT.stacks["demo"]) == []


def test_starts_are_ordered_by_depends_on_with_their_waits() -> None:
    wants = [c.desired for c in diff_containers(WANT, observation()).changes]
    assert [(w.key, w.level, [(x.dependency, x.condition, x.required) for x in w.waits])
            for w in wants if isinstance(w, DesiredContainer)] == [
        ("db", 0, []),
        ("web", 1, [("db", "service_healthy", True)]),
        ("migrate", 1, [("db", "service_started", True)]),  # met by start order, held with db's start
    ]


def test_down_deletes_every_container_of_the_stack_and_nothing_else() -> None:
    down = Desired(stacks={}, scope=frozenset({"demo"}))
    diff = diff_containers(down, observation(*host(leftover("demo", "old", root=True))))
    assert [(c.action, c.key, c.reason) for c in diff.changes] == [
        (Action.DELETE, f"demo/{key}", "no longer in the spec") for key in ("db", "web", "migrate", "old")]


@pytest.mark.parametrize(("desired", "observed", "state", "expected"), [
    (Desired(stacks={}, scope=frozenset({"demo"})), (), PinState.CURRENT, Action.DELETE),
    (Desired(stacks={}, scope=frozenset({"demo"})), (), PinState.STALE, Action.DELETE),
    (Desired(stacks={}, scope=frozenset({"demo"})), (leftover("other", "api", runtime_state=True),),
     PinState.CURRENT, None),
    (Desired(stacks={}, scope=frozenset({"demo"})), (leftover("other", "api", runtime_state=True),),
     PinState.STALE, Action.UPDATE),
    (WANT, (), PinState.CURRENT, None),
    (WANT, (), PinState.STALE, Action.UPDATE),
    (WANT, IN_SYNC, PinState.STALE, Action.UPDATE),
    (WANT, (), PinState.ABSENT, None),
    (Desired(stacks={}, scope=frozenset({"demo"})), (), PinState.LEFT, Action.DELETE),
    (Desired(stacks={}, scope=frozenset({"demo"})), (leftover("other", "api", runtime_state=True),),
     PinState.LEFT, None),
    (WANT, (), PinState.LEFT, None),
    (Desired(stacks={}, scope=frozenset({"demo"})), (), None, None),
    (Desired(stacks={}, scope=frozenset({"demo"})), (DB_NOW, WEB_NOW, MIGRATE_NOW), PinState.CURRENT, Action.DELETE),
    (Desired(stacks={}, scope=frozenset({"demo"})), IN_SYNC, PinState.CURRENT, None),
], ids=["nothing left", "nothing left, lagging", "another stack's container", "another's, lagging",
        "containers to start", "lagging, containers to start", "lagging, all in sync", "none pinned",
        "unpinned, its mount points left", "mount points left, another's container",
        "mount points left, containers to start", "not looked at (a focused pass)",
        "the last ones go in this pass", "they go, another stack's stays"])
def test_the_runtimes_pinned_namespace_is_pinned_afresh_when_it_lags_and_goes_with_the_last_container(
        desired: Desired, observed: tuple[ObservedContainer, ...], state: PinState | None,
        expected: Action | None) -> None:
    changes = diff_containers(desired, replace(observation(*observed), runtime_namespace=state)).changes
    assert [(c.action, c.key) for c in changes if c.kind == KIND_RUNTIME] == \
        ([(expected, RUNTIME_NAMESPACE)] if expected else [])
    if expected is not None:  # before any start; after every removal (the plan reverses deletions)
        assert changes[0].kind == KIND_RUNTIME
    if expected is Action.DELETE:
        plan = order([changes])
        assert [c.key for c in plan.changes][-1] == RUNTIME_NAMESPACE
        # ... and goes only with every removal it follows: a narrower pass leaves it be.
        assert plan.selected(lambda c: True) == plan
        if len(changes) > 1:
            assert plan.selected(lambda c: c.key != changes[-1].key).changes == plan.changes[1:-1]


def test_a_crash_leftover_of_another_image_is_not_said_to_have_exited() -> None:
    crashed = leftover("demo", "db", root=True, image_digest=OLD_DIGEST)  # killed mid-start: it never ran
    [change] = diff_containers(WANT, observation(*host(crashed))).changes
    assert (change.action, change.key, change.disruptive) == (Action.RECREATE, "demo/db", False)
    assert [(f.path, f.old, f.new) for f in change.fields] == [("image", OLD_DIGEST, DB_IMAGE)]
    assert change.reason.startswith("not running; ")


def test_a_start_shows_what_of_the_host_the_container_sees() -> None:
    """Wider than Docker's default is a visible choice: the host's root, host directories bound
    in (not named volumes), widened confinement; an image or rootfs is named as it is."""
    sees = {"command": ["/bin/sh"], "rootfs": "/srv/root", "volumes": ["/:/host:ro", "/run/x.sock:/x.sock", "data:/d"],
            "cap_add": ["NET_ADMIN"]}
    stack = {"containers": {"plain": {"command": ["/bin/sh"]}, "sees": sees}}
    starts = {c.key: [(f.path, f.old, f.new) for f in c.fields]
              for c in diff_containers(build_desired({"stacks": {"demo": stack}}), observation()).changes}
    assert starts == {
        "demo/plain": [("rootfs", None, HOST_ROOT), ("command", None, ["/bin/sh"])],
        "demo/sees": [("rootfs", None, "/srv/root"), ("command", None, ["/bin/sh"]),
                      ("volumes", None, ["/:/host:ro", "/run/x.sock:/x.sock"]), ("cap_add", None, ["NET_ADMIN"])]}


@pytest.mark.parametrize(("hosts", "old", "new"), [
    (WEB_HOSTS.removesuffix("\n"), "(the same lines, other line ends)", "(one newline each)"),
    (WEB_HOSTS.replace("\n", "\r\n"), "(the same lines, other line ends)", "(one newline each)"),
    (WEB_HOSTS + "10.88.1.10\tdb\n", "10.88.1.10\tdb", None),
], ids=["no final newline", "CRLF", "repeated line"])
def test_a_file_in_the_same_order_is_not_said_to_be_reordered(hosts: str, old: str, new: str | None) -> None:
    [change] = diff_containers(WANT, observation(*host(replace(WEB_NOW, hosts=hosts)))).changes
    assert (change.action, change.key, change.reason) == (Action.UPDATE, "demo/web", "peers changed")
    assert [(f.path, f.old, f.new) for f in change.fields] == [("/etc/hosts", old, new)]


@pytest.mark.parametrize(("content", "expected"), [
    (b'{"command": ["/usr/bin/httpd", "-f"]}', {"command": ["/usr/bin/httpd", "-f"]}),
    (None, None),
    (b"", None),
    (b'{"command": ["/usr/bin/ht', None),
    (b"\xff\xfe garbage", None),
    (b'["a list"]', None),
    (b"[" * 100_000, None),
], ids=["a spec", "absent", "empty", "torn", "not text", "not a mapping", "nested past the recursion limit"])
def test_a_damaged_started_file_counts_as_absent(tmp_path: Path, content: bytes | None,
                                                   expected: dict[str, object] | None) -> None:
    """The started file is written whole (kernel.durable), but a damaged disk can still hold
    anything: the container is then judged by its record, as one an earlier version started."""
    path = tmp_path / "started.json"
    if content is not None:
        path.write_bytes(content)
    assert _started_in(path) == expected


DB_INT = build_desired({"stacks": {"demo": {**DEMO, "containers": {**DEMO["containers"],
                                                                 "db": {**DB, "stop_signal": "SIGINT"}}}}})
"""db stopped with SIGINT (postgres's STOPSIGNAL, which the engine merges into the spec as `stop_signal`)."""


@pytest.mark.parametrize(("found", "recorded_signal"), [
    (running(DB_INT, "demo", "db", pid=101), "SIGINT"),
    (with_record_spec(running(DB_INT, "demo", "db", pid=101), drop=("stop_signal",)), None),
    (with_record_spec(running(DB_INT, "demo", "db", pid=101), stop_signal="SIGQUIT"), "SIGQUIT"),
    (with_started(lost_record(running(DB_INT, "demo", "db", pid=101)), DB_INT), "SIGINT"),
], ids=["recorded with it", "started by an earlier version (no stop_signal recorded)",
        "recorded with another one", "store lost, its started file names it"])
def test_a_stop_signal_is_recorded_with_the_start_and_never_recreates(found: ObservedContainer,
                                                                      recorded_signal: str | None) -> None:
    """Not a field the process runs with: a running container is left as it is, and stopped
    with the signal it was started to be stopped with (an earlier version's start: SIGTERM)."""
    changes = diff_containers(DB_INT, observation(*host(found))).changes
    assert [(c.action, c.key) for c in changes] == ([] if found.record is not None
                                                    else [(Action.UPDATE, "demo/db")])  # adopted
    assert stop_signal_of(found.spec) == {"SIGINT": 2, "SIGQUIT": 3, None: 15}[recorded_signal]


def test_only_a_stop_signal_other_than_sigterm_is_recorded() -> None:
    """SIGTERM's records stay those an earlier version wrote: an upgrade leaves them in sync."""
    [start] = [c for c in diff_containers(DB_INT, observation()).changes if c.key == "demo/db"]
    assert isinstance(start.desired, DesiredContainer)
    assert start.desired.recorded_spec["stop_signal"] == "SIGINT"
    [start] = [c for c in diff_containers(WANT, observation()).changes if c.key == "demo/db"]
    assert isinstance(start.desired, DesiredContainer)
    assert "stop_signal" not in start.desired.recorded_spec
    assert stop_signal_of({"stop_signal": "nonsense"}) == stop_signal_of(None) == 15


WEB_TMPFS = build_desired({"stacks": {"demo": {**DEMO, "containers": {
    **DEMO["containers"], "web": {**WEB, "tmpfs": ["/tmp:size=1m"], "shm_size": "128Mi"}}}}})


def test_tmpfs_and_shm_size_are_started_with_and_recorded_only_when_set() -> None:
    """A change of either recreates the container; at their defaults they are left out of the
    record, so a start recorded by an earlier version (which knew neither) stays in sync."""
    [start] = [c for c in diff_containers(WANT, observation()).changes if c.key == "demo/web"]
    assert isinstance(start.desired, DesiredContainer)
    assert not {"tmpfs", "shm_size"} & set(start.desired.recorded_spec)
    changes = diff_containers(WEB_TMPFS, observation(*host())).changes
    assert [(c.action, c.key, c.reason, [(f.path, f.old, f.new) for f in c.fields]) for c in changes] == [
        (Action.RECREATE, "demo/web", "tmpfs, shm_size changed",
         [("tmpfs", None, [{"target": "/tmp", "size": 1048576}]),  # as set: a later option changes no record
          ("shm_size", None, 134217728)])]


def test_the_plan_of_a_start_shows_its_tmpfs_and_ulimits() -> None:
    """Each may widen what Docker's default gives (a tmpfs `exec`, a raised rtprio or memlock):
    a visible choice, as cap_add is."""
    limited = build_desired({"stacks": {"demo": {**DEMO, "containers": {
        **DEMO["containers"], "web": {**WEB, "tmpfs": ["/cache:exec"], "ulimits": {"rtprio": 99}}}}}})
    [start] = [c for c in diff_containers(limited, observation()).changes if c.key == "demo/web"]
    shown = {f.path: f.new for f in start.fields}
    assert shown["tmpfs"] == [{"target": "/cache", "exec": True}]
    assert shown["ulimits"] == {"rtprio": {"soft": 99, "hard": 99}}


DB_LIMITED = build_desired({"stacks": {"demo": {**DEMO, "containers": {
    **DEMO["containers"], "db": {**DB, "ulimits": {"nofile": 65536, "memlock": -1}}}}}})
"""db with Elasticsearch-like limits."""


def test_ulimits_are_recorded_with_the_start_only_when_set_and_a_change_recreates() -> None:
    """Records of starts made before ulimits existed stay equal to a spec without them: an
    upgrade recreates nothing. A change of them recreates, as any field the process runs with."""
    [start] = [c for c in diff_containers(WANT, observation()).changes if c.key == "demo/db"]
    assert isinstance(start.desired, DesiredContainer) and "ulimits" not in start.desired.recorded_spec
    assert diff_containers(DB_LIMITED, observation(*host(running(DB_LIMITED, "demo", "db", pid=101)))).changes == []
    [change] = diff_containers(DB_LIMITED, observation(*host(running(WANT, "demo", "db", pid=101)))).changes
    assert (change.action, change.key, [f.path for f in change.fields]) == (Action.RECREATE, "demo/db", ["ulimits"])
    assert change.fields[0].new == {"nofile": {"soft": 65536, "hard": 65536}, "memlock": {"soft": -1, "hard": -1}}


@pytest.mark.parametrize(("ceilings", "message"), [
    (Ceilings({"nofile": 1048576}, raisable=True), None),
    (Ceilings({"nofile": 20000, "memlock": 8388608}, raisable=False),
     "hard limit 65536 is above 20000, reconcile's own hard limit, which this host does not let it raise (no "
     "CAP_SYS_RESOURCE): raise it where reconcile starts (ulimit -H, a unit's LimitNOFILE=), or ask less"),
    (Ceilings({"nofile": 4096}, raisable=True), "hard limit 65536 is above 4096, fs.nr_open, the kernel's most for "
                                                "any process"),
])
def test_a_hard_limit_above_what_this_host_lets_a_start_set_is_an_issue_at_it(ceilings: Ceilings,
                                                                              message: str | None) -> None:
    """Before anything is touched: the runtime would fail the start (after a recreate stopped
    the old process). memlock unlimited on a host that cannot raise its 8 MiB is one too."""
    observed = replace(observation(), ulimit_ceilings=ceilings)
    issues = [(i.loc, i.message) for i in diff_containers(DB_LIMITED, observed).issues]
    expected = [] if message is None else [(("containers", "db", "ulimits", "nofile"), message)]
    if not ceilings.raisable:
        expected.append((("containers", "db", "ulimits", "memlock"), "hard limit unlimited is above 8388608, "
                         "reconcile's own hard limit, which this host does not let it raise (no CAP_SYS_RESOURCE): "
                         "raise it where reconcile starts (ulimit -H, a unit's LimitMEMLOCK=), or ask less"))
    assert issues == expected
