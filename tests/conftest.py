from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sandbox import Sandbox


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    """A fresh, throwaway host per test (see tests/sandbox.py)."""
    box = Sandbox(tmp_path)
    try:
        yield box
    finally:
        box.close()
