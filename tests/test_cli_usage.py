"""Usage errors exit 1, as every error: 2 is `diff`'s "changes" (issue 14, item 12); under
-o json they are JSON too."""

from __future__ import annotations

import builtins
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from reconcile import __main__ as entry
from reconcile import cli
from reconcile.cli import EXIT_ERROR, main

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("argv", [["diff"], ["apply", "--bogus", "x"], ["frobnicate"], ["image", "pull"],
                                  ["watch", "specs", "--resync", "-5"], ["watch", "/nonexistent", "--debounce", "-5"],
                                  ["watch", "/nonexistent", "--debounce", "0.5"]])
def test_a_usage_error_exits_1(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == EXIT_ERROR
    err = capsys.readouterr().err
    assert "usage: reconcile" in err and "error:" in err


@pytest.mark.parametrize("argv", [["exec", "-u", "root", "db", "id"], ["diff", "stack.yaml", "--bogus"]])
def test_an_argument_a_verb_does_not_know_is_its_error_with_its_usage(argv: list[str],
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == EXIT_ERROR
    err = capsys.readouterr().err
    assert err.startswith(f"usage: reconcile {argv[0]} ") and f"reconcile {argv[0]}: error: unrecognized arguments: " \
        f"{argv[2] if argv[0] == 'diff' else argv[1]}" in err, err


def test_watch_usage_errors_under_json_are_lines_of_the_agents_stream(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["watch", "/nonexistent", "-o", "json", "--debounce", "-5"]) == EXIT_ERROR
    out, err = capsys.readouterr()
    assert out == ""
    lines = [json.loads(line) for line in err.splitlines()]
    assert [(record["event"], record["kind"], record["error"]) for record in lines] == [
        ("error", "usage", "reconcile watch: error: argument --debounce: '-5': expected whole milliseconds, 0 or more")]


def test_other_usage_errors_under_json_are_a_json_document(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-o", "json", "diff"]) == EXIT_ERROR
    document = json.loads(capsys.readouterr().out)
    assert document == {"error": "usage", "messages": ["reconcile diff: error: the following arguments are "
                                                       "required: path"]}


@pytest.mark.parametrize("value", ["-5", "abc", "1.5", "²", ""])
def test_a_bad_logs_tail_is_a_usage_error_naming_it(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Checked before any container is looked for: no traceback, exit 1."""
    assert main(["logs", "--tail", value, "web"]) == EXIT_ERROR
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"reconcile logs: error: argument -n/--tail: {value!r}: expected a number of lines, 0 or more, or 'all'")


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("RECONCILE_SUBNET_POOL", "bogus", "RECONCILE_SUBNET_POOL='bogus': expected base=CIDR[,size=PREFIX-LENGTH], "
                                       "e.g. base=10.89.0.0/16,size=24"),
    ("RECONCILE_DEPENDS_TIMEOUT", "5s", "RECONCILE_DEPENDS_TIMEOUT='5s': expected a number of seconds"),
    ("RECONCILE_FIREWALL_BACKEND", "pf", "RECONCILE_FIREWALL_BACKEND='pf': expected one of auto, nftables, iptables"),
])
def test_a_bad_environment_variable_is_a_usage_error_naming_it(
        variable: str, value: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Before any verb runs: nothing touched (not even the state dir made), no traceback."""
    state = tmp_path / "state"
    monkeypatch.setenv("RECONCILE_STATE_DIR", str(state))
    monkeypatch.setenv(variable, value)
    assert main(["down", "--stack", "demo"]) == EXIT_ERROR
    assert capsys.readouterr().err == f"reconcile down: error: {message}\n"
    assert main(["status", "-o", "json"]) == EXIT_ERROR
    assert json.loads(capsys.readouterr().out) == {"error": "usage",
                                                   "messages": [f"reconcile status: error: {message}"]}
    assert not state.exists()
    # Verbs that read only their input do not need the host's settings at all.
    (tmp_path / "s.yaml").write_text("name: demo\n")
    assert main(["validate", str(tmp_path / "s.yaml")]) == 0
    assert main(["schema"]) == 0
    assert "Traceback" not in capsys.readouterr().err


def test_a_reader_gone_ends_any_output_quietly(tmp_path: Path) -> None:
    """`reconcile ... | head -n0`: an error's report (JSON on stdout) or a verb's output to a
    closed pipe ends the run with 1 and no traceback, as any Unix tool."""
    for argv in (["validate", "-o", "json", str(tmp_path / "nonexist.yaml")], ["schema"], ["-o", "json", "diff"]):
        read_end, write_end = os.pipe()
        os.close(read_end)
        try:
            result = subprocess.run([sys.executable, "-m", "reconcile", *argv], stdout=write_end,
                                    stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        finally:
            os.close(write_end)
        assert (result.returncode, "Traceback" in result.stderr) == (EXIT_ERROR, False), (argv, result.stderr)


def test_ctrl_c_at_any_moment_ends_with_130_and_no_traceback(monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """While the verb's engine is imported (its first ~0.3 s), as during the verb."""
    def interrupted(name: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(importlib, "import_module", interrupted)
    try:
        code = main(["status"])
    except KeyboardInterrupt:  # would end the test session, as it ended the user's with a traceback
        pytest.fail("the interrupt escaped main")
    assert code == 130
    assert capsys.readouterr().err == ""


def test_ctrl_c_during_an_apply_tells_what_it_made_in_json_too(monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    from reconcile import cli
    from reconcile.engine.plan import Plan
    from reconcile.engine.verbs import Interrupted

    def interrupted(args: object, settings: object) -> int:
        raise Interrupted(Plan((), warnings=("a warning",)))

    monkeypatch.setitem(cli.COMMANDS, "apply", interrupted)
    assert main(["apply", "-o", "json", "stack.yaml"]) == 130
    shown = json.loads(capsys.readouterr().out)
    assert (shown["interrupted"], shown["applied"], shown["in_sync"], shown["warnings"]) == (
        True, False, False, ["a warning"])
    assert main(["apply", "stack.yaml"]) == 130
    assert capsys.readouterr().out.endswith("Interrupted: 0 added, 0 changed, 0 destroyed before Ctrl-C; run it "
                                            "again to finish.\n")


def test_an_unexpected_error_without_a_message_is_named_by_its_type(monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    def failing(args: object, settings: object) -> int:
        raise AssertionError

    monkeypatch.setitem(cli.COMMANDS, "schema", failing)
    assert main(["schema"]) == EXIT_ERROR
    assert capsys.readouterr().err == "error: AssertionError\n"


def _run_under_ascii(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reconcile", *argv], capture_output=True, text=True,
                          encoding="utf-8", env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONIOENCODING": "ascii"})


def test_text_an_ascii_output_cannot_hold_is_escaped_not_a_failure(tmp_path: Path) -> None:
    """A report is written whatever the output's encoding: the run's work is done by then."""
    stack = tmp_path / "sé.yaml"
    stack.write_text("name: demo\n")
    result = _run_under_ascii("validate", str(stack))
    assert (result.returncode, result.stdout, result.stderr) == (
        0, f"ok: 1 stack(s) valid: demo ({tmp_path}/s\\xe9.yaml)\n", "")


def test_documents_an_ascii_output_cannot_hold_read_back_whole(tmp_path: Path) -> None:
    """`convert`'s YAML and JSON in their own escapes: the file it makes means what it should."""
    compose = tmp_path / "compose.yaml"
    compose.write_text('name: demo\nservices:\n  web:\n    image: busybox\n'
                       '    environment: {GREETING: "héllo → wörld"}\n')
    for output in ("yaml", "json"):
        result = _run_under_ascii("convert", *(["-o", "json"] if output == "json" else []), str(compose))
        assert result.returncode == 0, result.stderr
        document = json.loads(result.stdout) if output == "json" else YAML(typ="safe").load(result.stdout)
        assert document["containers"]["web"]["env"] == {"GREETING": "héllo → wörld"}, result.stdout


def test_ctrl_c_while_the_cli_loads_ends_with_130_and_no_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    """The command's entry point imports `reconcile.cli` (~70 ms) outside `main`'s guard."""
    load = builtins.__import__

    def interrupted(name: str, *args: Any, **kwargs: Any) -> object:
        if name == "reconcile.cli":
            raise KeyboardInterrupt
        return load(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", interrupted)
    with pytest.raises(SystemExit) as ended:
        entry.run()
    assert ended.value.code == 130


_MAPS_AT_EXIT = """
import atexit, sys
from reconcile.cli import main
atexit.register(lambda: print("libcrypto" if "/libcrypto.so" in open("/proc/self/maps").read() else "none"))
main(sys.argv[1:])
"""


@pytest.mark.parametrize(("argv", "loaded"), [(["validate", "examples/stack.yaml"], "none"),
                                              (["image", "ls"], "libcrypto")])
def test_only_verbs_that_pull_load_openssl(argv: list[str], loaded: str, tmp_path: Path) -> None:
    """A verb that downloads no layer hashes with Python's own sha256 (3.5 MiB less resident);
    `apply` and `image` keep OpenSSL's for the layers they hash."""
    result = subprocess.run([sys.executable, "-c", _MAPS_AT_EXIT, *argv], cwd=REPO, capture_output=True,
                            text=True, env={**os.environ, "NO_COLOR": "1", "RECONCILE_STATE_DIR": str(tmp_path)})
    assert result.stdout.splitlines()[-1] == loaded, result.stdout + result.stderr
