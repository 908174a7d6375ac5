"""The CLI's contract on the paths users hit when something is off (issue 14, items 12, 13, 14
and 17): exit codes, errors that name what they concern, JSON when JSON is asked for, and no
misleading answers after a lost state store or a container that never started."""

from __future__ import annotations

import json
import signal
import sqlite3
import sys

from controllers.container import Paths
from tests.sandbox import Sandbox
from tests.waiting import eventually

NETWORK = """\
name: {name}
networks:
  net: {{subnet: {subnet}}}
"""

CONTAINER = """\
name: app
networks:
  net: {{subnet: 10.83.1.0/24}}
containers:
  c:
    command: {command}
    networks: [net]
"""


def _json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines()]


# -- watch ------------------------------------------------------------------------------------

def test_watch_errors_under_json_are_json_lines(sandbox: Sandbox) -> None:
    missing = sandbox.workdir / "nope"
    result = sandbox.reconcile("watch", str(missing), "-o", "json")
    assert (result.returncode, result.stdout) == (1, "")
    assert [(record["event"], record["error"]) for record in _json_lines(result.stderr)] == [
        ("error", f"{missing}: not a directory")]


BUSY_PORT = """
import socket, subprocess, sys
holder = socket.socket()
holder.bind(("127.0.0.1", 9471))
holder.listen()
for output in ("text", "json"):
    done = subprocess.run([sys.executable, "-m", "reconcile", "watch", sys.argv[1], "--metrics-addr",
                           "127.0.0.1:9471", "-o", output], capture_output=True, text=True, timeout=60)
    print(f"{done.returncode} {done.stderr}", end="")
"""


def test_a_busy_metrics_address_is_named(sandbox: Sandbox) -> None:
    specs = sandbox.workdir / "specs"
    specs.mkdir()
    text, as_json = sandbox.run(sys.executable, "-c", BUSY_PORT, str(specs)).stdout.splitlines()
    assert text == "1 error: --metrics-addr '127.0.0.1:9471': Address already in use"
    code, line = as_json.split(" ", 1)
    assert code == "1" and json.loads(line)["error"] == "--metrics-addr '127.0.0.1:9471': Address already in use"


DEAF_AGENT = """
import sys
from pathlib import Path
from reconcile.engine.settings import Settings
from reconcile.watch.agent import WatchOptions
from reconcile.watch.run import run
sys.exit(run(Settings.resolve(None, None), WatchOptions(Path(sys.argv[1]), debounce_ms=-5)))
"""


def test_an_agent_stopped_by_a_dead_producer_exits_1(sandbox: Sandbox) -> None:
    """The file watcher dies (watchfiles refuses a negative debounce, which the CLI no longer
    lets through): the agent stops, and says so with its exit status, so that a service
    manager restarts it."""
    specs = sandbox.workdir / "specs"
    specs.mkdir()
    # PYTHONMALLOC set keeps run() from re-executing itself as `python -m reconcile`.
    result = sandbox.run("env", "PYTHONMALLOC=malloc", sys.executable, "-c", DEAF_AGENT, str(specs),
                         check=False, timeout=60)
    assert result.returncode == 1, result.stderr
    died = [record for record in _json_lines(result.stderr) if record["event"] == "error"]
    assert [(record["kind"], record["action"]) for record in died] == [("agent", "stopping")]
    assert str(died[0]["error"]).startswith("files: OverflowError")


def test_down_forgets_the_watch_status_of_a_stack(sandbox: Sandbox) -> None:
    """Stop the agent, `down` its stack: `status` must not keep a ghost of it."""
    specs = sandbox.workdir / "specs"
    specs.mkdir()
    (specs / "ghost.yaml").write_text(NETWORK.format(name="ghost", subnet="10.83.2.0/24"))
    agent = sandbox.spawn(sys.executable, "-m", "reconcile", "watch", str(specs), "--debounce", "50")
    try:
        def sync() -> object:
            return next(((s["watch"] or {}).get("sync") for s in sandbox.status()["stacks"]), None)
        assert eventually(sync, "Synced", timeout=30) == "Synced"
    finally:
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(30) == 0
    assert sandbox.reconcile("down", "--stack", "ghost").returncode == 0
    assert sandbox.status() == {"stacks": [], "invalid_files": []}
    assert sandbox.reconcile("status").stdout == "No stacks.\n"


