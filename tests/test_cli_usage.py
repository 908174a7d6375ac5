"""Usage errors exit 1, as every error: 2 is `diff`'s "changes" (issue 14, item 12); under
-o json they are JSON too."""

from __future__ import annotations

import json

import pytest

from reconcile.cli import EXIT_ERROR, main


@pytest.mark.parametrize("argv", [["diff"], ["apply", "--bogus", "x"], ["frobnicate"], ["image", "pull"],
                                  ["watch", "specs", "--resync", "-5"], ["watch", "/nonexistent", "--debounce", "-5"],
                                  ["watch", "/nonexistent", "--debounce", "0.5"]])
def test_a_usage_error_exits_1(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == EXIT_ERROR
    err = capsys.readouterr().err
    assert "usage: reconcile" in err and "error:" in err


def test_watch_usage_errors_under_json_are_lines_of_the_agents_stream(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["watch", "/nonexistent", "-o", "json", "--debounce", "-5"]) == EXIT_ERROR
    out, err = capsys.readouterr()
    assert out == ""
    lines = [json.loads(line) for line in err.splitlines()]
    assert [(record["event"], record["kind"], record["error"]) for record in lines] == [
        ("error", "usage", "reconcile watch: error: argument --debounce: '-5': expected whole milliseconds, 0 or more")]


def test_other_usage_errors_under_json_are_a_json_document(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-o", "json", "diff"]) == EXIT_ERROR
    document = json.loads(capsys.readouterr().out)
    assert document == {"error": "usage", "messages": ["reconcile diff: error: the following arguments are "
                                                       "required: path"]}
