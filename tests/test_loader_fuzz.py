"""The loader and validator on input nobody wrote by hand: bytes, YAML text generated from a
grammar of the spec's own fields and values, and mutations of the shipped examples. Each must
end as valid stacks or as SpecErrors whose every error names file:line:col inside that file:
any other exception would reach a user as a traceback, and an error without a place, or with
one past the end of the file, is an error the user cannot find.

The hypothesis profile `loader-fuzz` runs 300 examples per test (the whole module in well
under 30 s); RECONCILE_FUZZ_PROFILE=loader-fuzz-long runs many more, for a soak.
"""

from __future__ import annotations

import codecs
import json
import math
import os
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from specs.document import MAX_DEPTH
from specs.errors import SpecErrors
from specs.loader import load_path
from specs.yaml_plain import read_plain
from tests.reliability import record
from tests.sandbox import REPO
from tests.spec_fuzzing import FIELD_NAMES, SCALARS, TOKENS
from tests.yaml_compare import assert_read_as_fully

settings.register_profile("loader-fuzz", max_examples=300, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("loader-fuzz-long", settings.get_profile("loader-fuzz"), max_examples=20_000)
FUZZ = settings.get_profile(os.environ.get("RECONCILE_FUZZ_PROFILE", "loader-fuzz"))

EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
_LINE_BREAK_RE = re.compile(r"\r\n|\r|\n")
"""YAML's line breaks, which editors count lines by too (U+2028 and U+0085 are not)."""


# --- Values: valid ones, near misses and hostile ones, for each kind of field -------------------

class Raw(str):
    """Text emitted into the YAML as is, never quoted: YAML's own special words."""


RAW_WORDS = st.sampled_from([Raw(word) for word in (
    "~", "null", "yes", "no", "on", "0x1F", "0o17", "017", "1_000", ".inf", "-.inf", ".nan", "1e999",
    "2024-01-01", "2024-13-45", "12:30:00", "*a", "&a x", "!!str 1", "!!int x", "!!binary x", "!!set {}",
    "!!python/object/apply:os.system [x]", "!env X", "<<", "|", ">-", "'", '"', "[", "{", "- x", "? x",
    "'unterminated", "\t", "%", "@", "`", "#",
)])
NAMES = st.one_of(st.sampled_from(["demo", "web", "db", "front", "back", "a", "a-b", "x" * 16, "x" * 17,
                                   "x" * 63, "x" * 64, "Web", "1a", "a_b", "../x", "a b", "$(id)", "d\u0435mo",
                                   "a\u200b", ""]),
                  st.from_regex(r"[a-z][a-z0-9-]{0,62}", fullmatch=True))
ADDRESSES = st.one_of(st.ip_addresses(v=4).map(str), st.sampled_from(
    ["10.88.1.1", "10.88.1.0", "10.88.1.255", "10.88.2.10", "0.0.0.0", "300.1.1.1", "::1", "localhost", ""]))
SUBNETS = st.one_of(
    st.builds(lambda address, prefix: f"{address}/{prefix}", ADDRESSES, st.integers(-1, 33)),
    st.sampled_from(["10.88.1.0/24", "10.88.0.0/16", "10.88.1.0/24", "10.0.0.0/8", "10.88.1.0/30", "fd00::/64"]))
PORTS = st.one_of(st.integers(-2, 70_000), st.sampled_from([0, 1, 80, 8080, 65535, 65536]))
PORT_STRINGS = st.builds(lambda ip, host, container, proto: f"{ip}{host}:{container}{proto}",
                         st.sampled_from(["", "127.0.0.1:", "0.0.0.0:", "::1:", "x:"]), PORTS, PORTS,
                         st.sampled_from(["", "/tcp", "/udp", "/sctp", "/TCP", "/"]))
SIZES = st.one_of(st.integers(-1, 2**60), st.builds(lambda n, unit: f"{n}{unit}", st.integers(0, 10**6),
                                                    st.sampled_from(["", "Ki", "Mi", "Gi", "Ti", "K", "M", "m", "Pi"])))
CPUSETS = st.builds(lambda a, b: f"{a}-{b}", st.integers(0, 9000), st.integers(0, 9000)) | st.just("0,2-3")
PATHS = st.sampled_from(["/", "/srv/data", "/srv/../etc", "relative", "/a b", "/srv/x:y", "/data/", "/proc", ""])
VOLUMES = st.one_of(st.builds(lambda s, t, m: f"{s}:{t}{m}", PATHS, PATHS, st.sampled_from(["", ":ro", ":rw", ":rx"])),
                    st.fixed_dictionaries({"source": PATHS, "target": PATHS}, optional={"read_only": st.booleans()}))


def values(*specific: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    """A field's own kind of value most of the time, anything else some of the time."""
    return st.one_of(*specific, SCALARS, RAW_WORDS)


def listed(*specific: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    return values(st.lists(values(*specific), max_size=4))


def spec_mapping(fields: dict[str, st.SearchStrategy[object]]) -> st.SearchStrategy[object]:
    """A mapping of some of `fields`, maybe with a misspelt or unknown one."""
    extra = st.dictionaries(st.sampled_from(FIELD_NAMES + ["memroy", "subnett", "<<", "x-extra"]),
                            SCALARS, max_size=1)
    known = st.fixed_dictionaries({}, optional=fields)
    return values(st.builds(lambda a, b: {**a, **b}, known, extra))


NETWORK = spec_mapping({"subnet": values(SUBNETS), "gateway": values(ADDRESSES), "bridge": values(NAMES),
                        "mtu": values(st.integers(0, 70_000)), "internal": values(st.booleans())})
PORT = values(PORT_STRINGS, spec_mapping({"host": values(PORTS), "container": values(PORTS),
                                          "protocol": values(st.sampled_from(["tcp", "udp", "sctp"])),
                                          "host_ip": values(ADDRESSES)}))
RESOURCES = spec_mapping({"memory": values(SIZES), "cpus": values(st.floats(-1, 2000), st.integers(-1, 2000)),
                          "pids": values(st.integers(-1, 2**23)), "cpuset": values(CPUSETS)})
CONTAINER = spec_mapping({
    "command": values(st.sampled_from(["/bin/true", "sh -c 'echo hi'", "sh -c 'unbalanced", ""]),
                      st.lists(st.sampled_from(["/bin/busybox", "httpd", "-f", "", "a\0b"]), max_size=3)),
    "env": values(st.dictionaries(st.sampled_from(["A", "GREETING", "MY-VAR", "1X", ""]), values(st.text(max_size=5)),
                                  max_size=3)),
    "workdir": values(PATHS), "rootfs": values(PATHS), "hostname": values(NAMES), "user": values(NAMES),
    "restart": values(st.sampled_from(["always", "on-failure", "no", "sometimes"])),
    "networks": values(st.lists(NAMES, max_size=3),
                       st.dictionaries(NAMES, values(st.fixed_dictionaries({"ip": values(ADDRESSES)})), max_size=3)),
    "default_route": values(NAMES), "ports": listed(PORT), "resources": RESOURCES, "volumes": listed(VOLUMES),
    "depends_on": listed(NAMES), "stop_grace": values(st.floats(-1, 10**6)),
})
STACK = st.fixed_dictionaries({}, optional={
    "name": values(NAMES),
    "networks": values(st.dictionaries(NAMES, NETWORK, max_size=3)),
    "containers": values(st.dictionaries(NAMES, CONTAINER, max_size=3)),
})


# --- Rendering values as YAML text, in the styles people write it in ----------------------------

def render_scalar(value: object, draw: st.DrawFn) -> str:
    if isinstance(value, Raw):
        return value
    if value is None:
        return draw(st.sampled_from(["", "~", "null"]))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return ".nan" if math.isnan(value) else ("-.inf" if value < 0 else ".inf")
    if isinstance(value, (int, float)):
        return str(value)
    text = str(value)
    style = draw(st.sampled_from(["plain", "single", "double"]))
    if style == "plain":
        return text  # may well not be a plain scalar: a YAML error is an accepted outcome
    if style == "single":
        return "'" + text.replace("'", "''") + "'"
    return json.dumps(text)  # a JSON string is a YAML double-quoted scalar


def render_flow(value: object, draw: st.DrawFn) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{render_scalar(k, draw)}: {render_flow(v, draw)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(render_flow(item, draw) for item in value) + "]"
    return render_scalar(value, draw)


def render_block(value: object, indent: int, draw: st.DrawFn) -> list[str]:
    """Lines of `value` as a block node at `indent`; collections sometimes in flow style."""
    pad = " " * indent
    if not isinstance(value, (dict, list)) or not value or draw(st.integers(0, 4)) == 0:
        return [pad + render_flow(value, draw)]
    entries = value.items() if isinstance(value, dict) else (("-", item) for item in value)
    lines: list[str] = []
    for key, item in entries:
        head = pad + ("-" if isinstance(value, list) else render_scalar(key, draw) + ":")
        nested = render_block(item, indent + 2, draw)
        if len(nested) == 1:
            lines.append(f"{head} {nested[0].lstrip()}")
        else:
            lines += [head, *nested]
    return lines


def render_document(document: object, draw: st.DrawFn) -> str:
    lines = render_block(document, 0, draw)
    for _ in range(draw(st.integers(0, 2))):  # comments, blank lines, document markers, tabs
        lines.insert(draw(st.integers(0, len(lines))), draw(st.sampled_from(["# note", "", "---", "...", "\t", "  #"])))
    return "\n".join(lines) + draw(st.sampled_from(["\n", "", "\r\n"]))


# --- Byte sequences and mutations ----------------------------------------------------------------

YAML_BYTES = st.lists(st.one_of(
    st.sampled_from([b"\n", b"\r", b"\r\n", b"\t", b" ", b":", b": ", b"- ", b"[", b"]", b"{", b"}", b",", b"#",
                     b"&a", b"*a", b"!", b"%YAML 1.1\n", b"---", b"'", b'"', b"\\", b"|", b">", b"?", b"\x00",
                     b"\x07", b"\x1b", b"\x7f", b"\x85", b"\xc2\x85", b"\xe2\x80\xa8", b"\xef\xbb\xbf", b"\xff\xfe",
                     b"\xc3", b"\xed\xa0\x80", b"\\ud800", b"\\x00"]),
    st.sampled_from([word.encode() for word in TOKENS]),
    st.binary(max_size=4),
), max_size=80).map(b"".join)


def mutate(text: str, data: st.DataObject) -> bytes:
    """A few line and character edits: what a careless edit, a bad merge or a truncated copy does."""
    lines = _LINE_BREAK_RE.split(text)
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(lines) - 1))
        edit = data.draw(st.sampled_from(["delete", "duplicate", "reindent", "replace-value", "insert", "splice"]))
        line = lines[index]
        if edit == "delete":
            del lines[index]
        elif edit == "duplicate":
            lines.insert(index, line)
        elif edit == "reindent":
            lines[index] = " " * data.draw(st.integers(0, 8)) + data.draw(st.sampled_from(["", "\t"])) + line.lstrip()
        elif edit == "replace-value" and ":" in line:
            key, _, _ = line.partition(":")
            lines[index] = f"{key}: {render_flow(data.draw(values(SUBNETS, NAMES, PORT, RESOURCES)), data.draw)}"
        elif edit == "insert":
            lines[index:index] = render_block(data.draw(STACK), data.draw(st.sampled_from([0, 2, 4])), data.draw)
        else:
            cut = data.draw(st.integers(0, len(line)))
            lines[index] = line[:cut] + data.draw(st.sampled_from(TOKENS + ["\x00", "\udcff", "\u2028"])) + line[cut:]
        if not lines:
            lines = [""]
    return "\n".join(lines).encode("utf-8", "surrogateescape" if data.draw(st.booleans()) else "replace")


# --- The property --------------------------------------------------------------------------------

def assert_fast_reader_agrees(content: bytes) -> None:
    """What the fast reader accepts, the full reader accepts too, as exactly the same values."""
    try:
        text = content.removeprefix(codecs.BOM_UTF8).decode("utf-8")
    except UnicodeDecodeError:
        return
    plain = read_plain(text, MAX_DEPTH)
    if plain is not None:
        assert_read_as_fully(plain, text)


def assert_valid_or_located(path: Path, content: bytes) -> None:
    """Load `content` as `path`: stacks, or SpecErrors that each point inside the file; and the
    fast reader agrees with the full one."""
    assert_fast_reader_agrees(content)
    path.write_bytes(content)
    try:
        load_path(path)
    except SpecErrors as exc:
        assert exc.errors, "SpecErrors without an error"
        lines = _LINE_BREAK_RE.split(content.decode("utf-8-sig", "replace"))
        for error in exc.errors:
            text = str(error)
            assert (error.file, "\n" in text) == (str(path), False), text
            assert 1 <= error.line <= len(lines), f"line out of the file: {text}"
            assert 1 <= error.col <= len(lines[error.line - 1]) + 1, f"column out of the line: {text}"


@pytest.fixture(scope="module")
def stack_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("loader-fuzz") / "stack.yaml"


@pytest.fixture(scope="module")
def examples_run() -> Iterator[Counter[str]]:
    """Examples run per kind of input, for the reliability report."""
    counts: Counter[str] = Counter()
    yield counts
    record("loader_fuzz", examples=sum(counts.values()), **counts)


@FUZZ
@given(content=st.one_of(st.binary(max_size=600), YAML_BYTES))
def test_bytes(stack_path: Path, examples_run: Counter[str], content: bytes) -> None:
    examples_run.update(bytes=1)
    assert_valid_or_located(stack_path, content)


@FUZZ
@given(data=st.data())
def test_yaml_from_the_spec_grammar(stack_path: Path, examples_run: Counter[str], data: st.DataObject) -> None:
    examples_run.update(grammar=1)
    text = render_document(data.draw(STACK), data.draw)
    assert_valid_or_located(stack_path, text.encode("utf-8", "surrogateescape"))


@pytest.mark.parametrize("example", EXAMPLES, ids=[path.name for path in EXAMPLES])
@FUZZ
@given(data=st.data())
def test_mutated_examples(stack_path: Path, examples_run: Counter[str], example: Path, data: st.DataObject) -> None:
    examples_run.update(mutations=1)
    assert_valid_or_located(stack_path, mutate(example.read_text(), data))