# -- down -------------------------------------------------------------------------------------

def test_down_of_an_unknown_stack_is_an_error_naming_it(sandbox: Sandbox) -> None:
    nope = sandbox.reconcile("down", "--stack", "nope")
    assert (nope.returncode, nope.stdout) == (1, "")
    assert nope.stderr == ("error: no stack named 'nope' on this host (no kernel object carries its mark, "
                           "the state store has no record of it)\n")
    for argv in (["--stack", "BAD NAME"], ["--stack", "demo", "--stack", "Nope"]):
        bad = sandbox.reconcile("down", *argv)
        assert (bad.returncode, bad.stdout) == (1, "")
        assert bad.stderr.startswith("usage: reconcile down")
    assert bad.stderr.endswith("reconcile down: error: argument --stack: invalid stack name 'Nope': use 1 to 16 "
                               "lowercase letters, digits or '-', starting with a letter\n")

    path = str(sandbox.write("demo.yaml", NETWORK.format(name="demo", subnet="10.83.3.0/24")))
    assert sandbox.reconcile("apply", path).returncode == 0
    both = sandbox.reconcile("down", "--stack", "demo", "--stack", "nope", "-o", "json")
    assert both.returncode == 1
    document = json.loads(both.stdout)
    assert "demo/net" in [c["key"] for c in document["changes"]]
    assert document["error"] == "unknown stack" and "'nope'" in document["messages"][0]
    assert sandbox.our_links() == []
    again = sandbox.reconcile("down", path)  # a file's stack that is already gone: nothing to do
    assert (again.returncode, again.stdout) == (0, "stack 'demo': nothing of it on this host\n")


def test_down_of_a_file_invalid_since_it_was_applied_removes_its_stack(sandbox: Sandbox) -> None:
    """`down PATH` reads only the stack's name: an edit that broke the file elsewhere does not
    keep its stack on the host."""
    path = sandbox.write("demo.yaml", NETWORK.format(name="demo", subnet="10.83.4.0/24"))
    assert sandbox.reconcile("apply", str(path)).returncode == 0
    path.write_text(NETWORK.format(name="demo", subnet="10.83.4.0/33") + "containers: {c: {}}\n")
    assert sandbox.reconcile("validate", str(path)).returncode == 1
    result = sandbox.reconcile("down", str(path))
    assert (result.returncode, result.stderr) == (0, "")
    assert "demo/net" in result.stdout and sandbox.our_links() == []


def test_down_of_a_file_that_cannot_name_its_stack_suggests_down_by_name(sandbox: Sandbox) -> None:
    nameless = str(sandbox.write("nameless.yaml", NETWORK.format(name="Demo!", subnet="10.83.4.0/33")))
    result = sandbox.reconcile("down", nameless)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{nameless}:1:7: name: invalid stack name 'Demo!': use 1 to 16 lowercase letters, digits or '-', "
        "starting with a letter",
        "hint: remove a stack by name: reconcile down --stack NAME"]
    garbled = str(sandbox.write("garbled.yaml", "name: [demo\n"))
    result = sandbox.reconcile("down", garbled)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == "hint: remove a stack by name: reconcile down --stack NAME"


# -- status ------------------------------------------------------------------------------------

def _corrupt_recorded_spec(sandbox: Sandbox, stack: str) -> None:
    """A recorded spec as a newer release that tightened the model reads it: a field it refuses."""
    with sqlite3.connect(sandbox.state_dir / "state.db") as db:
        db.execute("UPDATE stacks SET spec_json = json_set(spec_json, '$.bogus', 1) WHERE name = ?", (stack,))


