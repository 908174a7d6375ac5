"""The figures helper the reliability report reads: silent unless asked, merging when asked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.reliability import OUT_ENV, record


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
    assert [path.name for path in out.iterdir()] == ["loader_fuzz.json"]
