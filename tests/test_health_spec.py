"""`healthcheck`, `depends_on` conditions and `restart_on_unhealthy` as the stack file takes them
(Docker Compose's syntax, Docker's defaults), with the exact error for each bad input; and
Docker's health rules (state machine and probe schedule), pure."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from reconcile.engine import health
from specs.health import format_duration, go_duration, to_duration
from specs.model import Healthcheck, Stack
from state import health as records
from state.health import Probe
from tests.specs_support import error_lines, load_text

HEAD = """\
name: demo
containers:
  db:
    command: /bin/true
"""


def _stack(tmp_path: Path, body: str) -> Stack:
    return load_text(tmp_path, HEAD + textwrap.indent(textwrap.dedent(body), "    "))[0].stack


@pytest.mark.parametrize("text, seconds", [
    ("30s", 30.0), ("1m30s", 90.0), ("500ms", 0.5), ("1h", 3600.0), ("1.5s", 1.5), ("0", 0.0), ("2m", 120.0),
    ("10us", None), ("30", None), ("-1s", None), ("1 s", None), ("s", None),
])
def test_compose_durations(text: str, seconds: float | None) -> None:
    if seconds is None:
        with pytest.raises(ValueError):
            to_duration(text)
    else:
        assert to_duration(text) == seconds
        assert to_duration(format_duration(seconds)) == seconds


def test_test_forms_and_docker_defaults(tmp_path: Path) -> None:
    stack = _stack(tmp_path, """\
        healthcheck: {test: pg_isready -U app, interval: 0s, retries: 0}
        """)
    check = stack.containers["db"].healthcheck
    assert check is not None and check.test == ["CMD-SHELL", "pg_isready -U app"]
    assert (check.interval, check.timeout, check.retries, check.start_period, check.start_interval) == (30, 30, 3, 0, 5)
    assert health.probe_argv(check) == ["/bin/sh", "-c", "pg_isready -U app"]
    exec_form = _stack(tmp_path, "healthcheck: {test: [CMD, /bin/true, x], start_interval: 1s}\n")
    cmd = exec_form.containers["db"].healthcheck
    assert cmd is not None and health.probe_argv(cmd) == ["/bin/true", "x"]
    for body in ("healthcheck: {test: [NONE]}\n", "healthcheck: {disable: true}\n"):
        assert not _stack(tmp_path, body).containers["db"].probed
    assert Stack.model_validate(json.loads(stack.model_dump_json())) == stack  # the state store's round trip


IMAGE_CHECK = {"test": ["CMD", "true"], "interval": "1s", "retries": 7, "start_interval": "2s"}
"""An image's HEALTHCHECK in the spec's terms (state.images reads Docker's): no timeout, no start period."""
Timings = tuple[float, float, int, float, float]


@pytest.mark.parametrize("own, image, test, timings", [
    ({"test": ["CMD", "false"]}, IMAGE_CHECK, ["CMD", "false"], (1, 30, 7, 0, 2)),
    ({"test": ["CMD", "false"], "interval": "0s", "retries": 0}, IMAGE_CHECK, ["CMD", "false"], (1, 30, 7, 0, 2)),
    ({"test": ["CMD", "false"], "interval": "5s", "timeout": "3s", "start_period": "1m"}, IMAGE_CHECK,
     ["CMD", "false"], (5, 3, 7, 60, 2)),
    ({"test": ["CMD", "false"]}, None, ["CMD", "false"], (30, 30, 3, 0, 5)),
    ({"disable": True}, IMAGE_CHECK, None, (1, 30, 7, 0, 2)),
], ids=["only a test: the image's timings", "0 means inherit", "its own timings win", "no image check: Docker's",
        "disabled stays disabled"])
def test_a_spec_healthcheck_inherits_what_it_leaves_out_from_the_image(
        own: dict[str, object], image: dict[str, object] | None, test: list[str] | None, timings: Timings) -> None:
    """Docker merges a container's check over its image's: the test is the container's, each
    timing it leaves out (or gives as 0) the image's, else Docker's default."""
    check = Healthcheck.model_validate(own).over(Healthcheck.model_validate(image) if image else None)
    assert check.test == test and check.enabled == (test is not None)
    assert (check.interval, check.timeout, check.retries, check.start_period, check.start_interval) == timings
    assert check.over(None) == check  # resolved once: a second resolution changes nothing


def test_depends_on_forms(tmp_path: Path) -> None:
    stack = load_text(tmp_path, HEAD + """\
    healthcheck: {test: [CMD, /bin/true]}
  web:
    command: /bin/true
    depends_on:
      db: {condition: service_healthy}
      cache: {condition: service_started, required: false}
  api:
    command: /bin/true
    depends_on: [db]
""")[0].stack
    web, api = stack.containers["web"], stack.containers["api"]
    conditions = {k: d.condition for k, d in web.dependencies.items()}
    assert conditions == {"db": "service_healthy", "cache": "service_started"}
    assert api.dependencies["db"].condition == "service_started" and api.depends_on == ["db"]
    assert Stack.model_validate(json.loads(stack.model_dump_json())) == stack


BAD = [
    ("healthcheck: {test: [CURL, x]}\n", "stack.yaml:5:26: containers.db.healthcheck.test[0]: "
                                         "expected CMD, CMD-SHELL or NONE first, got 'CURL'"),
    ("healthcheck: {test: [CMD]}\n",
     "stack.yaml:5:25: containers.db.healthcheck.test: [\"CMD\"] needs a program to run"),
    ("healthcheck: {test: [NONE, x]}\n",
     "stack.yaml:5:25: containers.db.healthcheck.test: [\"NONE\"] takes nothing after it"),
    ("healthcheck: {test: true}\n",
     "stack.yaml:5:25: containers.db.healthcheck.test: expected a list, got a boolean (true)"),
    ("healthcheck: {test: x, interval: 30}\n",
     "stack.yaml:5:38: containers.db.healthcheck.interval: expected a duration "
     "like '30s', '1m30s' or '500ms', got an integer (30): add a unit (\"30s\")"),
    ("healthcheck: {test: x, timeout: 10us}\n",
     "stack.yaml:5:37: containers.db.healthcheck.timeout: must be 0 or at least 1ms, got '10us'"),
    ("healthcheck: {test: x, retries: -1}\n",
     "stack.yaml:5:37: containers.db.healthcheck.retries: must be at least 0, got -1"),
    ("healthcheck: {interval: 5s}\n", "stack.yaml:5:18: containers.db.healthcheck.test: a healthcheck needs a test, or "
                                      "disable: true (without a healthcheck, an image's HEALTHCHECK applies whole)"),
    ("healthcheck: {disable: true, test: x}\n",
     "stack.yaml:5:28: containers.db.healthcheck.disable: disable: true with a test: remove one of them"),
    ("restart_on_unhealthy: true\n",
     "stack.yaml:5:27: containers.db.restart_on_unhealthy: restart_on_unhealthy needs a healthcheck (with a test)"),
]


@pytest.mark.parametrize("body, expected", BAD, ids=[b[1].split(":")[3].strip() + str(i) for i, b in enumerate(BAD)])
def test_bad_healthcheck(tmp_path: Path, body: str, expected: str) -> None:
    assert error_lines(tmp_path, {"stack.yaml": HEAD + "    " + body}) == [expected]


BAD_DEPENDS = [
    ("{db: {condition: service_healthy}}",
     "stack.yaml:7:34: containers.web.depends_on.db.condition: service_healthy needs a healthcheck on container 'db', "
     "and it has none"),
    ("{db: {condition: service_ready}}",
     "stack.yaml:7:34: containers.web.depends_on.db.condition: expected 'service_started', 'service_healthy' "
     "or 'service_completed_successfully', got a string ('service_ready')"),
    ("{db: {required: false}}", "stack.yaml:7:22: containers.web.depends_on.db: missing required field 'condition'"),
    ("{db: {condition: service_started, restart: true}}",
     "stack.yaml:7:60: containers.web.depends_on.db.restart: restart: true is not supported: reconcile never restarts "
     "a container because its dependency restarted (remove it, or set false)"),
    ("{dbx: {condition: service_started}}",
     "stack.yaml:7:23: containers.web.depends_on.dbx: container 'dbx' is not defined in this stack "
     "(did you mean 'db'?)"),
    ("[db, db]", "stack.yaml:7:22: containers.web.depends_on[1]: 'db' is listed twice"),
]


@pytest.mark.parametrize("value, expected", BAD_DEPENDS)
def test_bad_depends_on(tmp_path: Path, value: str, expected: str) -> None:
    text = HEAD + f"  web:\n    command: /bin/true\n    depends_on: {value}\n"
    assert error_lines(tmp_path, {"stack.yaml": text}) == [expected]


def test_optional_dependency_may_be_absent(tmp_path: Path) -> None:
    text = HEAD + ("  web:\n    command: /bin/true\n"
                   "    depends_on: {cache: {condition: service_started, required: false}}\n")
    assert load_text(tmp_path, text)[0].stack.containers["web"].dependencies["cache"].required is False


CHECK = Stack.model_validate({"name": "x", "containers": {"c": {"command": "x", "healthcheck": {
    "test": "x", "interval": "10s", "retries": 2, "start_period": "30s", "start_interval": "1s",
}}}}).containers["c"].healthcheck


def _probe(at: float, code: int) -> Probe:
    return Probe(at, at + 0.1, code, f"out {code}")


def test_docker_health_rules() -> None:
    assert CHECK is not None
    judged = None
    # Failures within the start period, before any success, do not count.
    for at in (1.0, 2.0, 3.0):
        judged = health.judge(judged, 7, 70, 0.0, _probe(at, 1), CHECK)
        assert (judged.status, judged.failing_streak) == ("starting", 0)
    assert health.probe_due(judged, 0.0, CHECK) == pytest.approx(3.1 + 1)  # start_interval while starting
    judged = health.judge(judged, 7, 70, 0.0, _probe(4.0, 0), CHECK)
    assert (judged.status, judged.failing_streak) == ("healthy", 0)
    assert health.probe_due(judged, 0.0, CHECK) == pytest.approx(4.1 + 10)  # healthy: interval
    # After a success, failures count even within the start period: `retries` in a row.
    judged = health.judge(judged, 7, 70, 0.0, _probe(5.0, 1), CHECK)
    assert (judged.status, judged.failing_streak) == ("healthy", 1)
    judged = health.judge(judged, 7, 70, 0.0, _probe(40.0, health.NO_EXIT_CODE), CHECK)
    assert (judged.status, judged.failing_streak) == ("unhealthy", 2)
    assert len(judged.probes) == 5 and judged.probes[-1].exit_code == -1  # Docker keeps five
    # A record of another process (a restart) counts for nothing.
    fresh = health.judge(judged, 8, 80, 50.0, _probe(51.0, 1), CHECK)
    assert (fresh.status, fresh.failing_streak, len(fresh.probes)) == ("starting", 0, 1)
    assert health.probe_due(None, 100.0, CHECK) == 101.0  # the first probe: start_interval after the start


@pytest.mark.parametrize("exit_code, output, start_errors, recorded", [
    (0, b"ready\n", [], (0, "ready\n")),
    (1, b"not yet\n", [], (1, "not yet\n")),
    (255, b"", [], (255, "")),  # the program's own 255: crun logged no error
    (127, b"sh: /no/such: not found\n", [], (127, "sh: /no/such: not found\n")),  # a shell's, as Docker's
    (255, b"crun: executable file `/no/such` not found\n", ["executable file `/no/such` not found"],
     (-1, "executable file `/no/such` not found")),  # never started: Docker's -1 and the error
    (255, b"", ["open executable: Permission denied", "second"], (-1, "open executable: Permission denied\nsecond")),
    (None, b"partial", [], (-1, "Health check exceeded timeout (1.5s)")),  # as Docker: no output
])
def test_what_a_probe_records(exit_code: int | None, output: bytes, start_errors: list[str],
                              recorded: tuple[int, str]) -> None:
    check = Healthcheck.model_validate({"test": ["CMD", "x"], "timeout": "1.5s"}).over(None)
    assert health.probe_outcome(check, exit_code, output, start_errors) == recorded


@pytest.mark.parametrize("seconds, text", [
    (0.0, "0s"), (1e-9, "1ns"), (0.0000015, "1.5µs"), (0.001, "1ms"), (0.5, "500ms"), (0.2505, "250.5ms"),
    (1.0, "1s"), (1.5, "1.5s"), (30.0, "30s"), (59.999, "59.999s"), (60.0, "1m0s"), (90.0, "1m30s"),
    (3600.0, "1h0m0s"), (3600.5, "1h0m0.5s"), (7325.25, "2h2m5.25s"), (360000.0, "100h0m0s"),
])
def test_durations_are_written_as_go_writes_them(seconds: float, text: str) -> None:
    """Docker's records word a duration as Go's time.Duration prints it, which Compose's
    durations read back (those under 1ms are no timing of ours)."""
    assert go_duration(seconds) == text
    if not 0 < seconds < 0.001:
        assert to_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("timeout, message", [
    ("500ms", "Health check exceeded timeout (500ms)"), ("90s", "Health check exceeded timeout (1m30s)"),
    ("1h", "Health check exceeded timeout (1h0m0s)"),
])
def test_a_probe_out_of_time_is_worded_as_docker_words_it(timeout: str, message: str) -> None:
    check = Healthcheck.model_validate({"test": ["CMD", "x"], "timeout": timeout}).over(None)
    assert health.probe_outcome(check, None, b"printed before the kill", []) == (-1, message)


def test_a_probe_of_a_container_removed_meanwhile_leaves_no_directory(tmp_path: Path) -> None:
    """The prober runs without the state dir's lock: a probe ending after `down` removed the
    container must not make its directory again."""
    gone = tmp_path / "containers" / "s" / "web" / "health.json"
    with pytest.raises(FileNotFoundError):
        records.update(gone, lambda previous: records.Health(1, 2, "starting", 0, ()))
    assert not (tmp_path / "containers").exists()

