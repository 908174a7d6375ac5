"""Compose files shaped as public projects write them (tests/compose/<name>/compose.yaml),
each applied with the CLI inside a throwaway sandbox, as a user runs `reconcile` on them: its
published ports answer, its services reach each other by name, its health gates hold, a change
recreates exactly the container it concerns, and `down` leaves nothing of ours. The images
are busybox-static playing nginx, postgres, redis and an app (tests/compose/images.py), served
by a loopback registry as `127.0.0.1:5000/...`. One more file, full of keys reconcile cannot
honour, pins its located errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests import registry as registry_fixtures
from tests.compose.images import build_all, push_all
from tests.image_builder import BuiltImage
from tests.leaks import leftovers
from tests.registry import Registry
from tests.sandbox import Sandbox
from tests.waiting import eventually

registry = registry_fixtures.registry
"""The `registry` fixture, bound by assignment (pyflakes flags an imported fixture as unused)."""

PROJECTS = Path(__file__).parent / "compose"
PREFIX = "rc-h16d-"
"""Projects are copied to a directory of this prefix: its name is the stack (project) name."""


@dataclass(frozen=True)
class Answer:
    """`GET http://127.0.0.1:PORT/PATH` from the sandbox, the host side; its body holds `text`."""
    port: int
    path: str
    text: str


@dataclass(frozen=True)
class Reach:
    """`sh -c SCRIPT` run in a container prints `text`: a service reached by name or address."""
    container: str
    script: str
    text: str


@dataclass(frozen=True)
class Edit:
    """Replace `old` (once, exactly) by `new` in the project's `file`."""
    file: str
    old: str
    new: str


@dataclass(frozen=True)
class Case:
    name: str
    started: frozenset[str]
    answers: tuple[Answer, ...] = ()
    reaches: tuple[Reach, ...] = ()
    files: tuple[tuple[str, str], ...] = ()
    """Host files (relative to the project) a bind mount lets a container write: (path, text)."""
    healthy: tuple[str, ...] = ()
    limits: tuple[tuple[tuple[str, ...], str], ...] = ()
    """Cgroup files below the sandbox's cgroup parent (v1 and v2 names) and the value one of
    them starts with."""
    completed: tuple[str, ...] = ()
    """One-shot containers (restart: "no"): exited 0 once applied."""
    edits: tuple[Edit, ...] = ()
    changed: dict[str, str] = field(default_factory=dict)
    """What `diff -o json` plans for containers after the edits: name -> action (`update` in
    place, `update!` when it recreates)."""
    after: tuple[Answer, ...] = ()
    refused: tuple[int, ...] = ()
    """Host ports nothing answers on once the change is applied (only `ports:` publishes)."""
    after_files: tuple[tuple[str, str], ...] = ()


