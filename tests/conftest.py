from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.rootfs import busybox_rootfs
from tests.sandbox import Sandbox

KERNEL_MARK = "kernel"
"""Tests that drive the real kernel in a throwaway host (tests/sandbox.py): every test using the
`sandbox` fixture gets it on its own; tests that build their Sandboxes themselves (in a
module-scoped fixture) carry it by hand. Run as root only; select with `-m kernel` or `-m "not kernel"`."""

SLOW_MARK = "slow"
"""Whole modules that take minutes (kill anywhere, convergence): collected first."""

NOT_ROOT = "needs root: drives the real kernel inside throwaway namespaces (tests/sandbox.py)"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Minutes-long modules first (a stable sort: each stays whole, in order): started last, one
    # would run alone at the end of a parallel run.
    items.sort(key=lambda item: item.get_closest_marker(SLOW_MARK) is None)
    skip = pytest.mark.skip(reason=NOT_ROOT) if os.geteuid() != 0 else None
    for item in items:
        if "sandbox" in getattr(item, "fixturenames", ()):
            item.add_marker(KERNEL_MARK)
        if skip is not None and item.get_closest_marker(KERNEL_MARK) is not None:
            item.add_marker(skip)


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    """A fresh, throwaway host per test (see tests/sandbox.py)."""
    box = Sandbox(tmp_path)
    try:
        yield box
    finally:
        box.close()


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A busybox root filesystem for containers without an image (tests/rootfs.py)."""
    return busybox_rootfs(tmp_path_factory.mktemp("rootfs"))
