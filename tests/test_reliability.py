"""The figures helper the reliability report reads: silent unless asked, merging when asked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.reliability import OUT_ENV, record

REPO = Path(__file__).resolve().parent.parent


def test_nothing_is_written_without_the_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(OUT_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    record("hostile", bad_inputs=1)
    assert list(tmp_path.iterdir()) == []


def test_figures_merge_into_the_section_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    out = tmp_path / "report"
    monkeypatch.setenv(OUT_ENV, str(out))
    record("loader_fuzz", bytes=300, examples=300)
    record("loader_fuzz", grammar=300, examples=600)
    assert json.loads((out / "loader_fuzz.json").read_text()) == {"bytes": 300, "grammar": 300, "examples": 600}
    assert sorted(path.name for path in out.iterdir()) == [".lock", "loader_fuzz.json"]  # no partial file left


def test_writers_at_once_keep_each_others_figures(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Two pytest-xdist workers record into one section at once: the merge is under a lock."""
    out = tmp_path / "report"
    monkeypatch.setenv(OUT_ENV, str(out))
    code = ("import sys; from tests.reliability import record\n"
            "for i in range(100): record('s', **{f'{sys.argv[1]}{i}': i})")
    writers = [subprocess.Popen([sys.executable, "-c", code, name], cwd=REPO) for name in "ab"]
    assert [writer.wait(60) for writer in writers] == [0, 0]
    assert len(json.loads((out / "s.json").read_text())) == 200
