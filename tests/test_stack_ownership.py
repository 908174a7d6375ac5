"""A stack belongs to the file it was last applied from: another file that declares the same
stack name cannot replace what that file runs without saying so (issue 14, item 3)."""

from __future__ import annotations

from tests.sandbox import Sandbox

STACK = """\
name: alpha
networks:
  net: {{subnet: 10.93.0.0/24}}
containers:
  {container}: {{command: sleep 100000, networks: [net], ports: ["{port}:80"]}}
"""


def test_apply_of_another_file_declaring_the_stack_is_refused_until_taken_over(sandbox: Sandbox) -> None:
    (sandbox.workdir / "d").mkdir()
    first = sandbox.write("d/a.yaml", STACK.format(container="c", port=8201))
    second = sandbox.write("d/b.yaml", STACK.format(container="e", port=8202))
    assert sandbox.reconcile("apply", str(first)).returncode == 0
    pid = sandbox.containers()["c"]["pid"]

    for verb in ("diff", "apply"):
        refused = sandbox.reconcile(verb, str(second))
        assert refused.returncode == 1, (verb, refused.stdout)
        assert f"{second}:1:7: name: stack 'alpha' was applied from {first}" in refused.stderr, refused.stderr
        assert "apply --take-over" in refused.stderr
    assert set(sandbox.containers()) == {"c"} and sandbox.containers()["c"]["pid"] == pid

    # The file that owns it applies as before; a moved or edited owner no longer claims it.
    assert sandbox.reconcile("apply", str(first)).returncode == 0
    taken = sandbox.reconcile("apply", "--take-over", str(second))
    assert taken.returncode == 0, taken.stderr
    assert set(sandbox.containers()) == {"e"}
    (sandbox.workdir / "d" / "a.yaml").unlink()
    assert sandbox.reconcile("apply", str(second)).returncode == 0
    assert sandbox.reconcile("down", str(second)).returncode == 0
