"""Compose files as stack files: which files are Compose files, and their conversion to a
native stack document with everything around it that reads the disk or the environment (the
`.env` file beside it, env_file entries, COMPOSE_PROFILES). Problems are located to
file:line:col at the Compose field (SpecErrors); warnings are located the same way."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from specs.compose_interpolation import Interpolated, interpolate, interpolate_document, parse_env_file
from specs.compose_map import project_name, to_native
from specs.compose_report import Collector, ComposeInvalid, Finding
from specs.compose_service import ComposeContext
from specs.document import Document, Positions, UnreadableText, read_small_text
from specs.errors import SpecError, SpecErrors
from specs.origins import Origins

COMPOSE_FILE_NAMES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")
OVERRIDE_FILE_NAMES = tuple(name.replace(".y", ".override.y") for name in COMPOSE_FILE_NAMES)
"""Files `docker compose` merges over the one above: not merged here, so refused by name rather
than clashing with it as a second file of the same project."""
DOTENV = ".env"
PROFILES_VARIABLE = "COMPOSE_PROFILES"


@dataclass(frozen=True)
class ComposeStack:
    """A Compose file as a native stack document, the Compose field of every native field,
    and the warnings (keys without effect, unset variables) at their place in the file."""

    native: dict[str, object]
    origins: Origins
    warnings: tuple[SpecError, ...]


def is_compose(path: Path, data: object) -> bool:
    """A Compose file by its name, or by its content: `services:` at the top, where a native
    stack has `containers:`."""
    if path.name in COMPOSE_FILE_NAMES + OVERRIDE_FILE_NAMES:
        return True
    return isinstance(data, dict) and "services" in data and "containers" not in data


def convert(path: Path, document: Document, environ: Mapping[str, str] | None = None) -> ComposeStack:
    """The native stack of a Compose file; SpecErrors at the Compose fields when it has none."""
    project_dir, variables = _project(path, environ)
    interpolated = _interpolated(path, document.data, document.positions, variables)
    warnings = [Finding(loc, message) for loc, message in interpolated.warnings]
    profiles = [p.strip() for p in variables.get(PROFILES_VARIABLE, "").split(",") if p.strip()]
    context = ComposeContext(str(project_dir), variables, _read_env_file)
    assert isinstance(interpolated.data, dict)  # the loader hands over mappings only
    try:
        converted = to_native(interpolated.data, context, project_dir.name, profiles)
    except ComposeInvalid as exc:
        raise SpecErrors([_located(str(path), document.positions, f) for f in exc.errors]) from None
    located = sorted((_located(str(path), document.positions, f) for f in warnings + converted.warnings),
                     key=lambda warning: (warning.line, warning.col))
    return ComposeStack(converted.native, converted.origins, tuple(located))


def convert_name(path: Path, document: Document, environ: Mapping[str, str] | None = None) -> ComposeStack:
    """The native stack of a Compose file reduced to its name, the project name as `convert`
    gives it (`down PATH` needs no more): the rest of the file is neither interpolated nor
    mapped, so a file that has become invalid elsewhere still names its project."""
    assert isinstance(document.data, dict)  # the loader hands over mappings only
    written = {key: value for key, value in document.data.items() if key == "name"}
    # `.env` only matters to a name that uses a variable: a broken one elsewhere (a FIFO, a bad
    # line) must not keep `down` from naming the project.
    project_dir, variables = _project(path, environ, dotenv="$" in str(written.get("name", "")))
    interpolated = _interpolated(path, written, document.positions, variables)
    assert isinstance(interpolated.data, dict)
    out, native = Collector(), dict[str, object]()
    project_name(out, native, interpolated.data.get("name"), project_dir.name)
    if out.errors:
        raise SpecErrors([_located(str(path), document.positions, f) for f in out.errors])
    return ComposeStack(native, Origins(out.origins), ())


def _project(path: Path, environ: Mapping[str, str] | None, dotenv: bool = True) -> tuple[Path, dict[str, str]]:
    """The project directory and the variables its files are interpolated with (those of `.env`
    too unless `dotenv` is false)."""
    if path.name in OVERRIDE_FILE_NAMES:
        raise SpecErrors([SpecError(str(path), 1, 1, (), "override files are not merged: docker compose would "
                                                        "merge this one over the Compose file beside it; merge its "
                                                        "services into that file, or rename this one to make it a "
                                                        "project of its own")])
    environment = os.environ if environ is None else environ
    project_dir = path.absolute().parent
    from_dotenv = _dotenv(project_dir / DOTENV, environment) if dotenv else {}
    return project_dir, {**from_dotenv, **environment}


def _interpolated(path: Path, data: object, positions: Positions, variables: Mapping[str, str]) -> Interpolated:
    interpolated = interpolate_document(data, variables)
    if interpolated.errors:
        raise SpecErrors([_located(str(path), positions, Finding(loc, message))
                          for loc, message in interpolated.errors])
    return interpolated


def _located(name: str, positions: Positions, finding: Finding) -> SpecError:
    line, col = positions.locate_key(finding.key) if finding.key is not None else positions.locate(finding.loc)
    return SpecError(name, line, col, finding.loc, finding.message)


def _read_env_file(path: str) -> str:
    """`.env` and env_file entries, with the guards of stack files: a regular file (a FIFO
    would hang validate), at most 1 MiB (`env_file: /dev/zero`), UTF-8."""
    return read_small_text(path, "an env file is a few KiB of KEY=VALUE lines")


def _dotenv(path: Path, environment: Mapping[str, str]) -> dict[str, str]:
    """The variables of the `.env` file beside the Compose file (none without one); a value
    may use the environment and the variables defined above it."""
    try:
        text = _read_env_file(str(path))
    except UnreadableText as exc:
        if exc.missing:
            return {}
        raise SpecErrors([SpecError(str(path), *exc.position, (), exc.message)]) from None
    entries, problems = parse_env_file(text)
    errors = [SpecError(str(path), line, 1, (), message) for line, message in problems]
    variables: dict[str, str] = {}
    for entry in entries:
        if entry.value is None:
            if entry.key in environment:
                variables[entry.key] = environment[entry.key]
            continue
        try:
            variables[entry.key] = interpolate(entry.value, {**variables, **environment}, [])
        except ValueError as exc:
            errors.append(SpecError(str(path), entry.line, 1, (), str(exc)))
    if errors:
        raise SpecErrors(errors)
    return variables

