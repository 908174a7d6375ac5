"""Health checks and depends_on conditions end to end, on the real kernel inside a sandbox:
`apply` gating starts on service_healthy and service_completed_successfully (and failing with
the dependency's last probe), `status` showing health, and the watch agent probing, exposing
health in its metrics and restarting an unhealthy container when asked."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.sandbox import Sandbox
from tests.waiting import eventually, scaled
from tests.watch_agent import Agent

GATED = """\
name: rc-h16b
containers:
  init:
    command: ["/bin/sh", "-c", "sleep 1; touch /shared/init-done"]
    restart: "no"
    volumes: ["{shared}:/shared"]
  db:
    command: ["/bin/sh", "-c", "sleep 1; touch /shared/ready; exec sleep 100000"]
    volumes: ["{shared}:/shared"]
    healthcheck:
      test: test -f /shared/ready && echo ready
      interval: 1m
      start_period: 30s
      start_interval: 200ms
  web:
    command: ["/bin/sh", "-c", "ls /shared > /shared/web-saw; exec sleep 100000"]
    volumes: ["{shared}:/shared"]
    depends_on:
      db: {{condition: service_healthy}}
      init: {{condition: service_completed_successfully}}
"""

NEVER_HEALTHY = """\
name: rc-h16b
containers:
  slow:
    command: sleep 100000
    healthcheck: {test: [CMD-SHELL, "echo not yet; exit 1"], start_period: 1m, start_interval: 300ms}
  web:
    command: sleep 100000
    depends_on: {slow: {condition: service_healthy}}
"""

FAILING_INIT = """\
name: rc-h16b
containers:
  init:
    command: ["/bin/sh", "-c", "exit 3"]
    restart: "no"
  web:
    command: sleep 100000
    depends_on: {init: {condition: service_completed_successfully}}
"""


def _apply(sandbox: Sandbox, path: Path, timeout: str = "60") -> tuple[int, str]:
    result = sandbox.run("env", f"RECONCILE_DEPENDS_TIMEOUT={timeout}", sys.executable, "-m", "reconcile",
                         "apply", str(path), check=False, timeout=scaled(120))
    return result.returncode, result.stdout + result.stderr


def test_apply_waits_for_dependencies(sandbox: Sandbox) -> None:
    shared = sandbox.workdir / "shared"
    shared.mkdir()
    path = sandbox.write("stack.yaml", GATED.format(shared=shared))
    code, out = _apply(sandbox, path)
    assert code == 0, out
    # web started only once db was healthy and init had completed: it saw both files (and its
    # own; written by its program a moment after its start, which may be after apply returns).
    saw = ["init-done", "ready", "web-saw"]
    assert eventually(lambda: (shared / "web-saw").exists() and (shared / "web-saw").read_text().split(), saw) == saw
    rows = sandbox.containers()
    assert rows["db"]["health"]["status"] == "healthy"
    assert rows["db"]["health"]["last_probe"]["exit_code"] == 0
    assert rows["db"]["health"]["last_probe"]["output"] == "ready\n"
    assert rows["web"]["health"] is None and rows["init"]["exit_code"] == 0
    text = sandbox.reconcile("status").stdout
    assert "running (healthy)" in text and "container db healthy: last probe " in text and ": exit 0: ready" in text

    # Changing only the healthcheck keeps the running process.
    pid = rows["db"]["pid"]
    path.write_text(GATED.format(shared=shared).replace("interval: 1m", "interval: 2m"))
    diff = sandbox.reconcile("diff", str(path)).stdout
    assert "db" not in diff, diff
    assert sandbox.containers()["db"]["pid"] == pid


_WITH_CTRL_C = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                "os.execv(sys.argv[1], sys.argv[1:])")
"""Runs a command with SIGINT's default action, which a background run (CI's) may have ignored:
then the CLI's interpreter would ignore it too."""


