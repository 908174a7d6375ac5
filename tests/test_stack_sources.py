"""A stack is applied from one file at a time: `apply`/`diff`/`down` of another file that
declares a stack whose file is still there is refused, naming both (`--take-over` moves it,
`down --stack` removes it); a renamed or deleted file gives its stack up."""

from __future__ import annotations

from pathlib import Path

from tests.sandbox import Sandbox

STACK = """\
name: alpha
networks:
  net: {{subnet: {subnet}}}
"""


def _write(directory: Path, name: str, subnet: str) -> Path:
    path = directory / name
    path.write_text(STACK.format(subnet=subnet))
    return path


def test_a_stack_applied_from_another_file_that_still_declares_it_is_refused(sandbox: Sandbox) -> None:
    d = sandbox.workdir / "d"
    d.mkdir()
    a, b = _write(d, "a.yaml", "10.83.1.0/24"), _write(d, "b.yaml", "10.83.2.0/24")
    sandbox.reconcile("apply", str(a), check=True)
    before = sandbox.snapshot("rc-alpha-net")
    for verb in ("diff", "apply"):
        result = sandbox.reconcile(verb, str(b))
        assert result.returncode == 1, (verb, result.stdout, result.stderr)
        assert result.stderr.startswith(f"{b}:1:7: name: stack 'alpha' was applied from {a}, which still declares it")
        assert "--take-over" in result.stderr
    result = sandbox.reconcile("down", str(b))
    assert result.returncode == 1 and "remove it by name: reconcile down --stack alpha" in result.stderr
    assert sandbox.snapshot("rc-alpha-net") == before  # nothing touched
    assert sandbox.reconcile("diff", "--take-over", str(b)).returncode == 2
    sandbox.reconcile("apply", "--take-over", str(b), check=True)
    assert sandbox.status()["stacks"][0]["source"] == str(b)
    assert sandbox.reconcile("apply", str(a)).returncode == 1  # b owns it now
    sandbox.reconcile("down", "--stack", "alpha", check=True)


def test_a_renamed_or_broken_source_gives_its_stack_up_or_not(sandbox: Sandbox) -> None:
    d = sandbox.workdir / "d"
    d.mkdir()
    a = _write(d, "a.yaml", "10.83.3.0/24")
    sandbox.reconcile("apply", str(a), check=True)
    a.write_text("name: alpha\nnetworks: [\n")  # broken: a watch agent keeps its last good spec
    b = _write(d, "b.yaml", "10.83.3.0/24")
    result = sandbox.reconcile("apply", str(b))
    assert result.returncode == 1 and "which is still there (invalid now" in result.stderr
    c = a.rename(d / "c.yaml")  # gone from its old name: nothing claims the stack there
    sandbox.reconcile("apply", str(b), check=True)
    assert sandbox.reconcile("apply", str(c)).returncode == 1  # broken anyway
    sandbox.reconcile("down", "--stack", "alpha", check=True)