CASES = [
    Case("webstack", frozenset({"web", "db", "cache"}),
         answers=(Answer(8000, "cgi-bin/hello", "hello from shop"),
                  Answer(8000, "cgi-bin/db", "postgres shop ready")),
         reaches=(Reach("web", "nc -w 1 cache 6379 </dev/null", "+PONG"),
                  Reach("cache", "nc -w 1 db 5432 </dev/null", "postgres shop ready")),
         files=(("pgdata/PG_VERSION", "16"),),
         edits=(Edit("compose.yaml", "APP_NAME=shop", "APP_NAME=store"),),
         changed={"web": "recreate"},
         after=(Answer(8000, "cgi-bin/hello", "hello from store"),)),
    Case("proxy", frozenset({"proxy", "app1", "app2"}),
         answers=(Answer(80, "cgi-bin/route/app1/cgi-bin/hello", "hello from app1"),
                  Answer(80, "cgi-bin/route/app2/cgi-bin/hello", "hello from app2"),
                  Answer(80, "", "Welcome to nginx!")),
         reaches=(Reach("app1", "wget -qO- http://app2:8000/cgi-bin/hello", "hello from app2"),),
         edits=(Edit("compose.yaml", "APP_NAME: app2", "APP_NAME: app2-v2"),),
         changed={"app2": "recreate"}, refused=(8000,),
         after=(Answer(80, "cgi-bin/route/app2/cgi-bin/hello", "hello from app2-v2"),
                Answer(80, "cgi-bin/route/app1/cgi-bin/hello", "hello from app1"))),
    Case("profiles", frozenset({"app"}),
         answers=(Answer(8000, "cgi-bin/hello", "hello from app"),),
         edits=(Edit(".env", "# COMPOSE_PROFILES=debug", "COMPOSE_PROFILES=debug"),),
         changed={"debug": "create", "app": "update"},  # app's /etc/hosts learns of debug, in place
         after=(Answer(8081, "", "Welcome to nginx!"), Answer(8000, "cgi-bin/hello", "hello from app"))),
    Case("envfile", frozenset({"api"}),
         answers=tuple(Answer(8080, "cgi-bin/env", line) for line in (
             "APP_NAME=api\n", "GREETING=hello from .env\n", "DB_POOL=5\n", "FEATURE_FLAGS=search,cart\n",
             "PORT=8000\n", "LOG_LEVEL=info\n", "DOLLAR=costs $5\n")),
         edits=(Edit(".env", "API_HOST_PORT=8080", "API_HOST_PORT=8080\nLOG_LEVEL=debug"),),
         changed={"api": "recreate"},
         after=(Answer(8080, "cgi-bin/env", "LOG_LEVEL=debug\n"),)),
    Case("health", frozenset({"db", "cache", "migrate", "web"}),
         # web records what db, cache and migrate's file said when it started: all there already.
         answers=(Answer(8000, "cgi-bin/startup", "db: postgres app ready\n"),
                  Answer(8000, "cgi-bin/startup", "cache: +PONG\n"),
                  Answer(8000, "cgi-bin/startup", "/shared/migrated: postgres app ready\n")),
         reaches=(Reach("web", "nc -w 1 db 5432 </dev/null", "postgres app ready"),),
         files=(("shared/migrated", "postgres app ready\n"),),
         healthy=("db", "cache"), completed=("migrate",),
         edits=(Edit("compose.yaml", "APP_NAME: web", "APP_NAME: web2"),),
         changed={"web": "recreate"},
         after=(Answer(8000, "cgi-bin/hello", "hello from web2"),)),
    Case("static", frozenset({"nginx"}),
         answers=(Answer(8080, "", "<h1>It works</h1>"),),
         edits=(Edit("compose.yaml", "127.0.0.1:8080:80", "127.0.0.1:8088:80"),),
         changed={}, refused=(8080,),  # a port moves without touching the container
         after=(Answer(8088, "", "<h1>It works</h1>"),)),
    Case("internal", frozenset({"api", "queue", "worker"}),
         answers=(Answer(8000, "cgi-bin/hello", "hello from api"),),
         reaches=(Reach("api", "nc -w 1 192.168.92.20 6379 </dev/null", "+PONG"),
                  Reach("worker", "nc -w 1 queue 6379 </dev/null", "+PONG"),
                  Reach("worker", "ip -4 -o addr show eth0; cat /sys/class/net/eth0/mtu", "1400"),
                  Reach("api", "ip -4 -o addr show", "inet 192.168.92.10/24")),
         edits=(Edit("compose.yaml", "APP_NAME: worker", "APP_NAME: worker-2"),),
         changed={"worker": "recreate"},
         after=(Answer(8000, "cgi-bin/hello", "hello from api"),)),
    Case("ipv6", frozenset({"web", "api"}),
         answers=(Answer(8000, "cgi-bin/hello", "hello from web"),),
         reaches=(Reach("web", "ip -6 -o addr show eth0 scope global", "inet6 fd00:93:1::10/64"),
                  Reach("web", "wget -qO- http://[fd00:93:1::20]:8000/cgi-bin/hello", "hello from api"),
                  Reach("api", "ip -4 -o addr show eth0", "inet 192.168.93.")),
         edits=(Edit("compose.yaml", "APP_NAME: api", "APP_NAME: api-2"),),
         changed={"api": "recreate"},
         after=(Answer(8000, "cgi-bin/hello", "hello from web"),)),
    Case("longform", frozenset({"web"}),
         answers=(Answer(8080, "cgi-bin/hello", "hello from longform"),),
         reaches=(Reach("web", "cat /data/marker; touch /data/x 2>&1",
                        "mounted\ntouch: /data/x: Read-only file system"),
                  # its health check's command (only `watch` probes a container nothing depends on)
                  Reach("web", "wget -qO- http://127.0.0.1:8000/ || exit 1", "app\n")),
         edits=(Edit("compose.yaml", "APP_NAME: longform", "APP_NAME: longform-2"),),
         limits=((("pids.max",), "64"), (("memory.limit_in_bytes", "memory.max"), str(64 << 20)),
                 (("cpu.cfs_quota_us", "cpu.max"), "50000")),
         changed={"web": "recreate"},
         after=(Answer(8080, "cgi-bin/hello", "hello from longform-2"),)),
    Case("monitor", frozenset({"prometheus", "grafana"}),
         answers=(Answer(9090, "prometheus.yml", "scrape_interval: 15s"),
                  Answer(3000, "cgi-bin/hello", "hello from grafana")),
         reaches=(Reach("grafana", "wget -qO- http://prometheus:9090/prometheus.yml", "scrape_interval"),),
         edits=(Edit("compose.yaml", "GF_SECURITY_ADMIN_PASSWORD=admin", "GF_SECURITY_ADMIN_PASSWORD=changed"),),
         changed={"grafana": "recreate"},
         after=(Answer(3000, "cgi-bin/env", "GF_SECURITY_ADMIN_PASSWORD=changed\n"),)),
    Case("aliases", frozenset({"app", "db"}),
         # db by both its aliases on back; the host by host-gateway (front's gateway, from the
         # pool); a fixed entry as written
         reaches=(Reach("app", "nc -w 1 postgres 5432 </dev/null", "postgres app ready"),
                  Reach("app", "nc -w 1 database 5432 </dev/null", "postgres app ready"),
                  Reach("app", "ping -c1 -W2 host.docker.internal", "1 packets received"),
                  Reach("app", "cat /etc/hosts", "192.168.94.250\tlegacy-api.internal\n")),
         answers=(Answer(8000, "cgi-bin/hello", "hello from app"),),
         edits=(Edit("compose.yaml", "aliases: [postgres, database]", "aliases: [postgres, database, pg]"),),
         changed={"app": "update", "db": "update"},  # both files name db by pg too, in place
         after=(Answer(8000, "cgi-bin/hello", "hello from app"),)),
    Case("worker", frozenset({"queue", "producer", "consumer"}),
         reaches=(Reach("consumer", "redis-cli -h queue ping", "PONG"),),
         files=(("out/consumed", "batch=10 PONG\n"),),
         edits=(Edit("compose.yaml", 'BATCH: "10"', 'BATCH: "20"'),),
         changed={"consumer": "recreate"},
         after_files=(("out/consumed", "batch=20 PONG\n"),)),
]

