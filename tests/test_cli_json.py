"""`-o json` output: the same indented JSON as json.dumps(indent=2), by a faster encoder, with
json's own where that one cannot write the text."""

from __future__ import annotations

import io
import json

import pytest

from reconcile.cli import _print_json

DOCUMENT = {"stacks": [{"name": "web", "containers": [{"pid": 42, "ips": {}, "ports": [], "health": None,
                                                         "running": True, "cpu": 0.25, "big": 1e20}]}],
            "invalid_files": [], "nested": [[1, [2, {"a": False}]]], "keys": {"1": "x"}}


def _printed(data: object, monkeypatch: pytest.MonkeyPatch, encoding: str = "utf-8") -> str:
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding=encoding, errors="strict", write_through=True)
    monkeypatch.setattr("sys.stdout", out)
    _print_json(data)
    return raw.getvalue().decode(encoding)


def test_ascii_documents_are_what_json_dumps_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _printed(DOCUMENT, monkeypatch) == json.dumps(DOCUMENT, indent=2) + "\n"


def test_text_beyond_ascii_is_written_as_is(monkeypatch: pytest.MonkeyPatch) -> None:
    printed = _printed({"output": "café ✓"}, monkeypatch)
    assert printed == '{\n  "output": "café ✓"\n}\n'


def test_what_is_written_its_own_way_parses_to_the_same_values(monkeypatch: pytest.MonkeyPatch) -> None:
    data = {"stop_grace": 0.00001, "tiny": 1e-7, "text": "del\x7f tab\t nl\n q\" bs\\ \u2028"}
    printed = _printed(data, monkeypatch, "UTF_8")  # any spelling of UTF-8 takes the fast encoder
    assert json.loads(printed) == data and printed != json.dumps(data, indent=2) + "\n"


@pytest.mark.parametrize(("data", "encoding"), [
    ({"file": "bad\udcffname", "note": "café"}, "utf-8"),  # not valid Unicode: a lone surrogate
    ({"output": "café"}, "ascii"),  # an output that cannot hold UTF-8
], ids=["lone surrogate", "ascii output"])
def test_json_escapes_what_the_fast_encoder_cannot_write(data: dict[str, str], encoding: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    printed = _printed(data, monkeypatch, encoding)
    assert printed == json.dumps(data, indent=2) + "\n"
    assert json.loads(printed) == data
