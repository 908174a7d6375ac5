"""Usage errors exit 1, as every error: 2 is `diff`'s "changes" (issue 14, item 12)."""

from __future__ import annotations

import pytest

from reconcile.cli import EXIT_ERROR, main


@pytest.mark.parametrize("argv", [["diff"], ["apply", "--bogus", "x"], ["frobnicate"], ["image", "pull"],
                                  ["watch", "specs", "--resync", "-5"]])
def test_a_usage_error_exits_1(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == EXIT_ERROR
    err = capsys.readouterr().err
    assert "usage: reconcile" in err and "error:" in err
