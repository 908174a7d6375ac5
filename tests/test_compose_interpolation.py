"""Compose's variable interpolation and `.env` syntax (pure), and both as the loader applies them:
the process environment over the `.env` file beside the Compose file, errors at the value."""

from __future__ import annotations

from pathlib import Path

import pytest

from specs.compose_interpolation import EnvLine, interpolate, parse_env_file
from tests.specs_support import error_lines, load_text

VARIABLES = {"SET": "value", "EMPTY": "", "PORT": "8080"}

EXPANDED: list[tuple[str, str, list[str]]] = [
    ("plain $SET and ${SET}", "plain value and value", []),
    ("$SET_SUFFIX", "", ["SET_SUFFIX"]),
    ("${SET}_suffix", "value_suffix", []),
    ("${UNSET}", "", ["UNSET"]),
    ("${UNSET:-default} ${EMPTY:-default} ${EMPTY-default}", "default default ", []),
    ("${UNSET-default}", "default", []),
    ("${SET:+other} ${EMPTY:+other} ${EMPTY+other} ${UNSET+other}", "other  other ", []),
    ("${UNSET:-${SET}} ${UNSET:-${ALSO:-deep}}", "value deep", []),
    ("$$SET costs $$5", "$SET costs $5", []),
    ("${PORT}:80", "8080:80", []),
    ("no variables", "no variables", []),
]


@pytest.mark.parametrize("text, expected, unset", EXPANDED, ids=[case[0] for case in EXPANDED])
def test_interpolation(text: str, expected: str, unset: list[str]) -> None:
    found: list[str] = []
    assert interpolate(text, VARIABLES, found) == expected
    assert found == unset


REFUSED: list[tuple[str, str]] = [
    ("${UNSET:?set it}", "set it (unset or empty: UNSET)"),
    ("${EMPTY:?}", "variable EMPTY is required (unset or empty: EMPTY)"),
    ("${UNSET?}", "variable UNSET is required (unset: UNSET)"),
    ("cost: 5$", "invalid interpolation in 'cost: 5$': write $$ for a literal $"),
    ("${SET", "invalid interpolation in '${SET': '${' without its '}'"),
    ("${1X}", "invalid interpolation in '${1X}': expected a variable name after '${'"),
    ("${SET/a/b}", "invalid interpolation in '${SET/a/b}': unknown modifier '/a/b'"),
]


@pytest.mark.parametrize("text, message", REFUSED, ids=[case[0] for case in REFUSED])
def test_malformed_or_required_variables_are_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        interpolate(text, VARIABLES, [])
    assert str(caught.value) == message


def test_env_file_syntax() -> None:
    entries, errors = parse_env_file(
        "# a comment\n\nA=1\nexport B = two words # comment\nC='$literal #x'\nD=\"line\\nbreak \\\"q\\\"\"\n"
        "E=\nF\nnot a line\nG='open\n")
    assert entries == [EnvLine(3, "A", "1"), EnvLine(4, "B", "two words"), EnvLine(5, "C", "$$literal #x"),
                       EnvLine(6, "D", 'line\nbreak "q"'), EnvLine(7, "E", ""), EnvLine(8, "F", None)]
    assert errors == [(9, "expected KEY=VALUE, got 'not a line'"), (10, "unterminated single-quoted value")]


COMPOSE = """\
services:
  web:
    image: "busybox:${TAG:-1.36}"
    ports: ["${PORT}:80"]
    environment: {FROM_DOTENV: "${DOTENV_ONLY}", WINNER: "${BOTH}", LITERAL: "$$HOME"}
networks:
  default:
    ipam: {config: [{subnet: "${SUBNET}"}]}
"""


def test_the_environment_wins_over_the_dotenv_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "app"
    project.mkdir()
    (project / ".env").write_text("PORT=8081\nBOTH=dotenv\nDOTENV_ONLY=from ${PORT}\nSUBNET=10.89.0.0/24\n")
    monkeypatch.setenv("BOTH", "environment")
    monkeypatch.delenv("PORT", raising=False)
    monkeypatch.delenv("TAG", raising=False)
    [stack_file] = load_text(project, COMPOSE, "compose.yaml")
    web = stack_file.stack.containers["web"]
    assert (web.image, web.ports[0].host) == ("busybox:1.36", 8081)
    assert web.env == {"FROM_DOTENV": "from 8081", "WINNER": "environment", "LITERAL": "$HOME"}
    assert stack_file.warnings == ()


