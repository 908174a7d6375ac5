"""Container logs: capped continuously by the log writer (rotation as Docker's json-file
max-size/max-file), read across the rotation in order, `logs -f` ending with the container,
`logs -o json` as JSON lines. On the real kernel, inside a sandbox; the writer is Debian's
rotatelogs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from controllers.base import Desired
from controllers.container import ContainerObservation, diff_containers
from controllers.container_files import HostResolvers
from kernel import runtime
from specs.loader import load_file
from tests.sandbox import Sandbox
from tests.specs_support import error_lines
from tests.waiting import eventually

CHATTY = """\
name: logs
containers:
  chatty:
    command: ["/bin/sh", "-c", "sleep 1; seq 1 100000; exec sleep 1000"]
    logging: {{driver: json-file, options: {{max-size: "64k", max-file: "{files}"}}}}
"""


def _log_text(sandbox: Sandbox, name: str) -> str:
    result = sandbox.reconcile("logs", name)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _log_dir(sandbox: Sandbox, stack: str, container: str) -> Path:
    return sandbox.state_dir / "containers" / stack / container / "logs"


def test_a_chatty_log_is_capped_while_no_reconcile_runs_and_read_in_order(sandbox: Sandbox) -> None:
    path = str(sandbox.write("stack.yaml", CHATTY.format(files=3)))
    assert sandbox.reconcile("apply", path).returncode == 0
    # apply has returned before the container writes a line: only the writer caps the log.
    assert eventually(lambda: _log_text(sandbox, "chatty").endswith("\n100000\n"), True, timeout=60)
    files = runtime.log_files(_log_dir(sandbox, "logs", "chatty"))
    assert len(files) == 3 and all(f.stat().st_size <= 64 * 1024 + 65536 for f in files)
    # The newest output, in order; rotation is by bytes, so the oldest line kept may be cut short.
    numbers = [int(line) for line in _log_text(sandbox, "chatty").split()[1:]]
    assert numbers[0] > 2 and numbers == list(range(numbers[0], 100001))

    # A change of the limits recreates the container (its writer takes them when it starts).
    sandbox.write("stack.yaml", CHATTY.format(files=1))
    diff = sandbox.reconcile("diff", path)
    assert "-/+ container logs/chatty (recreate: logging changed)" in diff.stdout, diff.stdout
    assert sandbox.reconcile("apply", path).returncode == 0
    assert eventually(lambda: _log_text(sandbox, "chatty").endswith("\n100000\n"), True, timeout=60)
    assert [f.name for f in runtime.log_files(_log_dir(sandbox, "logs", "chatty"))] == ["log"]
    assert sandbox.reconcile("down", path).returncode == 0
    assert not _log_dir(sandbox, "logs", "chatty").exists()


FINITE = """\
name: logs
containers:
  once:
    command: ["/bin/sh", "-c", "echo one; sleep 2; printf 'two\\\\nthree'; exit 3"]
    restart: "no"
"""


def test_logs_follow_ends_with_the_container_and_json_prints_lines(sandbox: Sandbox) -> None:
    path = str(sandbox.write("stack.yaml", FINITE))
    assert sandbox.reconcile("apply", path).returncode == 0
    followed = sandbox.reconcile("logs", "-f", "once", timeout=60)  # raises if it never ends
    assert followed.returncode == 0 and followed.stdout == "one\ntwo\nthree"
    assert sandbox.containers()["once"]["exit_code"] == 3
    as_json = sandbox.reconcile("logs", "-o", "json", "logs/once")
    assert as_json.returncode == 0
    assert [json.loads(line) for line in as_json.stdout.splitlines()] == [
        {"container": "logs/once", "line": line} for line in ("one", "two", "three")]
    assert sandbox.reconcile("down", path).returncode == 0


TAILED = """\
name: logs
containers:
  chatty:
    command: ["/bin/sh", "-c", "seq 1 100000; exec sleep 1000"]
    logging: {{options: {{max-size: "64k", max-file: "3"}}}}
  later:
    command: ["/bin/sh", "-c", "seq 1 1000; until [ -e /trigger/go ]; do sleep 0.05; done; printf 'after\\\\nend'"]
    restart: "no"
    volumes: ["{trigger}:/trigger"]