GET = """\
import sys, urllib.request
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=2).read().decode(), end='')
except OSError as error:
    print(f'ERROR {error}', end='')
"""


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, BuiltImage]:
    return build_all(tmp_path_factory.mktemp("rc-h16d-images") / "layout")


@pytest.fixture
def pushed(sandbox: Sandbox, registry: Registry, images: dict[str, BuiltImage]) -> Iterator[Registry]:
    push_all(images, registry, sandbox)
    yield registry


def reconcile_ok(sandbox: Sandbox, *args: str) -> str:
    result = sandbox.reconcile(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def fetch(sandbox: Sandbox, port: int, path: str) -> str:
    return sandbox.run("python3", "-c", GET, f"http://127.0.0.1:{port}/{path}", check=False).stdout


def until_holds(read: Callable[[], str], text: str, timeout: float = 15) -> str:
    """What `read` returns once it holds `text` (eventually() names its last answer after `timeout`)."""
    seen = [""]

    def probe() -> str:
        seen[0] = read()
        return text if text in seen[0] else seen[0]

    eventually(probe, text, timeout=timeout)
    return seen[0]


def check_answers(sandbox: Sandbox, expected: tuple[Answer, ...]) -> None:
    for answer in expected:
        body = until_holds(lambda: fetch(sandbox, answer.port, answer.path), answer.text)
        assert answer.text in body, (answer, body)


def check_files(project: Path, expected: tuple[tuple[str, str], ...]) -> None:
    for name, text in expected:
        path = project / name
        content = until_holds(lambda: path.read_text() if path.exists() else "", text)
        assert text in content, (name, content)


def exec_output(sandbox: Sandbox, stack: str, reach: Reach) -> str:
    result = sandbox.reconcile("exec", f"{stack}/{reach.container}", "--", "sh", "-c", reach.script)
    return result.stdout + result.stderr


def planned_containers(sandbox: Sandbox, compose: Path) -> dict[str, str]:
    """The container changes `diff -o json` plans: name -> action."""
    result = sandbox.reconcile("diff", "-o", "json", str(compose))
    assert result.returncode in (0, 2), result.stdout + result.stderr
    return {change["key"].split("/", 1)[1]: _marked_action(change)
            for change in json.loads(result.stdout)["changes"] if change["kind"] == "container"}


def _marked_action(change: dict[str, object]) -> str:
    """The change's action, with a `!` when it is a disruptive update."""
    disruptive = change["action"] == "update" and change.get("disruptive")
    return str(change["action"]) + ("!" if disruptive else "")


def assert_settled(sandbox: Sandbox, compose: Path) -> None:
    """Applied again, nothing changes: a one-shot container that completed (exited 0) is done,
    as a finished Kubernetes Job, so `diff` exits 0."""
    assert sandbox.reconcile("diff", str(compose)).returncode == 0
    assert planned_containers(sandbox, compose) == {}
    assert "No changes. The host matches the spec." in reconcile_ok(sandbox, "apply", str(compose))


def containers(sandbox: Sandbox) -> dict[str, dict]:
    """`status -o json`'s container rows by name (`Sandbox.containers`, with the error shown)."""
    result = sandbox.reconcile("status", "-o", "json")
    status = json.loads(result.stdout)
    assert "stacks" in status, result.stdout + result.stderr
    return {row["name"]: row for stack in status["stacks"] for row in stack["containers"]}


def copy_project(name: str, sandbox: Sandbox) -> Path:
    """The project in a directory of the sandbox named after the stack: bind mounts write
    there, never into the source tree."""
    project = sandbox.workdir / f"{PREFIX}{name}"
    shutil.copytree(PROJECTS / name, project)
    return project


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_a_compose_file_runs_changes_and_goes(case: Case, sandbox: Sandbox, pushed: Registry) -> None:
    project = copy_project(case.name, sandbox)
    stack = f"{PREFIX}{case.name}"
    compose = project / "compose.yaml"

    reconcile_ok(sandbox, "apply", str(compose))
    rows = containers(sandbox)
    assert [s["name"] for s in sandbox.status()["stacks"]] == [stack]
    assert set(rows) == case.started, rows
    assert {name for name, row in rows.items() if row["state"] == "running"} == case.started - set(case.completed)
    assert [rows[name].get("exit_code") for name in case.completed] == [0] * len(case.completed), rows
    for name in case.healthy:
        assert until_holds(lambda: str((containers(sandbox)[name]["health"] or {}).get("status")),
                           "healthy") == "healthy"
    check_answers(sandbox, case.answers)
    for reach in case.reaches:
        output = until_holds(lambda: exec_output(sandbox, stack, reach), reach.text, timeout=5)
        assert reach.text in output, (reach, output)
    check_files(project, case.files)
    for names, value in case.limits:
        values = {path.read_text().strip() for top in sandbox.cgroup_dirs() for name in names
                  for path in top.rglob(name)}
        assert any(v.startswith(value) for v in values), (names, values)
    assert_settled(sandbox, compose)

    for edit in case.edits:
        path = project / edit.file
        text = path.read_text()
        assert text.count(edit.old) == 1, (edit, text)
        path.write_text(text.replace(edit.old, edit.new))
    assert planned_containers(sandbox, compose) == case.changed
    reconcile_ok(sandbox, "apply", str(compose))
    check_answers(sandbox, case.after)
    check_files(project, case.after_files)
    for port in case.refused:
        assert fetch(sandbox, port, "").startswith("ERROR "), port
    assert_settled(sandbox, compose)

    reconcile_ok(sandbox, "down", str(compose))
    pushed.stop()  # the registry is a process of the sandbox too
    assert leftovers(sandbox) == []


UNSUPPORTED = [
    "compose.yaml:4:5: services.app.build: building images is not supported: build and push the image, and name "
    "it in image:",
    "compose.yaml:8:5: services.app.devices: is not supported by reconcile",
    "compose.yaml:13:5: services.sidecar.network_mode: network_mode 'service:app' is not supported: a container "
    "has a network namespace of its own; attach the service to networks: (or network_mode: none)",
    "compose.yaml:17:13: networks.overlay.driver: network driver 'overlay' is not supported: only bridge networks",
    "compose.yaml:22:1: include: is not supported by reconcile: put every service in this file",
]


def test_unsupported_keys_are_errors_at_their_place(tmp_path: Path) -> None:
    """build:, network_mode, devices, the top-level include and an overlay network:
    every one reported, at its line and column, exit 1, in text and in JSON."""
    project = tmp_path / "unsupported"
    shutil.copytree(PROJECTS / "unsupported", project)
    command = [sys.executable, "-m", "reconcile", "validate"]
    text = subprocess.run([*command, "compose.yaml"], cwd=project, capture_output=True, text=True, timeout=60)
    assert (text.returncode, text.stdout, text.stderr.splitlines()) == (1, "", UNSUPPORTED)
    as_json = subprocess.run([*command, "-o", "json", "compose.yaml"], cwd=project, capture_output=True, text=True,
                             timeout=60)
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout) == {"error": "invalid spec", "messages": UNSUPPORTED}


