"""Compose's variable interpolation and its `.env` file syntax (pure: handed the variables).

`$VAR`, `${VAR}`, `${VAR:-default}` (unset or empty), `${VAR-default}` (unset),
`${VAR:?message}` / `${VAR?message}` (an error when unset, or empty too with the colon),
`${VAR:+other}` / `${VAR+other}`, and `$$` for a literal `$`; defaults nest
(`${A:-${B}}`). As Compose does, an unset variable without a default is a blank string and a
warning, and only values are interpolated, never keys.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from specs.errors import Loc, quoted

_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPERATORS = (":-", ":?", ":+", "-", "?", "+")
_ENV_LINE_RE = re.compile(r"(?:export\s+)?(?P<key>[A-Za-z_][A-Za-z0-9_.-]*)\s*(?:=\s*(?P<value>.*))?")
_DOUBLE_QUOTED_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\", "$": "$$"}


@dataclass
class Interpolated:
    """A document with every string value interpolated; problems by the path of the value."""

    data: object
    errors: list[tuple[Loc, str]] = field(default_factory=list)
    warnings: list[tuple[Loc, str]] = field(default_factory=list)


def interpolate_document(data: object, variables: Mapping[str, str], loc: Loc = (),
                         out: Interpolated | None = None) -> Interpolated:
    """Every string value below `data` interpolated (keys are left as written)."""
    result = out if out is not None else Interpolated(None)
    if isinstance(data, dict):
        value: object = {key: interpolate_document(item, variables, loc + (str(key),), result).data
                         for key, item in data.items()}
    elif isinstance(data, list):
        value = [interpolate_document(item, variables, loc + (index,), result).data for index, item in enumerate(data)]
    elif isinstance(data, str) and "$" in data:
        unset: list[str] = []
        try:
            value = interpolate(data, variables, unset)
            if value != data:
                value = _cast(loc, value)
        except ValueError as exc:
            result.errors.append((loc, str(exc)))
            value = data
        result.warnings += [(loc, f"variable {name} is not set: it is read as a blank string") for name in unset]
    else:
        value = data
    result.data = value
    return result


def _boolean(text: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise ValueError(f"expected true or false, got {quoted(text)} (after interpolation)")
    return text.lower() == "true"


def _integer(text: str) -> int:
    try:
        return int(text.strip(), 10)
    except ValueError:
        raise ValueError(f"expected an integer, got {quoted(text)} (after interpolation)") from None


def _float(text: str) -> float:
    try:
        return float(text.strip())
    except ValueError:
        raise ValueError(f"expected a number, got {quoted(text)} (after interpolation)") from None


ANY = "*"
"""In a path of CASTS: any key or index."""

CASTS: dict[tuple[str, ...], Callable[[str], object]] = {
    ("services", ANY, "read_only"): _boolean,
    ("services", ANY, "privileged"): _boolean,
    ("services", ANY, "init"): _boolean,
    ("services", ANY, "tty"): _boolean,
    ("services", ANY, "stdin_open"): _boolean,
    ("services", ANY, "oom_kill_disable"): _boolean,
    ("services", ANY, "healthcheck", "disable"): _boolean,
    ("services", ANY, "healthcheck", "retries"): _integer,
    ("services", ANY, "pids_limit"): _integer,
    ("services", ANY, "cpu_shares"): _integer,
    ("services", ANY, "scale"): _integer,
    ("services", ANY, "ulimits", ANY): _integer,
    ("services", ANY, "ulimits", ANY, "soft"): _integer,
    ("services", ANY, "ulimits", ANY, "hard"): _integer,
    ("services", ANY, "cpus"): _float,
    ("services", ANY, "ports", ANY, "target"): _integer,
    ("services", ANY, "deploy", "replicas"): _integer,
    ("services", ANY, "deploy", "restart_policy", "max_attempts"): _integer,
    ("services", ANY, "depends_on", ANY, "required"): _boolean,
    ("services", ANY, "depends_on", ANY, "restart"): _boolean,
    ("services", ANY, "env_file", ANY, "required"): _boolean,
    ("services", ANY, "volumes", ANY, "read_only"): _boolean,
    ("services", ANY, "volumes", ANY, "bind", "create_host_path"): _boolean,
    ("services", ANY, "volumes", ANY, "volume", "nocopy"): _boolean,
    ("networks", ANY, "external"): _boolean,
    ("networks", ANY, "internal"): _boolean,
    ("networks", ANY, "attachable"): _boolean,
    ("networks", ANY, "enable_ipv6"): _boolean,
    ("volumes", ANY, "external"): _boolean,
}
"""Fields that are not strings, by path: an interpolated value there is cast, as compose-go
casts it (loader/interpolate.go interpolateTypeCastMapping), so `read_only: ${RO:-true}` is
true, not the string 'true'. A value written without a variable is never cast."""


def _cast(loc: Loc, value: str) -> object:
    """An interpolated value, cast to what its field holds (ValueError when it cannot be)."""
    for path, cast in CASTS.items():
        if len(path) == len(loc) and all(part in (ANY, step) for part, step in zip(path, loc)):
            return cast(value)
    return value


def interpolate(text: str, variables: Mapping[str, str], unset: list[str]) -> str:
    """`text` with its variables replaced; names used unset without a default go to `unset`;
    ValueError for a malformed reference or a `?` whose variable is missing."""
    out: list[str] = []
    position = 0
    while True:
        start = text.find("$", position)
        if start < 0:
            return "".join(out) + text[position:]
        out.append(text[position:start])
        after = text[start + 1:start + 2]
        if after == "$":
            out.append("$")
            position = start + 2
        elif after == "{":
            end = _closing_brace(text, start + 2)
            out.append(_substitute(text[start + 2:end], text, variables, unset))
            position = end + 1
        else:
            name = _NAME_RE.match(text, start + 1)
            if name is None:
                raise ValueError(f"invalid interpolation in {quoted(text)}: write $$ for a literal $")
            out.append(_lookup(name.group(), variables, unset))
            position = name.end()


def _closing_brace(text: str, start: int) -> int:
    depth = 1
    for index in range(start, len(text)):
        if text.startswith("${", index):
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return index
    raise ValueError(f"invalid interpolation in {quoted(text)}: '${{' without its '}}'")


def _lookup(name: str, variables: Mapping[str, str], unset: list[str]) -> str:
    if name not in variables:
        unset.append(name)
        return ""
    return variables[name]


def _substitute(inner: str, text: str, variables: Mapping[str, str], unset: list[str]) -> str:
    """The value of one `${...}`."""
    name = _NAME_RE.match(inner)
    if name is None:
        raise ValueError(f"invalid interpolation in {quoted(text)}: expected a variable name after '${{'")
    rest = inner[name.end():]
    if not rest:
        return _lookup(name.group(), variables, unset)
    operator = next((op for op in _OPERATORS if rest.startswith(op)), None)
    if operator is None:
        raise ValueError(f"invalid interpolation in {quoted(text)}: unknown modifier {quoted(rest)}")
    argument = rest[len(operator):]
    value = variables.get(name.group())
    missing = value is None or (operator.startswith(":") and value == "")
    if operator.endswith("-"):
        return interpolate(argument, variables, unset) if missing else str(value)
    if operator.endswith("+"):
        return "" if missing else interpolate(argument, variables, unset)
    if missing:
        reason = interpolate(argument, variables, unset) or f"variable {name.group()} is required"
        raise ValueError(f"{reason} ({'unset or empty' if operator == ':?' else 'unset'}: {name.group()})")
    return str(value)


@dataclass(frozen=True)
class EnvLine:
    line: int
    key: str
    value: str | None
    """None: `KEY` alone, which takes the variable from the environment if it is set."""


def parse_env_file(text: str) -> tuple[list[EnvLine], list[tuple[int, str]]]:
    """Compose's dotenv syntax: `KEY=VALUE` lines, `export ` allowed, `#` comments; values
    unquoted (an inline ` #` starts a comment), 'single-quoted' (literal) or "double-quoted"
    (escapes). Unquoted and double-quoted values are returned as templates to interpolate
    (a single-quoted one with its `$` doubled, so interpolation leaves it as written)."""
    entries: list[EnvLine] = []
    errors: list[tuple[int, str]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _ENV_LINE_RE.fullmatch(line)
        if match is None:
            errors.append((number, f"expected KEY=VALUE, got {quoted(line)}"))
            continue
        value = match["value"]
        try:
            entries.append(EnvLine(number, match["key"], None if value is None else _env_value(value)))
        except ValueError as exc:
            errors.append((number, str(exc)))
    return entries, errors


def _env_value(value: str) -> str:
    if value.startswith("'"):
        end = value.find("'", 1)
        if end < 0:
            raise ValueError("unterminated single-quoted value")
        return value[1:end].replace("$", "$$")
    if value.startswith('"'):
        out, index = [], 1
        while index < len(value) and value[index] != '"':
            if value[index] == "\\" and index + 1 < len(value):
                escaped = value[index + 1]
                out.append(_DOUBLE_QUOTED_ESCAPES.get(escaped, "\\" + escaped))
                index += 2
            else:
                out.append(value[index])
                index += 1
        if index >= len(value):
            raise ValueError("unterminated double-quoted value")
        return "".join(out)
    comment = re.search(r"\s#", value)
    return (value[:comment.start()] if comment else value).strip()


def parse_raw_env_file(text: str) -> tuple[list[EnvLine], list[tuple[int, str]]]:
    """`env_file` with `format: raw`, read as docker compose reads it (docker run --env-file's
    parser, docker/cli kvfile): `KEY=VALUE` lines whose value is everything after the first
    `=`, verbatim (quotes, `$`, trailing blanks); blank and `#` lines skipped; `KEY` alone
    from the environment. Values come back as templates with their `$` doubled, so
    interpolation leaves them as written."""
    entries: list[EnvLine] = []
    errors: list[tuple[int, str]] = []
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.removesuffix("\r").lstrip()
        if not line or line.startswith("#"):
            continue
        key, equals, value = line.partition("=")
        key = key.lstrip()
        if not key or any(blank in key for blank in " \t\n\v\f\r"):
            errors.append((number, f"expected KEY=VALUE, got {quoted(line)}"))
            continue
        entries.append(EnvLine(number, key, value.replace("$", "$$") if equals else None))
    return entries, errors