def test_ctrl_c_while_a_start_waits_on_its_dependency_ends_at_once_and_starts_nothing_more(
        sandbox: Sandbox) -> None:
    """The starts run in threads: Ctrl-C reached the main one, which then waited for the start
    to wait out its dependency (up to RECONCILE_DEPENDS_TIMEOUT) and start it anyway, unrecorded;
    the starts of its level that finished are recorded."""
    path = sandbox.write("stack.yaml", NEVER_HEALTHY + "  other:\n    command: sleep 100000\n"
                                                        "    depends_on: {slow: {condition: service_started}}\n")
    apply = subprocess.Popen(["nsenter", "-t", str(sandbox.pid), "-n", "-m", "--", sys.executable, "-c",
                              _WITH_CTRL_C, sys.executable, "-m", "reconcile", "apply", str(path)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=sandbox.env)
    try:
        # web's start is in its wait once the wait has probed slow (its health is recorded)
        assert eventually(lambda: (sandbox.containers().get("slow") or {}).get("health") is not None, True,
                          timeout=30)
        os.kill(apply.pid, signal.SIGINT)  # nsenter without --pid execs: the CLI's own pid
        out, err = apply.communicate(timeout=scaled(10))
    finally:
        apply.kill()
    assert apply.returncode == 130 and "Traceback" not in err, err
    # it tells what it made, the starts that finished included, as a failed apply does
    assert "+ container rc-h16b/slow" in out and "+ container rc-h16b/other" in out, out
    assert "container rc-h16b/web" not in out and "\nInterrupted: " in out and "before Ctrl-C" in out, out
    rows = sandbox.containers()
    assert rows["slow"]["state"] == "running" and rows.get("web", {}).get("pid") is None, rows
    # other, started beside web's wait, finished its start: recorded, not adopted by the next run
    assert rows["other"]["state"] == "running"
    assert "rc-h16b/other" not in sandbox.reconcile("diff", str(path)).stdout
    assert sandbox.reconcile("down", str(path)).returncode == 0


def test_apply_fails_naming_the_dependency(sandbox: Sandbox) -> None:
    path = sandbox.write("stack.yaml", NEVER_HEALTHY)
    code, out = _apply(sandbox, path, timeout="3")
    assert code == 1
    assert "create container rc-h16b/web: dependency 'slow' is not healthy after 3s (RECONCILE_DEPENDS_TIMEOUT); " \
           "last probe " in out and ": exit 1: not yet" in out, out
    status = json.loads(sandbox.reconcile("status", "-o", "json", str(path)).stdout)  # not recorded: it failed
    rows = {c["name"]: c for c in status["stacks"][0]["containers"]}
    assert rows["web"]["state"] == "missing" and "dependency 'slow' is not healthy" in rows["web"]["start_error"]
    assert rows["slow"]["health"]["status"] == "starting"  # failures within start_period do not count

    path.write_text(FAILING_INIT)
    code, out = _apply(sandbox, path)
    assert code == 1 and "dependency 'init' did not complete successfully: it exited with code 3" in out, out


PROGRAM_MISSING = """\
name: rc-h16b
containers:
  db:
    command: sleep 100000
    healthcheck: {test: [CMD, /no/such], interval: 200ms, retries: 2}
  web:
    command: sleep 100000
    depends_on: {db: {condition: service_healthy}}
"""
NOT_FOUND = "executable file `/no/such` not found in $PATH: No such file or directory"


def test_a_probe_whose_program_cannot_run_is_recorded_as_docker_records_it(sandbox: Sandbox) -> None:
    """As Docker records a probe whose exec failed to start: exit code -1 and the runtime's
    error as its output (not crun's 255, which would pass for the program's own exit), and a
    failure like any other: `retries` of them make the container unhealthy."""
    path = sandbox.write("stack.yaml", PROGRAM_MISSING)
    code, out = _apply(sandbox, path, timeout="30")
    assert code == 1 and "create container rc-h16b/web: dependency 'db' is unhealthy; last probe " in out, out
    assert out.count(f": exit -1: {NOT_FOUND}") == 1, out
    status = json.loads(sandbox.reconcile("status", "-o", "json", str(path)).stdout)
    db = {c["name"]: c for c in status["stacks"][0]["containers"]}["db"]
    assert (db["health"]["status"], db["health"]["failing_streak"]) == ("unhealthy", 2), db
    assert (db["health"]["last_probe"]["exit_code"], db["health"]["last_probe"]["output"]) == (-1, NOT_FOUND), db
    log = json.loads((sandbox.state_dir / "containers" / "rc-h16b" / "db" / "health.json").read_text())
    assert [(probe["exit_code"], probe["output"]) for probe in log["probes"]] == [(-1, NOT_FOUND)] * 2, log


UNSTARTABLE = """\
name: rc-h16b
containers:
  bad:
    command: /nonexistent-binary
  good:
    command: sleep 100000
    depends_on: [bad]
  after:
    command: sleep 100000
    depends_on: [good]
  optional:
    command: sleep 100000
    depends_on: {bad: {condition: service_started, required: false}}
"""


def test_a_dependency_that_fails_to_start_holds_back_its_dependents(sandbox: Sandbox) -> None:
    """As Compose: no dependent of a dependency that failed to start is started, whatever its
    condition (a plain list is service_started), nor theirs in turn; required: false goes ahead."""
    path = sandbox.write("stack.yaml", UNSTARTABLE)
    code, out = _apply(sandbox, path)
    assert code == 1, out
    assert "create container rc-h16b/bad: rc-h16b/bad: command not found in the container: /nonexistent-binary" \
        in out, out
    assert "create container rc-h16b/good: dependency 'bad' did not start" in out, out
    assert "create container rc-h16b/after: dependency 'good' did not start" in out, out
    status = json.loads(sandbox.reconcile("status", "-o", "json", str(path)).stdout)
    rows = {c["name"]: c for c in status["stacks"][0]["containers"]}
    assert {name: row["state"] for name, row in rows.items()} == {
        "bad": "missing", "good": "missing", "after": "missing", "optional": "running"}, rows
    assert rows["good"]["start_error"] == "dependency 'bad' did not start"


WATCHED = """\
name: rc-h16b
containers:
  app:
    command: ["/bin/sh", "-c", "touch /tmp/ok; exec sleep 100000"]
    restart: always
    restart_on_unhealthy: true
    healthcheck: {test: [CMD-SHELL, "cat /tmp/ok && echo fine"], interval: 300ms, retries: 2}
"""

METRICS_PORT = 9473


def _health(sandbox: Sandbox) -> tuple[str | None, int | None]:
    row = sandbox.containers().get("app") or {}
    return ((row.get("health") or {}).get("status"), row.get("pid"))


def test_agent_probes_and_restarts_unhealthy(sandbox: Sandbox) -> None:
    specs = sandbox.workdir / "specs"
    specs.mkdir()
    (specs / "stack.yaml").write_text(WATCHED)
    agent = Agent(sandbox, specs, "--resync", "1", "--restart-backoff", "0.5",
                  "--metrics-addr", f"127.0.0.1:{METRICS_PORT}")
    try:
        assert eventually(lambda: _health(sandbox)[0], "healthy", timeout=20) == "healthy"
        pid = _health(sandbox)[1]
        metrics = sandbox.python(f"import urllib.request;print(urllib.request.urlopen("
                                 f"'http://127.0.0.1:{METRICS_PORT}/metrics').read().decode())").stdout
        assert 'reconcile_container_health{container="app",stack="rc-h16b",status="healthy"} 1.0' in metrics
        assert 'reconcile_health_probes_total{container="app",result="success",stack="rc-h16b"}' in metrics

        sandbox.reconcile("exec", "rc-h16b/app", "--", "rm", "/tmp/ok", check=True)
        assert eventually(lambda: agent.saw("unhealthy", container="rc-h16b/app", action="stopping"), True, timeout=20)
        # Stopped, then started again by its restart policy: a new process, healthy again.
        assert eventually(lambda: _health(sandbox)[1] not in (pid, None) and _health(sandbox)[0] == "healthy",
                          True, timeout=30)
        assert sandbox.containers()["app"]["restarts"] == 1
    finally:
        assert agent.stop() == 0


IMAGE_HEALTH = """\
name: rc-h16b
containers:
  db:
    image: "oci:{layout}:{tag}"
  web:
    command: sleep 100000
    depends_on: {{db: {{condition: service_healthy}}}}
"""


def test_an_images_healthcheck_applies_when_the_spec_gives_none(sandbox: Sandbox, tmp_path: Path) -> None:
    """As Docker: a container without a healthcheck of its own takes its image's HEALTHCHECK
    (service_healthy may wait on it); an image without one is a located error at the condition."""
    from tests.image_builder import Layer, build

    layout = tmp_path / "layout"
    build(layout, [Layer.busybox()], cmd=["sh", "-c", "touch /tmp/ready; exec sleep 100000"], env={"PATH": "/bin"},
          tag="checked", healthcheck={"Test": ["CMD-SHELL", "test -f /tmp/ready && echo ready"],
                                      "Interval": 60 * 10**9, "StartPeriod": 30 * 10**9,
                                      "StartInterval": 200 * 10**6, "Retries": 2})
    build(layout, [Layer.busybox()], cmd=["sleep", "100000"], env={"PATH": "/bin"}, tag="plain")

    path = str(sandbox.write("stack.yaml", IMAGE_HEALTH.format(layout=layout, tag="checked")))
    result = sandbox.reconcile("apply", path)
    assert result.returncode == 0, result.stdout + result.stderr
    db = sandbox.containers()["db"]
    assert db["health"]["status"] == "healthy" and db["health"]["last_probe"]["output"] == "ready\n", db

    assert sandbox.reconcile("down", path).returncode == 0

    sandbox.write("stack.yaml", IMAGE_HEALTH.format(layout=layout, tag="plain"))
    refused = sandbox.reconcile("apply", path)
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr == (f"{path}:7:34: containers.web.depends_on.db.condition: service_healthy needs a "
                              "healthcheck on container 'db', and it has none (nor has its image)\n")
    assert sandbox.netns_names() == []


IMAGE_TIMED = """\
name: rc-h16b
containers:
  db:
    image: "oci:{layout}:timed"
    healthcheck: {{test: [CMD, "false"]}}
  web:
    command: sleep 100000
    depends_on: {{db: {{condition: service_healthy}}}}
"""


def test_a_spec_healthcheck_takes_the_timings_it_leaves_out_from_the_image(sandbox: Sandbox, tmp_path: Path) -> None:
    """As Docker (`0 means inherit`): a spec healthcheck that gives only its test runs on the
    image HEALTHCHECK's interval and retries (300ms, 7), not Docker's defaults (30s, 3): the
    dependency is found unhealthy after 7 failures, long before the timeout."""
    from tests.image_builder import Layer, build

    layout = tmp_path / "layout"
    build(layout, [Layer.busybox()], cmd=["sleep", "100000"], env={"PATH": "/bin"}, tag="timed",
          healthcheck={"Test": ["CMD", "true"], "Interval": 300 * 10**6, "Retries": 7})
    path = sandbox.write("stack.yaml", IMAGE_TIMED.format(layout=layout))
    code, out = _apply(sandbox, path, timeout="30")
    assert code == 1 and "create container rc-h16b/web: dependency 'db' is unhealthy; last probe " in out, out
    status = json.loads(sandbox.reconcile("status", "-o", "json", str(path)).stdout)
    db = {c["name"]: c for c in status["stacks"][0]["containers"]}["db"]
    assert (db["health"]["status"], db["health"]["failing_streak"]) == ("unhealthy", 7), db


IMAGE_WATCHED = """\
name: rc-h16c
containers:
  db:
    image: "oci:{layout}:checked"
    restart: always
    restart_on_unhealthy: true
"""


def test_agent_probes_an_images_healthcheck_and_restarts_on_it(sandbox: Sandbox, tmp_path: Path) -> None:
    """The agent probes the HEALTHCHECK a container takes from its image (no depends_on here:
    only the agent's prober probes it), and restart_on_unhealthy acts on it; the restarted
    process (a focused pass: no resync comes meanwhile) is probed again."""
    from tests.image_builder import Layer, build

    layout = tmp_path / "layout"
    build(layout, [Layer.busybox()], cmd=["sh", "-c", "touch /tmp/ready; exec sleep 100000"], env={"PATH": "/bin"},
          tag="checked", healthcheck={"Test": ["CMD-SHELL", "test -f /tmp/ready && echo ready"],
                                      "Interval": 300 * 10**6, "Retries": 2})
    specs = sandbox.workdir / "specs"
    specs.mkdir()
    (specs / "stack.yaml").write_text(IMAGE_WATCHED.format(layout=layout))
    agent = Agent(sandbox, specs, "--resync", "600", "--restart-backoff", "0.5")
    try:
        def health() -> tuple[str | None, int | None]:
            row = sandbox.containers().get("db") or {}
            return ((row.get("health") or {}).get("status"), row.get("pid"))

        assert eventually(lambda: health()[0], "healthy", timeout=30) == "healthy"
        pid = health()[1]
        sandbox.reconcile("exec", "rc-h16c/db", "--", "rm", "/tmp/ready", check=True)
        assert eventually(lambda: agent.saw("unhealthy", container="rc-h16c/db", action="stopping"), True, timeout=20)
        assert eventually(lambda: health()[1] not in (pid, None) and health()[0] == "healthy", True, timeout=30)
    finally:
        assert agent.stop() == 0


GATED_SLOWLY = """\
name: rc-h16f
containers:
  db:
    command: ["/bin/sh", "-c", "sleep {ready:g}; touch /tmp/ready; exec sleep 100000"]
    healthcheck: {{test: [CMD-SHELL, "test -f /tmp/ready"], interval: 1m, start_period: 1m, start_interval: 300ms}}
  web:
    command: sleep 100000
    depends_on: {{db: {{condition: service_healthy}}}}
  api:
    command: sleep 100000
    depends_on: [web]
"""
"""api waits on web by start order alone: held while web is, never started ahead of it."""

BESIDE = """\
name: rc-h16g
containers:
  x:
    command: sleep 100000
"""


def test_agent_holds_a_start_on_its_dependency_and_repairs_the_rest_meanwhile(sandbox: Sandbox) -> None:
    """The agent does not wait on a depends_on condition (it would stall every repair): web's
    start is held, shown in its stack's row, and made once db is healthy; meanwhile a container
    of another stack, killed, is restarted. No timing is asserted: only that x came back while
    web still waited (without the hold, the worker sat in web's wait until db was healthy)."""
    specs = sandbox.workdir / "specs"
    specs.mkdir()
    (specs / "gated.yaml").write_text(GATED_SLOWLY.format(ready=scaled(8)))
    (specs / "beside.yaml").write_text(BESIDE)
    agent = Agent(sandbox, specs, "--resync", "600")
    try:
        def states() -> dict[str, tuple[object, object]]:
            return {name: (row["state"], row["pid"]) for name, row in sandbox.containers().items()}

        assert eventually(lambda: {name: state for name, (state, _) in states().items() if name not in ("web", "api")},
                          {"db": "running", "x": "running"}, timeout=20)
        killed = states()["x"][1]
        assert isinstance(killed, int)
        os.kill(killed, signal.SIGKILL)

        def repaired_while_held() -> tuple[bool, object, object, bool]:
            status = sandbox.status()
            rows = {c["name"]: c for s in status["stacks"] for c in s["containers"]}
            watch = next(s["watch"] for s in status["stacks"] if s["name"] == "rc-h16f") or {}
            back = rows["x"]["state"] == "running" and rows["x"]["pid"] not in (killed, None)
            return (back, rows.get("web", {}).get("state"), rows.get("api", {}).get("state"),
                    watch.get("sync"),  # no row: not applied yet
                    "rc-h16f/container/web: waits for db to be healthy" in str(watch.get("error")),
                    "rc-h16f/container/api: waits for web to start" in str(watch.get("error")))

        assert eventually(repaired_while_held, (True, "missing", "missing", "OutOfSync", True, True), timeout=20)
        assert agent.saw("start held", key="rc-h16f/container/web", reason="waits for db to be healthy")
        assert not [line for line in agent.lines if line.get("event") == "error"]

        # Started once db is healthy; the stack is in sync then.
        def started() -> tuple[object, object, object]:
            status = sandbox.status()
            rows = {c["name"]: c for s in status["stacks"] for c in s["containers"]}
            watch = next(s["watch"] for s in status["stacks"] if s["name"] == "rc-h16f") or {}
            return rows["web"]["state"], rows["api"]["state"], (rows["db"]["health"] or {}).get("status"), \
                watch.get("sync")

        assert eventually(started, ("running", "running", "healthy", "Synced"), timeout=30)
        assert sandbox.containers()["x"]["restarts"] == 1
    finally:
        assert agent.stop() == 0
