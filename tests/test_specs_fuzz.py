"""Whatever is on disk, loading it ends in a list of stacks or in SpecErrors of one line each:
never another exception, so no traceback can reach a user."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from specs.errors import SpecErrors
from specs.loader import load_path
from tests.spec_fuzzing import FIELD_NAMES, SCALARS, TOKENS
from tests.specs_support import FULL_EXAMPLE

FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


KEYS = st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=10))
YAMLISH = st.recursive(SCALARS, lambda children: st.one_of(
    st.lists(children, max_size=5), st.dictionaries(KEYS, children, max_size=6)), max_leaves=40)


@pytest.fixture(scope="module")
def stack_path(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield tmp_path_factory.mktemp("fuzz") / "stack.yaml"


def assert_loads_or_spec_errors(path: Path, content: bytes) -> None:
    path.write_bytes(content)
    try:
        load_path(path)
    except SpecErrors as exc:
        assert exc.errors, "SpecErrors without an error"
        assert all("\n" not in str(error) for error in exc.errors), "an error spans lines"


@FUZZ
@given(content=st.binary(max_size=600))
def test_random_bytes(stack_path: Path, content: bytes) -> None:
    assert_loads_or_spec_errors(stack_path, content)


@FUZZ
@given(content=st.text(max_size=600))
def test_random_text(stack_path: Path, content: str) -> None:
    assert_loads_or_spec_errors(stack_path, content.encode("utf-8", "surrogatepass"))


@FUZZ
@given(tokens=st.lists(st.sampled_from(TOKENS), max_size=60))
def test_random_yaml_tokens(stack_path: Path, tokens: list[str]) -> None:
    """Text made of YAML's own punctuation and the spec's words gets past the tokenizer."""
    assert_loads_or_spec_errors(stack_path, "".join(tokens).encode())


@FUZZ
@given(document=YAMLISH)
def test_random_structures(stack_path: Path, document: object) -> None:
    """JSON is YAML 1.2: random documents made of the spec's own words reach the model."""
    assert_loads_or_spec_errors(stack_path, json.dumps(document).encode())


@FUZZ
@given(stack=st.fixed_dictionaries({"name": SCALARS, "networks": st.dictionaries(KEYS, YAMLISH, max_size=3),
                                    "containers": st.dictionaries(KEYS, YAMLISH, max_size=3)}))
def test_random_stacks(stack_path: Path, stack: dict[str, object]) -> None:
    assert_loads_or_spec_errors(stack_path, json.dumps(stack).encode())


@FUZZ
@given(data=st.data())
def test_mutated_example(stack_path: Path, data: st.DataObject) -> None:
    """A valid file with a few characters replaced: YAML that is almost right."""
    text = FULL_EXAMPLE.replace("\n    ", "\n").removeprefix("    ")
    for _ in range(data.draw(st.integers(1, 4))):
        start = data.draw(st.integers(0, len(text)))
        end = data.draw(st.integers(start, min(len(text), start + 8)))
        text = text[:start] + data.draw(st.text(max_size=8)) + text[end:]
    assert_loads_or_spec_errors(stack_path, text.encode("utf-8", "surrogatepass"))