"""


def test_logs_tail_prints_the_last_lines_across_the_rotation_then_follows(sandbox: Sandbox) -> None:
    trigger = sandbox.workdir / "trigger"
    trigger.mkdir()
    path = str(sandbox.write("stack.yaml", TAILED.format(trigger=trigger)))
    assert sandbox.reconcile("apply", path).returncode == 0
    assert eventually(lambda: _log_text(sandbox, "later").endswith("\n1000\n"), True)
    # Its last 2 lines, then what comes, as docker logs -f --tail: `later` writes again only once
    # those two are printed (nothing else is in the pipe then for `head` to read ahead).
    followed = sandbox.sh(f"{sys.executable} -m reconcile logs -f --tail 2 later | "
                          f"{{ head -c 9; touch {trigger}/go; cat; }}")
    assert followed.stdout == "999\n1000\nafter\nend"

    assert eventually(lambda: _log_text(sandbox, "chatty").endswith("\n100000\n"), True, timeout=60)
    whole = _log_text(sandbox, "chatty").splitlines(keepends=True)
    files = runtime.log_files(_log_dir(sandbox, "logs", "chatty"))
    newest_lines = files[-1].read_text().count("\n")
    assert len(files) == 3 and newest_lines < len(whole)
    for lines in (1, newest_lines + 10, len(whole)):  # the newest file's lines and more: across files
        tail = sandbox.reconcile("logs", "-n", str(lines), "logs/chatty")
        assert (tail.returncode, tail.stdout) == (0, "".join(whole[-lines:])), lines
    for lines in (str(len(whole) + 1), "all"):
        assert sandbox.reconcile("logs", "--tail", lines, "chatty").stdout == "".join(whole), lines
    assert sandbox.reconcile("logs", "--tail", "0", "chatty").stdout == ""
    as_json = sandbox.reconcile("logs", "-o", "json", "--tail", "2", "chatty")
    assert [json.loads(line) for line in as_json.stdout.splitlines()] == [
        {"container": "logs/chatty", "line": line} for line in ("99999", "100000")]
    assert sandbox.reconcile("down", path).returncode == 0


STEADY = """\
name: logs
containers:
  steady:
    command: ["/bin/sh", "-c", "while true; do echo tick; sleep 0.05; done"]
"""


def _argv(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:  # gone meanwhile
        return []


def _writer_of(sandbox: Sandbox, log_dir: Path) -> int | None:
    for pid in sandbox.processes():
        argv = _argv(pid)
        if argv[:1] == [runtime.ROTATELOGS.encode()] and str(log_dir / runtime.LOG_FILE).encode() in argv:
            return pid
    return None


def test_a_lost_writer_ends_the_container_instead_of_hanging_it(sandbox: Sandbox) -> None:
    path = str(sandbox.write("stack.yaml", STEADY))
    assert sandbox.reconcile("apply", path).returncode == 0
    assert eventually(lambda: "tick" in _log_text(sandbox, "steady"), True)
    writer = _writer_of(sandbox, _log_dir(sandbox, "logs", "steady"))
    assert writer is not None
    os.kill(writer, signal.SIGKILL)
    # Its next write gets EPIPE: SIGPIPE ends the shell, the init reports 128 + 13.
    assert eventually(lambda: sandbox.containers()["steady"].get("exit_code"), 141, timeout=20) == 141
    assert "+ container logs/steady (exited)" in sandbox.reconcile("apply", path).stdout
    assert _writer_of(sandbox, _log_dir(sandbox, "logs", "steady")) is not None
    assert sandbox.reconcile("down", path).returncode == 0


def test_logs_follow_ends_when_the_container_died_with_its_waiting_shell(sandbox: Sandbox) -> None:
    """No exit file will come (a reboot, a kill of the whole tree): following ends anyway."""
    path = str(sandbox.write("stack.yaml", STEADY))
    assert sandbox.reconcile("apply", path).returncode == 0
    assert eventually(lambda: "tick" in _log_text(sandbox, "steady"), True)
    shells = [pid for pid in sandbox.processes() if _argv(pid)[3:4] == [b"rc-container"]]  # sh -c SCRIPT $0
    assert len(shells) == 1
    os.kill(shells[0], signal.SIGKILL)
    os.kill(sandbox.containers()["steady"]["pid"], signal.SIGKILL)
    followed = sandbox.reconcile("logs", "-f", "steady", timeout=30)  # raises if it never ends
    assert followed.returncode == 0 and "tick" in followed.stdout
    assert sandbox.reconcile("down", path).returncode == 0


def _write_through_rotatelogs(log_dir: Path, first: int, last: int, files: int) -> None:
    """One run of the writer as a container start runs it: renumbered first, then fed lines."""
    runtime._renumber_log_files(log_dir, files)
    text = "".join(f"{n}\n" for n in range(first, last + 1)).encode()
    subprocess.run([runtime.ROTATELOGS, "-n", str(files), "-L", str(log_dir / runtime.CURRENT_LINK),
                    str(log_dir / runtime.LOG_FILE), "1000B"], input=text, check=True)


def _numbers(log_dir: Path) -> list[int]:
    """The numbers written, as `logs` shows them, the oldest (maybe cut short) left out."""
    return [int(n) for n in "".join(path.read_text() for path in runtime.log_files(log_dir)).split()[1:]]


def test_order_holds_across_restarts_and_a_lowered_max_file(tmp_path: Path) -> None:
    """rotatelogs starts again at `log` on every run: the renumbering before it keeps the newest
    output last, whichever file of the cycle the last run ended in."""
    _write_through_rotatelogs(tmp_path, 1, 20000, 4)  # 64 KiB reads: ends in log.1 of 4
    _write_through_rotatelogs(tmp_path, 20001, 40000, 4)
    numbers = _numbers(tmp_path)
    assert numbers == list(range(numbers[0], 40001)) and len(runtime.log_files(tmp_path)) == 4
    _write_through_rotatelogs(tmp_path, 40001, 60000, 2)
    numbers = _numbers(tmp_path)
    assert numbers == list(range(numbers[0], 60001)) and len(runtime.log_files(tmp_path)) == 2


LOGGING = """\
name: demo
containers:
  web:
    command: [/bin/true]
    logging: {value}