def test_status_shows_a_stack_whose_recorded_spec_no_longer_validates_as_an_error(sandbox: Sandbox) -> None:
    good = sandbox.write("good.yaml", NETWORK.format(name="good", subnet="10.83.5.0/24"))
    old = sandbox.write("old.yaml", NETWORK.format(name="old", subnet="10.83.6.0/24"))
    for path in (good, old):
        sandbox.reconcile("apply", str(path), check=True)
    _corrupt_recorded_spec(sandbox, "old")
    stacks = {s["name"]: s for s in sandbox.status()["stacks"]}
    assert stacks["good"]["sync"] == "Synced"
    assert (stacks["old"]["sync"], stacks["old"]["source"]) == ("Error", str(old))
    assert stacks["old"]["drift"] == [] and stacks["old"]["errors"] == [
        "the spec recorded at its last apply no longer validates (bogus: Extra inputs are not permitted): apply its "
        "file again (or remove it: reconcile down --stack old)"]
    assert [n["bridge"] for n in stacks["old"]["networks"]] == ["rc-old-net"]  # as the kernel has it
    text = sandbox.reconcile("status")
    assert text.returncode == 0 and "Traceback" not in text.stderr and "validation error" not in text.stdout
    assert f"stack old: Error ({old})" in text.stdout and "stack good: Synced" in text.stdout
    sandbox.reconcile("apply", str(old), check=True)  # the file again: recorded anew
    assert {s["name"]: s["sync"] for s in sandbox.status()["stacks"]} == {"good": "Synced", "old": "Synced"}
    sandbox.reconcile("down", "--stack", "good", "--stack", "old", check=True)


# -- containers without a record --------------------------------------------------------------

def test_logs_and_exec_of_a_running_container_whose_record_is_lost(sandbox: Sandbox) -> None:
    path = str(sandbox.write("app.yaml", CONTAINER.format(command="sh -c 'echo hello; exec sleep 100000'")))
    assert sandbox.reconcile("apply", path).returncode == 0
    assert eventually(lambda: sandbox.reconcile("logs", "c").stdout, "hello\n") == "hello\n"
    (sandbox.state_dir / "state.db").unlink()
    pid = sandbox.containers()["c"]["pid"]
    assert sandbox.containers()["c"]["state"] == "running"

    logs = sandbox.reconcile("logs", "c")
    assert (logs.returncode, logs.stdout) == (0, "hello\n")
    refused = sandbox.reconcile("exec", "app/c", "--", "true")
    assert refused.returncode == 1
    assert refused.stderr == (f"error: container app/c runs (pid {pid}), but the state store has no record of it: "
                              "exec needs it (`reconcile apply` adopts the running container and records it)\n")
    log = Paths.of(sandbox.state_dir, "app", "c").log
    sandbox.run("rm", "-r", str(log))  # as a lost state dir takes it
    gone = sandbox.reconcile("logs", "c")
    assert gone.returncode == 1
    assert gone.stderr == (f"error: container app/c runs (pid {pid}), but the state store has no record of it, "
                           f"and its log {log} is gone: the state dir was lost\n")
    assert sandbox.reconcile("logs", "d").stderr == "error: no container named 'd'\n"
    assert sandbox.reconcile("down", path).returncode == 0
    assert sandbox.processes() == []


def test_a_container_that_never_started_says_why(sandbox: Sandbox) -> None:
    path = str(sandbox.write("app.yaml", CONTAINER.format(command="/nonexistent/rca-program")))
    assert sandbox.reconcile("apply", path).returncode == 1
    why = "app/c: command not found in the container: /nonexistent/rca-program"
    row = sandbox.containers()["c"]
    assert (row["state"], row["start_error"]) == ("missing", why)
    assert f"  container c did not start: {why}\n" in sandbox.reconcile("status").stdout
    for argv in (("logs", "c"), ("exec", "c", "--", "true")):
        result = sandbox.reconcile(*argv)
        assert (result.returncode, result.stderr) == (1, f"error: container app/c did not start: {why}\n")
    assert sandbox.reconcile("down", path).returncode == 0
    assert not (sandbox.state_dir / "containers" / "app").exists()
