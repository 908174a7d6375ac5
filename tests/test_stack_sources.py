"""A stack is applied from one file at a time: `apply`/`diff`/`down` of another file that
declares a stack whose file is still there is refused, naming both (`--take-over` moves it,
`down --stack` removes it); a renamed or deleted file gives its stack up."""

from __future__ import annotations

import json
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


def test_down_of_a_file_takes_down_what_was_applied_from_it_whatever_it_names_now(sandbox: Sandbox) -> None:
    """The store records the file each stack was applied from: `down FILE` after its `name:`
    changed (or a Compose file lost its own, so its directory names the project) still takes
    the stack down, and says plainly that the stack now named has nothing on this host."""
    d = sandbox.workdir / "d"
    d.mkdir()
    a = _write(d, "a.yaml", "10.83.4.0/24")
    sandbox.reconcile("apply", str(a), check=True)
    a.write_text(a.read_text().replace("name: alpha", "name: beta"))
    result = sandbox.reconcile("down", str(a))
    assert result.returncode == 0, result.stderr
    assert "- network alpha/net" in result.stdout and "The host matches the spec" not in result.stdout
    assert result.stdout.endswith("stack 'beta': nothing of it on this host\n"), result.stdout
    assert sandbox.status()["stacks"] == [] and sandbox.our_links() == []
    nothing = sandbox.reconcile("down", str(a))
    assert (nothing.returncode, nothing.stdout) == (0, "stack 'beta': nothing of it on this host\n")

    project = sandbox.workdir / "shop"
    project.mkdir()
    compose = project / "compose.yaml"
    compose.write_text("name: gamma\nservices: {}\n"
                       "networks:\n  default:\n    ipam: {config: [{subnet: 10.83.5.0/24}]}\n")
    sandbox.reconcile("apply", str(compose), check=True)
    compose.write_text(compose.read_text().removeprefix("name: gamma\n"))  # the project is "shop" now
    result = sandbox.reconcile("down", "-o", "json", str(project))  # the directory: a file of it
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert "gamma/default" in [c["key"] for c in document["changes"]] and document["absent"] == ["shop"]
    assert sandbox.status()["stacks"] == [] and sandbox.our_links() == []


def test_down_of_a_file_that_cannot_name_its_stack_takes_down_the_one_applied_from_it(sandbox: Sandbox) -> None:
    d = sandbox.workdir / "d"
    d.mkdir()
    a, b = _write(d, "a.yaml", "10.83.6.0/24"), _write(d, "b.yaml", "10.83.7.0/24")
    b.write_text(b.read_text().replace("alpha", "bravo"))
    sandbox.reconcile("apply", str(d), check=True)
    a.write_text("networks: {}\n")  # no name: cannot name its stack, but the store knows alpha came from it
    b.unlink()  # gone: the store knows bravo came from it
    for path in (a, b):
        result = sandbox.reconcile("down", str(path))
        assert result.returncode == 0, result.stderr
    assert sandbox.status()["stacks"] == [] and sandbox.our_links() == []
    # One the store knows nothing of is still an error at its place, and removes nothing.
    result = sandbox.reconcile("down", str(a))
    assert result.returncode == 1 and result.stderr.startswith(f"{a}:1:1: ")
    assert "hint: remove a stack by name: reconcile down --stack NAME" in result.stderr


def test_an_apply_refused_against_the_host_records_nothing(sandbox: Sandbox) -> None:
    """Refused before it touched anything (its subnet overlaps a host route): not applied, so
    no stack to show, and another file may still apply the stack; an applied stack keeps the
    spec and file it was applied with."""
    sandbox.sh("ip link add rc-canary0 type bridge && ip addr add 10.83.8.1/24 dev rc-canary0 "
               "&& ip link set rc-canary0 up")
    d = sandbox.workdir / "d"
    d.mkdir()
    a, b = _write(d, "a.yaml", "10.83.8.0/24"), _write(d, "b.yaml", "10.83.9.0/24")
    refused = sandbox.reconcile("apply", str(a))
    assert refused.returncode == 1 and "overlaps" in refused.stderr, refused.stderr
    assert sandbox.status()["stacks"] == []
    sandbox.reconcile("apply", str(b), check=True)
    b.write_text(b.read_text().replace("10.83.9.0/24", "10.83.8.0/24"))
    assert sandbox.reconcile("apply", str(b)).returncode == 1
    stack = sandbox.status()["stacks"][0]
    assert (stack["source"], stack["sync"], stack["networks"][0]["subnet"]) == (str(b), "Synced", "10.83.9.0/24")
    sandbox.reconcile("down", "--stack", "alpha", check=True)
