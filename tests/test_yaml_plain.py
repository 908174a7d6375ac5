"""The fast reader of stack files: what it reads, it reads exactly as the full reader does; what
it does not judge (anything less common than plain mappings, lists and scalars), it leaves to
the full reader by answering None. The fuzz tests (test_loader_fuzz.py) check the agreement
on generated files; these name the cases."""

from __future__ import annotations

import pytest

from specs.document import MAX_DEPTH
from specs.yaml_plain import read_plain
from tests.yaml_compare import assert_read_as_fully

READ = {
    "block mappings and lists": "name: web\ncontainers:\n  a:\n    command: [sleep, '1']\n",
    "YAML 1.2 words stay text": "a: yes\nb: no\nc: on\nd: off\ne: y\n",
    "YAML 1.2 booleans and nulls": "a: true\nb: False\nc: ~\nd: null\ne:\n",
    "decimal numbers": "a: 80\nb: -3\nc: 0.5\nd: +7\ne: 10.25\n",
    "text that looks almost like numbers": "a: 10.60.0.0/22\nb: 20000:80\nc: 12:30:00\nd: 64Mi\n",
    "quoted scalars": "a: '017'\nb: \"x\\ty\"\nc: 'it''s'\n",
    "integer keys": "80: http\n443: https\n",
    "flow collections": "a: {b: [1, 2, [x]], c: {d: e}}\n",
    "an explicit document start": "---\na: 1\n",
    "comments": "# top\na: 1  # trailing\n",
    "non-ASCII text": "a: caf\u00e9\n",
}

LEFT_TO_THE_FULL_READER = {
    "an anchor and an alias": "a: &x 1\nb: *x\n",
    "a merge key": "base: &b {x: 1}\nc:\n  <<: *b\n",
    "an explicit tag": "a: !!str 1\n",
    "a local tag": "a: !env X\n",
    "a block scalar": "a: |\n  line\n",
    "a duplicate key": "a: 1\na: 2\n",
    "an octal-looking integer": "a: 017\n",
    "a hex integer": "a: 0x1F\n",
    "an integer with underscores": "a: 1_000\n",
    "infinity": "a: .inf\n",
    "an exponent": "a: 1e3\n",
    "a date": "a: 2024-01-01\n",
    "a tab": "a:\t1\n",
    "a YAML 1.1 line break": "a: x\u2028y\n",
    "a byte order mark inside": "a: \ufeffx\n",
    "a %YAML directive": "%YAML 1.2\n---\na: 1\n",
    "a document end marker": "a: 1\n...\n",
    "two documents": "a: 1\n---\nb: 2\n",
    "a list as a key": "? [a]\n: 1\n",
    "a quoted key glued to its value in a flow list": "a: [\"b\":c]\n",
    "a mapping inside a flow list": "a: [{b: c}]\n",
    "invalid YAML": "a: [1\n",
    "an empty file": "",
    "a lone surrogate": "a: \"\\ud800\"\n",
    "nesting past the limit": "a: " + "[" * (MAX_DEPTH + 2) + "]" * (MAX_DEPTH + 2) + "\n",
}


@pytest.mark.parametrize("text", READ.values(), ids=READ.keys())
def test_reads_plain_files_as_the_full_reader(text: str) -> None:
    plain = read_plain(text, MAX_DEPTH)
    assert plain is not None
    assert_read_as_fully(plain, text)


@pytest.mark.parametrize("text", LEFT_TO_THE_FULL_READER.values(), ids=LEFT_TO_THE_FULL_READER.keys())
def test_leaves_the_less_common_to_the_full_reader(text: str) -> None:
    assert read_plain(text, MAX_DEPTH) is None
