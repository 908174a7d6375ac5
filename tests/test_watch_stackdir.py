"""The watched directory as specs: last good kept, clashes refused, deletions reported."""

from __future__ import annotations

from pathlib import Path

from reconcile.watch.stackdir import StackDir


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
