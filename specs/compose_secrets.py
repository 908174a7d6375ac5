"""Compose `secrets` and `configs` without Swarm, as docker compose runs them: each declared
`file:` is bind-mounted read-only into the services that list it, at /run/secrets/NAME (a
secret) or /NAME (a config), or at the entry's `target`. The entries become native bind volumes;
their sources that are missing are the native stack's error (checked before anything changes).

A secret or config from `environment:` or `content:`, or an `external` one, has no file to
mount: an error at its key. `uid`, `gid` and `mode` have no effect on a bind mount (the file
keeps its own owner and mode, as with docker compose, which warns too)."""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass

from specs.compose_report import Collector
from specs.compose_values import Parsed, host_source
from specs.errors import Loc, quoted
from specs.fields import SubfieldError, describe_value


@dataclass(frozen=True)
class FileKind:
    section: str  # the top-level key and the service key: "secrets" or "configs"
    singular: str
    directory: str  # where a relative target, or the name itself, is mounted

    def target(self, name: str) -> str:
        return posixpath.normpath(posixpath.join(self.directory, name))


SECRETS = FileKind("secrets", "secret", "/run/secrets")
CONFIGS = FileKind("configs", "config", "/")
KINDS = (SECRETS, CONFIGS)

_NO_FILE = {
    "environment": "has no file to mount here: write the value to a file and name it in file:",
    "content": "has no file to mount here: write the content to a file and name it in file:",
    "external": "an external {singular} is Swarm's: declare it with file:",
    "driver": "is Swarm's: declare the {singular} with file:",
    "driver_opts": "is Swarm's: declare the {singular} with file:",
    "template_driver": "is Swarm's: declare the {singular} with file:",
}
_NO_EFFECT_DECLARED = {
    "name": "has no effect here: the file is mounted under the name the service gives it",
    "labels": "has no effect here: reconcile keeps no labels",
}
_ENTRY_KEYS = ("source", "target", "uid", "gid", "mode")
_IGNORED_BY_BIND = ("uid", "gid", "mode")


Files = Mapping[str, str | None]
"""A kind's declared names: each one's host file, or None for one declared without a file that
can be mounted (its declaration's error says why; a service listing it adds none)."""


def declared_files(out: Collector, kind: FileKind, declared: object, project_dir: str,
                   home: str | None) -> dict[str, str | None]:
    """The top-level `secrets` or `configs`: each name's host file, an absolute path (a relative
    `file:` from the Compose file's directory, `~` from $HOME, as docker compose reads it)."""
    files: dict[str, str | None] = {}
    if declared is None:
        return files
    if not isinstance(declared, dict):
        out.error((kind.section,), f"expected a mapping of {kind.singular} name to {kind.singular}, "
                                   f"got {describe_value(declared)}")
        return files
    for name, body in declared.items():
        loc: Loc = (kind.section, str(name))
        files[str(name)] = None
        if not isinstance(body, dict):
            out.error(loc, f"expected a mapping (file: PATH), got {describe_value(body)}")
            continue
        for key in body:
            if key in _NO_FILE:
                out.key_error(loc + (key,), _NO_FILE[key].format(singular=kind.singular))
            elif key in _NO_EFFECT_DECLARED:
                out.key_warning(loc + (key,), _NO_EFFECT_DECLARED[key])
            elif key != "file" and not str(key).startswith("x-"):
                out.unknown(loc + (str(key),), ("file", *_NO_FILE, *_NO_EFFECT_DECLARED))
        path = body.get("file")
        if isinstance(path, str) and path:
            try:
                files[str(name)] = host_source(path, project_dir, home) or posixpath.normpath(
                    posixpath.join(project_dir, path))
            except ValueError as exc:
                out.error(loc + ("file",), str(exc))
        elif "file" in body:
            out.error(loc + ("file",), f"expected a path, got {describe_value(path)}")
        elif not any(key in _NO_FILE for key in body):
            out.error(loc, f"missing required field 'file': the file to mount into the services that list the "
                           f"{kind.singular}")
    return files


def short_entry(kind: FileKind, files: Files, taken: set[str], value: object) -> Parsed:
    """`- NAME`: the declared file at the kind's place, under its name. `taken`: the targets the
    service mounts already (its volumes, the entries before), to which this one's is added."""
    if not isinstance(value, str):
        raise ValueError(f"expected a {kind.singular} name or a mapping (source, target), got {describe_value(value)}")
    return _mount(kind, files, taken, value, kind.target(value), ())


def long_entry(kind: FileKind, files: Files, taken: set[str], value: Mapping[str, object]) -> Parsed:
    """`{source, target, uid, gid, mode}`: a relative target is under the kind's place."""
    for key in value:
        if key not in _ENTRY_KEYS:
            raise SubfieldError((str(key),), f"unknown field {quoted(str(key))}")
    source = value.get("source")
    if not isinstance(source, str):
        raise SubfieldError(("source",) if "source" in value else (),
                            f"expected a {kind.singular} name, got {describe_value(source)}" if "source" in value
                            else "missing required field 'source'")
    target = value.get("target", source)
    if not isinstance(target, str) or not target:
        raise SubfieldError(("target",), f"expected a path, got {describe_value(target)}")
    mounted = _mount(kind, files, taken, source, kind.target(target), ("source",))
    ignored = [f"{key} has no effect here: the file is bind-mounted with its own owner and mode, as docker compose "
               "does with a file" for key in _IGNORED_BY_BIND if key in value]
    return Parsed(mounted.values, ignored + mounted.warnings)


def _mount(kind: FileKind, files: Files, taken: set[str], name: str, target: str, at: Loc) -> Parsed:
    """The entry's read-only bind volume; none for a target mounted already (docker compose too
    leaves it out: the service's own volume there stays, or the first entry)."""
    if name not in files:
        declared = ", ".join(sorted(files)) or "none"
        raise SubfieldError(at, f"{kind.singular} {quoted(name)} is not declared in the top-level {kind.section} "
                                f"(declared: {declared})")
    source = files[name]
    if source is None:
        return Parsed([])
    if target in taken:
        return Parsed([], [f"left out: {target} is mounted already by this service (docker compose leaves it out "
                           "too)"])
    taken.add(target)
    return Parsed([{"source": source, "target": target, "read_only": True}])