def test_interpolation_problems_are_located(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "app"
    project.mkdir()
    for name in ("PORT", "TAG", "SUBNET", "DOTENV_ONLY", "BOTH"):
        monkeypatch.delenv(name, raising=False)
    text = COMPOSE.replace("${SUBNET}", "${SUBNET:?declare SUBNET in .env}")
    assert error_lines(project, {"compose.yaml": text}) == [
        "compose.yaml:8:30: networks.default.ipam.config[0].subnet: declare SUBNET in .env (unset or empty: "
        "SUBNET)"]
    monkeypatch.setenv("SUBNET", "10.89.0.0/24")
    monkeypatch.setenv("PORT", "8080")
    [stack_file] = load_text(project, text, "compose.yaml")
    assert [str(w) for w in stack_file.warnings] == [
        "compose.yaml:5:32: services.web.environment.FROM_DOTENV: variable DOTENV_ONLY is not set: it is read "
        "as a blank string",
        "compose.yaml:5:58: services.web.environment.WINNER: variable BOTH is not set: it is read as a blank "
        "string"]


TYPED = """\
services:
  web:
    image: busybox
    read_only: ${RO:-true}
    privileged: ${PRIV:-FALSE}
    pids_limit: ${PIDS:-100}
    cpu_shares: ${SHARES:-512}
    cpus: ${CPUS:-0.5}
    mem_limit: ${MEM:-1GiB}
    healthcheck: {test: ["CMD", "true"], retries: "${RETRIES:-5}"}
    ports: [{target: "${TARGET:-80}", published: "${PUBLISHED:-8080}"}]
    environment: {FLAG: "${FLAG:-true}"}
    ulimits: {nofile: "${NOFILE:-20000}", nproc: {soft: "${SOFT:-1024}", hard: "${HARD:-2048}"}}
networks:
  default:
    internal: ${INTERNAL:-false}
    ipam: {config: [{subnet: 10.89.0.0/24}]}
"""


def test_interpolated_values_are_cast_by_their_field_as_compose_go_does(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """compose-go casts a value interpolation changed by its path (interpolateTypeCastMapping):
    `read_only: ${RO:-true}` is true; an environment value stays a string."""
    project = tmp_path / "app"
    project.mkdir()
    for name in ("RO", "PRIV", "PIDS", "SHARES", "CPUS", "MEM", "RETRIES", "TARGET", "PUBLISHED", "FLAG", "INTERNAL",
                 "NOFILE", "SOFT", "HARD"):
        monkeypatch.delenv(name, raising=False)
    [stack_file] = load_text(project, TYPED, "compose.yaml")
    web = stack_file.stack.containers["web"]
    assert (web.read_only, web.privileged, web.resources.pids, web.resources.cpus, web.resources.memory,
            web.resources.cpu_shares) == (True, False, 100, 0.5, 1024**3, 512)
    assert web.healthcheck is not None and web.healthcheck.retries == 5
    assert (web.ports[0].host, web.ports[0].container, web.env) == (8080, 80, {"FLAG": "true"})
    assert stack_file.stack.networks["default"].internal is False
    assert {name: (limit.soft, limit.hard) for name, limit in web.ulimits.items()} == {
        "nofile": (20000, 20000), "nproc": (1024, 2048)}
    monkeypatch.setenv("RO", "maybe")
    monkeypatch.setenv("RETRIES", "five")
    monkeypatch.setenv("SHARES", "half")
    assert error_lines(project, {"compose.yaml": TYPED}) == [
        "compose.yaml:4:16: services.web.read_only: expected true or false, got 'maybe' (after interpolation)",
        "compose.yaml:7:17: services.web.cpu_shares: expected an integer, got 'half' (after interpolation)",
        "compose.yaml:10:51: services.web.healthcheck.retries: expected an integer, got 'five' (after "
        "interpolation)"]