"""


def test_logging_errors_name_the_place(tmp_path: Path) -> None:
    cases = {
        '{driver: syslog}':
            "stack.yaml:5:23: containers.web.logging.driver: expected 'json-file' or 'local', got a string ('syslog')",
        '{options: {max-size: "10m", compress: "true"}}':
            "stack.yaml:5:52: containers.web.logging.options.compress: unknown log option 'compress': "
            "reconcile supports max-size and max-file",
        '{options: {max-size: 10q}}':
            "stack.yaml:5:35: containers.web.logging.options.max-size: expected a size like '10m', '512k', "
            "'1g' or a number of bytes, got '10q'",
        '{options: {max-file: "0"}}':
            "stack.yaml:5:35: containers.web.logging.options.max-file: must be between 1 and 100, got 0",
    }
    for value, expected in cases.items():
        assert error_lines(tmp_path, {"stack.yaml": LOGGING.format(value=value)}) == [expected], value


def test_a_host_without_the_log_writer_is_an_issue_before_anything_is_touched(tmp_path: Path) -> None:
    """Found in the plan (diff and apply both stop there), not half-way through a start."""
    path = tmp_path / "stack.yaml"
    path.write_text(STEADY)
    stack = load_file(path).stack
    observed = ContainerObservation({}, HostResolvers("", "nameserver 10.0.0.2\n", "", ""), frozenset(),
                                    ("rotatelogs (Debian's apache2-utils)",))
    issues = diff_containers(Desired({"logs": stack}, frozenset({"logs"}), {}), observed).issues
    assert [(i.loc, i.message) for i in issues] == [(("containers", "steady"), (
        "this host cannot start containers: rotatelogs (Debian's apache2-utils) not installed (scripts/setup.sh)"))]
    assert runtime.missing_tools() == []  # this one has them all (scripts/setup.sh)


def test_a_renumbering_cut_short_by_a_crash_is_finished_first(tmp_path: Path) -> None:
    (tmp_path / runtime.LOG_FILE).write_text("newest\n")
    os.link(tmp_path / runtime.LOG_FILE, tmp_path / runtime.CURRENT_LINK)
    (tmp_path / f".renumbering-{runtime.LOG_FILE}.1").write_text("older\n")  # moved away, not yet back
    runtime._renumber_log_files(tmp_path, 2)
    assert [path.read_text() for path in runtime.log_files(tmp_path)] == ["older\n", "newest\n"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [runtime.CURRENT_LINK, runtime.LOG_FILE,
                                                          f"{runtime.LOG_FILE}.1"]


def test_exec_exits_as_docker_exec_when_the_command_never_starts(sandbox: Sandbox) -> None:
    """crun ends with 255 when the command cannot start: 127 (not found) and 126 (cannot be run),
    as `docker exec` and a shell; the command's own statuses, 255 too, pass through unchanged."""
    sandbox.apply(sandbox.write("stack.yaml", "name: ex\ncontainers:\n  box:\n    command: sleep 1000\n"))
    for argv, code, says in [
        (["nonexistentcmd"], 127, "executable file `nonexistentcmd` not found in $PATH: No such file or directory\n"),
        (["/nonexistent/cmd"], 127,
         "executable file `/nonexistent/cmd` not found in $PATH: No such file or directory\n"),
        (["/etc/hostname"], 126, "open executable: Permission denied\n"),
        (["sh", "-c", "exit 3"], 3, ""),
        (["sh", "-c", "kill -KILL $$"], 137, ""),
        (["sh", "-c", "kill -TERM $$"], 143, ""),
        (["sh", "-c", "exit 255"], 255, ""),
    ]:
        result = sandbox.reconcile("exec", "box", "--", *argv)
        assert (result.returncode, result.stderr) == (code, says), argv
    container_dir = sandbox.state_dir / "containers" / "ex" / "box"
    assert not [p.name for p in container_dir.iterdir() if p.name.startswith("exec-")]  # no log left behind
    assert sandbox.reconcile("down", "--stack", "ex").returncode == 0