ENVFILE_VARIABLES = ("REGISTRY", "APP_VERSION", "APP_NAME", "GREETING", "API_PORT", "LOG_LEVEL", "API_HOST_PORT",
                     "APP_SUBNET", "COMPOSE_PROFILES")


def convert(project: Path, **variables: str) -> dict:
    environment = {k: v for k, v in os.environ.items() if k not in ENVFILE_VARIABLES} | variables
    result = subprocess.run([sys.executable, "-m", "reconcile", "convert", "-o", "json", "compose.yaml"],
                            cwd=project, env=environment, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def test_env_files_and_interpolation_read_as_docker_compose_config_reads_them(tmp_path: Path) -> None:
    """What `docker compose config` prints for tests/compose/envfile: env files in order, then
    `environment:` over them; `.env` fills `${VAR:-default}` and the process environment wins
    over `.env`; `$$` is a `$`."""
    project = tmp_path / "envfile"
    shutil.copytree(PROJECTS / "envfile", project)
    native = convert(project)
    assert native == {
        "name": "rc-h16d-envfile",
        "networks": {"appnet": {"subnet": "10.97.30.0/24"}},
        "containers": {"api": {
            "image": "127.0.0.1:5000/acme/app:1.0",
            "restart": "no",
            "env": {"DB_POOL": "5", "FEATURE_FLAGS": "search,cart", "GREETING": "hello from .env", "APP_NAME": "api",
                    "PORT": "8000", "LOG_LEVEL": "info", "DOLLAR": "costs $5"},
            "networks": {"appnet": {}},
            "ports": [{"host": 8080, "container": 8000}]}}}

    (project / "config" / "local.env").write_text("DB_POOL=20\n")  # the optional env file, now there
    overridden = convert(project, API_HOST_PORT="9090", API_PORT="9000", REGISTRY="registry.example:5000")
    api = overridden["containers"]["api"]
    assert api["image"] == "registry.example:5000/acme/app:1.0"
    assert api["ports"] == [{"host": 9090, "container": 9000}]
    assert api["env"]["PORT"] == "9000" and api["env"]["DB_POOL"] == "20"
