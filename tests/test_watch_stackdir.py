"""The watched directory as specs: last good kept, clashes refused, deletions reported."""

from __future__ import annotations

from pathlib import Path

from reconcile.watch.stackdir import StackDir, renewed
from specs.loader import load_file
from specs.model import Stack


def stack(name: str, subnet: str) -> str:
    return f"name: {name}\nnetworks:\n  net:\n    subnet: {subnet}\n"


def test_files_become_stacks_and_an_edit_is_a_change(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(stack("a", "10.70.1.0/24"))
    (tmp_path / "b.yml").write_text(stack("b", "10.70.2.0/24"))
    (tmp_path / ".#a.yaml").write_text("editor lock file")
    (tmp_path / "notes.txt").write_text("not a stack")
    specs = StackDir(tmp_path)
    first = specs.refresh()
    assert first.changed == {"a", "b"} and not first.removed and not first.errors
    assert specs.refresh().changed == frozenset()  # nothing new: nothing to apply
    (tmp_path / "a.yaml").write_text(stack("a", "10.70.3.0/24"))
    assert specs.refresh([tmp_path / "a.yaml"]).changed == {"a"}


def test_a_file_read_again_unchanged_keeps_the_spec_in_force_and_its_new_positions(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text(stack("a", "10.70.1.0/24"))
    specs = StackDir(tmp_path)
    specs.refresh()
    in_force = specs.stacks()["a"].stack
    path.write_text("# moved down a line\n" + stack("a", "10.70.1.0/24"))
    assert not specs.refresh().changed
    assert specs.stacks()["a"].stack is in_force  # not rebuilt: a resync reads every file
    assert specs.stacks()["a"].locate(("networks", "net", "subnet")) == (5, 13)  # where it is now
    path.write_text(stack("a", "10.70.2.0/24"))
    assert specs.refresh().changed == {"a"} and specs.stacks()["a"].stack is not in_force


ORDERED = """\
name: a
networks:
  int: {subnet: 10.70.1.0/24, internal: true}
  ext: {subnet: 10.70.2.0/24}
containers:
%s"""
WEB_INT_EXT = "  web: {command: sleep 1d, networks: [int, ext]}\n"
WEB_EXT_INT = "  web: {command: sleep 1d, networks: [ext, int]}\n"
DB = "  db: {command: sleep 1d, networks: [int]}\n"


def test_a_spec_only_reordered_is_a_change_and_the_new_order_is_in_force(tmp_path: Path) -> None:
    """Equal by pydantic's `==` (dicts ignore their order), not the same spec: web's networks
    number its interfaces and pick its default route in the order written, and the
    containers' order is /etc/hosts' order. Kept, the old order would be planned by every
    later pass, and undone on the host after each `apply` of the file."""
    path = tmp_path / "a.yaml"
    path.write_text(ORDERED % (WEB_INT_EXT + DB))
    specs = StackDir(tmp_path)
    specs.refresh()
    for text in (ORDERED % (WEB_EXT_INT + DB), ORDERED % (DB + WEB_EXT_INT)):
        in_force = specs.stacks()["a"].stack
        path.write_text(text)
        fresh = load_file(path).stack
        assert fresh == in_force  # what `==` cannot tell apart
        assert specs.refresh([path]).changed == {"a"}
        assert specs.stacks()["a"].stack.model_dump_json() == fresh.model_dump_json()
        assert not specs.refresh().changed  # read again as it is now: the same
    assert list(specs.stacks()["a"].stack.containers) == ["db", "web"]
    assert list(specs.stacks()["a"].stack.containers["web"].networks) == ["ext", "int"]


def test_the_containers_a_new_spec_leaves_out_or_changes_are_renewed(tmp_path: Path) -> None:
    """What the agent's crash-loop backoff forgets: a container taken out, or given another
    spec (its networks reordered included), is a new container when it comes back."""
    path = tmp_path / "a.yaml"

    def loaded(text: str) -> Stack:
        path.write_text(ORDERED % text)
        return load_file(path).stack

    before = loaded(WEB_INT_EXT + DB)
    assert renewed(before, loaded(DB + WEB_INT_EXT)) == []  # the containers' order is the stack's
    assert renewed(before, loaded(WEB_EXT_INT + DB)) == ["a/web"]
    assert renewed(before, loaded(WEB_INT_EXT)) == ["a/db"]
    assert renewed(before, loaded(WEB_INT_EXT + DB.replace("1d", "2d"))) == ["a/db"]


def test_a_new_spec_is_held_with_its_equal_parts_shared(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    containers = "".join(f"  {n}:\n    command: sleep 1\n    networks: [net]\n    resources: {{pids: 10}}\n"
                         for n in ("x", "y"))
    path.write_text(stack("a", "10.70.1.0/24") + "containers:\n" + containers)
    specs = StackDir(tmp_path)
    specs.refresh()
    held = specs.stacks()["a"].stack.containers
    assert held["x"].resources is held["y"].resources  # specs.shared: one object for equal parts
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "a.yaml").write_text(path.read_text())
    path.write_text("name: a\nnot: valid\n")  # an agent restarted on a file broken since: the store's spec
    again = StackDir(tmp_path)
    again.refresh()
    assert again.adopt(path, load_file(elsewhere / "a.yaml").stack)
    adopted = again.stacks()["a"].stack.containers
    assert adopted["x"].resources is adopted["y"].resources


def test_an_invalid_file_keeps_its_last_good_spec_and_reports_where(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text(stack("a", "10.70.1.0/24"))
    specs = StackDir(tmp_path)
    specs.refresh()
    path.write_text(stack("a", "10.70.1.0/24") + "    mtu: huge\n")
    result = specs.refresh([path])
    assert not result.changed and not result.removed
    assert [str(e) for e in result.errors[path]][0].startswith(f"{path}:5:10: networks.net.mtu: expected an integer")
    assert str(specs.stacks()["a"].stack.networks["net"].subnet) == "10.70.1.0/24"
    path.write_text(stack("a", "10.70.9.0/24"))
    assert specs.refresh([path]).changed == {"a"} and not specs.errors


def test_a_whole_read_reports_a_bad_file_again_only_when_its_errors_change(tmp_path: Path) -> None:
    """A resync or the directory's events read every file: one that stayed bad says nothing new
    (the agent logged it again on every such read); named (saved again) it is reported."""
    bad, good = tmp_path / "bad.yaml", tmp_path / "good.yaml"
    bad.write_text(stack("a", "10.70.1.0/24") + "    mtu: huge\n")
    good.write_text(stack("b", "10.70.2.0/24"))
    specs = StackDir(tmp_path)
    assert set(specs.refresh().errors) == {bad}
    assert specs.refresh().errors == {} and set(specs.errors) == {bad}  # still bad, known, not new
    assert set(specs.refresh([bad]).errors) == {bad}
    bad.write_text(stack("a", "10.70.1.0/24") + "    mtu: -1\n")
    assert set(specs.refresh().errors) == {bad}  # another error


def test_a_file_clashing_with_another_stack_is_refused_the_other_unaffected(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(stack("a", "10.70.1.0/24"))
    specs = StackDir(tmp_path)
    specs.refresh()
    (tmp_path / "b.yaml").write_text(stack("b", "10.70.1.128/25"))  # overlaps a's subnet
    (tmp_path / "c.yaml").write_text(stack("a", "10.70.5.0/24"))  # a's name again
    result = specs.refresh([tmp_path / "b.yaml", tmp_path / "c.yaml"])
    assert set(result.errors) == {tmp_path / "b.yaml", tmp_path / "c.yaml"}
    assert "overlaps" in str(result.errors[tmp_path / "b.yaml"][0])
    assert "already used" in str(result.errors[tmp_path / "c.yaml"][0])
    assert set(specs.stacks()) == {"a"} and str(specs.stacks()["a"].path).endswith("a.yaml")


def test_a_deleted_or_renamed_stack_is_removed(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(stack("a", "10.70.1.0/24"))
    (tmp_path / "b.yaml").write_text(stack("b", "10.70.2.0/24"))
    specs = StackDir(tmp_path)
    specs.refresh()
    (tmp_path / "a.yaml").unlink()
    (tmp_path / "b.yaml").write_text(stack("b2", "10.70.2.0/24"))
    result = specs.refresh([tmp_path / "a.yaml", tmp_path / "b.yaml"])
    assert result.removed == {"a", "b"} and result.changed == {"b2"}


def test_a_renamed_file_keeps_its_stack(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text(stack("s", "10.70.1.0/24"))
    specs = StackDir(tmp_path)
    specs.refresh()
    (tmp_path / "b.yaml").rename(tmp_path / "a.yaml")  # `git mv b.yaml a.yaml`
    result = specs.refresh([tmp_path / "a.yaml", tmp_path / "b.yaml"])
    assert not result.removed and not result.errors and set(specs.stacks()) == {"s"}


def test_a_vanished_directory_prunes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "specs"
    root.mkdir()
    (root / "a.yaml").write_text(stack("a", "10.70.1.0/24"))
    specs = StackDir(root)
    specs.refresh()
    (root / "a.yaml").unlink()
    root.rmdir()
    result = specs.refresh()
    assert not result.removed and set(specs.stacks()) == {"a"}
    assert "the watched directory is gone" in str(result.errors[root][0])
    assert specs.refresh().errors == {} and root in specs.errors  # said once, not on every resync


def test_a_clash_keeps_the_stack_with_the_file_it_was_applied_from_whatever_the_order(tmp_path: Path) -> None:
    """Seen by a fresh agent (files read alphabetically), `a.yaml` now claiming `zeta` is the
    newcomer: `z.yaml`, which `zeta` was applied from, keeps it."""
    (tmp_path / "a.yaml").write_text(stack("zeta", "10.70.7.0/24"))
    (tmp_path / "z.yaml").write_text(stack("zeta", "10.70.8.0/24"))
    specs = StackDir(tmp_path, owners={"aaa": tmp_path / "a.yaml", "zeta": tmp_path / "z.yaml"})
    result = specs.refresh()
    assert specs.stacks()["zeta"].path == tmp_path / "z.yaml"
    assert set(result.errors) == {tmp_path / "a.yaml"} and "already used" in str(result.errors[tmp_path / "a.yaml"][0])


def test_a_copy_then_delete_moves_the_stack_to_the_copy(tmp_path: Path) -> None:
    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old.write_text(stack("s", "10.70.1.0/24"))
    specs = StackDir(tmp_path)
    specs.refresh()
    new.write_text(old.read_text())
    assert set(specs.refresh([new]).errors) == {new}  # two files, one stack: the copy waits
    other = tmp_path / "other.yaml"
    other.write_text(stack("o", "10.70.2.0/24"))
    assert not specs.refresh([other]).errors  # still refused, not reported again
    old.unlink()
    result = specs.refresh([old])
    assert not result.removed and not result.changed and not result.errors and not specs.errors
    assert result.moved == {"s": new} and specs.owners["s"] == new


def test_a_rename_is_reported_as_a_move(tmp_path: Path) -> None:
    (tmp_path / "one.yaml").write_text(stack("one", "10.70.1.0/24"))
    specs = StackDir(tmp_path)
    specs.refresh()
    (tmp_path / "one.yaml").rename(tmp_path / "uno.yaml")
    result = specs.refresh([tmp_path / "one.yaml", tmp_path / "uno.yaml"])
    assert result.moved == {"one": tmp_path / "uno.yaml"} and not result.changed and not result.removed


def test_a_refused_file_takes_over_a_name_freed_in_the_same_refresh(tmp_path: Path) -> None:
    """`b.yaml` waits for the name `alpha`; `z.yaml` renames its stack: alpha moves to `b.yaml`
    in that refresh, never removed (pruned) then created again."""
    (tmp_path / "z.yaml").write_text(stack("alpha", "10.70.1.0/24"))
    specs = StackDir(tmp_path)
    specs.refresh()
    (tmp_path / "b.yaml").write_text(stack("alpha", "10.70.1.0/24"))
    assert set(specs.refresh([tmp_path / "b.yaml"]).errors) == {tmp_path / "b.yaml"}
    (tmp_path / "z.yaml").write_text(stack("beta", "10.70.2.0/24"))
    result = specs.refresh([tmp_path / "z.yaml"])
    assert not result.removed and result.changed == {"beta"} and result.moved == {"alpha": tmp_path / "b.yaml"}
    assert not specs.errors
