"""Compose's value syntaxes that the native stack writes differently, parsed (pure): durations
("1m30s"), Docker's byte sizes ("512m", powers of 1024), ports (short syntax with ranges, long
syntax) and bind mounts (short and long syntax).

Each parser returns native values, or raises ValueError with a message a user acts on (or a
SubfieldError when the problem is one key of a long-syntax mapping); the mapper puts it at the
Compose field. Values with no effect here come back as warnings beside the result.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import TypeVar

from specs.errors import quoted
from specs.fields import SubfieldError, describe_value
from specs.tmpfs import to_mode
from specs.units import docker_size

_DURATION_PART_RE = re.compile(r"(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?P<unit>ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": Decimal("1e-9"), "us": Decimal("1e-6"), "µs": Decimal("1e-6"), "ms": Decimal("0.001"),
                   "s": Decimal(1), "m": Decimal(60), "h": Decimal(3600)}
_PORT_NUMBERS_RE = re.compile(r"(?P<first>[0-9]{1,5})(?:-(?P<last>[0-9]{1,5}))?")
PROTOCOLS = ("tcp", "udp")
MAX_PORT_RANGE = 1024
"""Ports one `ports:` entry may publish: a range is one native port each (a rule each in the
kernel), and `1-65535:1-65535` would make 65535 of them from 15 characters."""
MAX_PUBLISHED_PORTS = 4096
"""Ports a Compose file may publish in all (each is checked against every other for clashes)."""
T = TypeVar("T")


@dataclass(frozen=True)
class Parsed:
    """Native values (one Compose entry may give several: a port range) and warnings about
    parts of the entry that have no effect here."""

    values: list[dict[str, object]]
    warnings: list[str] = field(default_factory=list)
    into: str | None = None
    """The native list the values go to, when not the one of the Compose key (a volume of
    `type: tmpfs` is a native `tmpfs` entry)."""


def duration_seconds(value: object) -> float:
    """Go's duration syntax, as Compose reads `stop_grace_period`: "10s", "1m30s", "500ms"."""
    text = value.strip() if isinstance(value, str) else None
    if text == "0":
        return 0.0
    position, total = 0, Decimal(0)
    for match in _DURATION_PART_RE.finditer(text or ""):
        if match.start() != position:
            break
        total += Decimal(match["number"]) * _DURATION_UNITS[match["unit"]]
        position = match.end()
    if not text or position != len(text):
        raise ValueError(f"expected a duration like '10s', '1m30s' or '500ms', got {describe_value(value)}")
    return float(total)


def docker_bytes(value: object) -> int:
    """Docker's sizes (`mem_limit`, `deploy.resources.limits.memory`): bytes, or b k m g t p
    (powers of 1024, with or without a trailing i and b: 1g, 1gb, 1GiB; any case)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    size = docker_size(value) if isinstance(value, str) else None
    if size is None:
        raise ValueError(f"expected a size like '512m', '1g' or a number of bytes, got {describe_value(value)}")
    return size


def number(value: object, what: str) -> float:
    """A number Compose accepts as text too (`cpus: "0.5"`, an interpolated value)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    try:
        return float(Decimal(value.strip())) if isinstance(value, str) else _no_number(value, what)
    except InvalidOperation:
        return _no_number(value, what)


def integer(value: object, what: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    raise ValueError(f"expected {what}, got {describe_value(value)}")


def _no_number(value: object, what: str) -> float:
    raise ValueError(f"expected {what}, got {describe_value(value)}")


def _port_range(text: str, spec: str) -> list[int]:
    match = _PORT_NUMBERS_RE.fullmatch(text)
    if match is None:
        raise ValueError(f"invalid port {quoted(text)} in {quoted(spec)}")
    first, last = int(match["first"]), int(match["last"] or match["first"])
    if last < first:
        raise ValueError(f"port range {quoted(text)} is backwards in {quoted(spec)}")
    return list(range(first, last + 1))


def _published(host: str, container: str, spec: str) -> list[tuple[int, int]]:
    """(host, container) pairs: ranges pair up one to one, as Compose publishes them."""
    if not host:
        raise ValueError(f"publishing on a random host port is not supported, got {quoted(spec)}: "
                         "write HOST:CONTAINER")
    hosts, containers = _port_range(host, spec), _port_range(container, spec)
    if len(hosts) != len(containers):
        raise ValueError(f"host and container port ranges differ in length in {quoted(spec)}")
    if len(hosts) > MAX_PORT_RANGE:
        raise ValueError(f"a range of {len(hosts)} ports in {quoted(spec)}: an entry publishes at most "
                         f"{MAX_PORT_RANGE} ports")
    return list(zip(hosts, containers))


def _protocol(text: str, spec: str) -> str:
    if text not in PROTOCOLS:
        raise ValueError(f"unsupported protocol {quoted(text)} in {quoted(spec)}: use tcp or udp")
    return text


def _port_entries(pairs: list[tuple[int, int]], protocol: str | None, host_ip: str | None) -> list[dict[str, object]]:
    extra: dict[str, object] = {}
    if protocol is not None:
        extra["protocol"] = protocol
    if host_ip:
        extra["host_ip"] = host_ip
    return [{"host": host, "container": container, **extra} for host, container in pairs]


def _ipv6_host_address(shown: str) -> str:
    """Why a port cannot be published on one IPv6 host address, and what works instead."""
    return (f"IPv6 host addresses are not supported, got {quoted(shown)}: leave the address out, and the port "
            "is published on every host address, the IPv6 ones too for a container with an IPv6 address")


def short_port(value: object) -> Parsed:
    """`[IP:]HOST:CONTAINER[/PROTOCOL]`, each port a number or a range (`8000-8001:80-81`)."""
    spec = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(spec, str):
        raise ValueError(f"expected a port like '8080:80' or a mapping, got {describe_value(value)}")
    ports, _, protocol = spec.strip().partition("/")
    if ports.startswith("[") or ports.count(":") > 2:
        raise ValueError(_ipv6_host_address(spec))
    parts = ports.split(":")
    host_ip = parts[0] if len(parts) == 3 else None
    host = parts[-2] if len(parts) >= 2 else ""
    pairs = _published(host, parts[-1], spec)
    return Parsed(_port_entries(pairs, _protocol(protocol, spec) if protocol else None, host_ip))


LONG_PORT_KEYS = ("target", "published", "host_ip", "protocol", "mode", "name", "app_protocol")


def long_port(value: Mapping[str, object]) -> Parsed:
    """`{target, published, host_ip, protocol, mode, name, app_protocol}`."""
    unknown = [key for key in value if key not in LONG_PORT_KEYS]
    if unknown:
        raise SubfieldError((unknown[0],), f"unknown field {quoted(str(unknown[0]))}")
    if "target" not in value:
        raise ValueError("missing required field 'target'")
    target = _subfield("target", lambda: str(integer(value["target"], "a port number")))
    published = value.get("published")
    if published is None:
        raise ValueError("missing required field 'published': publishing on a random host port is not supported")
    published_text = str(published) if isinstance(published, int) and not isinstance(published, bool) else published
    if not isinstance(published_text, str):
        raise SubfieldError(("published",), f"expected a port or a range like '8000-8001', "
                                            f"got {describe_value(published)}")
    spec = f"{published_text}:{target}"
    pairs = _subfield("published", lambda: _published(published_text, target, spec))
    protocol = value.get("protocol")
    if protocol is not None:
        _subfield("protocol", lambda: _protocol(str(protocol), str(protocol)))
    host_ip = value.get("host_ip")
    if host_ip is not None and not isinstance(host_ip, str):
        raise SubfieldError(("host_ip",), f"expected an IPv4 address, got {describe_value(host_ip)}")
    if host_ip is not None and ":" in host_ip:
        raise SubfieldError(("host_ip",), _ipv6_host_address(host_ip))
    if value.get("mode", "ingress") not in ("ingress", "host"):
        raise SubfieldError(("mode",), f"expected host or ingress, got {describe_value(value['mode'])}")
    warnings = [f"{key} has no effect here" for key in ("name", "app_protocol") if key in value]
    return Parsed(_port_entries(pairs, protocol if isinstance(protocol, str) else None, host_ip), warnings)


def _subfield(key: str, parse: Callable[[], T]) -> T:
    """Run a parser of one key of a long-syntax mapping; its error is at that key."""
    try:
        return parse()
    except ValueError as exc:
        raise SubfieldError((key,), str(exc)) from None


_NO_EFFECT_MODES = ("z", "Z", "cached", "delegated", "consistent")
"""SELinux relabelling and Docker Desktop's file sharing hints: nothing to do on this host."""


def host_source(source: str, project_dir: str, home: str | None) -> str | None:
    """A bind mount's source as an absolute path (relative ones from the Compose file's
    directory, `~` from $HOME), or None when it names a volume."""
    if source.startswith("/"):
        return source
    if source == "." or source.startswith(("./", "../")) or source == "..":
        return posixpath.normpath(posixpath.join(project_dir, source))
    if source == "~" or source.startswith("~/"):
        if not home:
            raise ValueError(f"cannot expand {quoted(source)}: HOME is not set")
        return posixpath.normpath(home + source[1:])
    return None


def short_volume(value: object, project_dir: str, home: str | None) -> Parsed:
    """`SOURCE:TARGET[:MODES]` (modes comma-separated: ro, rw, and hints with no effect)."""
    if not isinstance(value, str):
        raise ValueError(f"expected 'SOURCE:TARGET[:ro]' or a mapping, got {describe_value(value)}")
    parts = value.split(":")
    if len(parts) == 1:
        raise ValueError(f"anonymous volumes are not supported, got {quoted(value)}: name the volume "
                         "(NAME:TARGET, NAME declared in the top-level volumes) or mount a host directory "
                         "(SOURCE:TARGET)")
    if len(parts) > 3:
        raise ValueError(f"expected 'SOURCE:TARGET[:MODE]', got {quoted(value)}")
    source = host_source(parts[0], project_dir, home)
    created = source is not None  # the short syntax makes a missing host directory, as docker -v
    if source is None:
        source = parts[0]  # a named volume: the native model checks the name and that it is declared
    read_only, warnings = False, []
    for mode in (parts[2].split(",") if len(parts) == 3 else []):
        if mode in ("ro", "rw"):
            read_only = mode == "ro"
        elif mode in _NO_EFFECT_MODES:
            warnings.append(f"volume mode {quoted(mode)} has no effect here")
        else:
            raise ValueError(f"unsupported volume mode {quoted(mode)} in {quoted(value)}: use ro or rw")
    entry: dict[str, object] = {"source": source, "target": parts[1]}
    if read_only:
        entry["read_only"] = True
    if created:
        entry["create_host_path"] = True
    return Parsed([entry], warnings)


LONG_VOLUME_KEYS = ("type", "source", "target", "read_only", "bind", "consistency", "volume", "tmpfs")


def long_volume(value: Mapping[str, object], project_dir: str, home: str | None) -> Parsed:
    """`{type: bind|volume|tmpfs, source, target, read_only, bind: {...}, volume: {...},
    tmpfs: {...}}`; other types are refused."""
    unknown = [key for key in value if key not in LONG_VOLUME_KEYS]
    if unknown:
        raise SubfieldError((unknown[0],), f"unknown field {quoted(str(unknown[0]))}")
    kind = value.get("type")
    if kind == "volume":
        return _long_named_volume(value)
    if kind == "tmpfs":
        return _long_tmpfs(value)
    if kind != "bind":
        raise SubfieldError(("type",), f"volume type {describe_value(kind)} is not supported: use type: bind, "
                                       "type: volume or type: tmpfs")
    for key in ("source", "target"):
        if not isinstance(value.get(key), str):
            raise SubfieldError((key,) if key in value else (), f"missing required field '{key}'"
                                if key not in value else f"expected a path, got {describe_value(value[key])}")
    source = _subfield("source", lambda: host_source(str(value["source"]), project_dir, home))
    if source is None:
        raise SubfieldError(("source",), f"expected an absolute path or one starting with ./, "
                                         f"got {quoted(str(value['source']))}")
    entry: dict[str, object] = {"source": source, "target": value["target"]}
    if "read_only" in value:
        entry["read_only"] = value["read_only"]
    warnings = _bind_warnings(value)
    bind = value.get("bind")
    if isinstance(bind, dict) and "create_host_path" in bind:
        entry["create_host_path"] = bind["create_host_path"]
    return Parsed([entry], warnings)


def _long_named_volume(value: Mapping[str, object]) -> Parsed:
    """`{type: volume, source: NAME, target, read_only, volume: {nocopy, subpath}}`."""
    if value.get("source") is None:
        raise SubfieldError(("type",), "anonymous volumes are not supported: name the volume in source: "
                                       "(declared in the top-level volumes)")
    if "target" not in value:
        raise SubfieldError((), "missing required field 'target'")
    options = value.get("volume") or {}
    if not isinstance(options, dict):
        raise SubfieldError(("volume",), f"expected a mapping, got {describe_value(options)}")
    for key, option in options.items():
        if key == "nocopy" and option is True:
            raise SubfieldError(("volume", key), "nocopy is not supported: a new volume is filled with what "
                                                 "the image holds at the mount point, as Docker does by default")
        if key == "subpath":
            raise SubfieldError(("volume", key), "subpath is not supported: mount the whole volume")
        if key != "nocopy":
            raise SubfieldError(("volume", key), f"unknown field {quoted(str(key))}")
    for key in ("bind", "tmpfs"):
        if key in value:
            raise SubfieldError((key,), f"{key} options do not apply to type: volume")
    entry: dict[str, object] = {"source": value["source"], "target": value["target"]}
    if "read_only" in value:
        entry["read_only"] = value["read_only"]
    return Parsed([entry], ["consistency has no effect here"] if "consistency" in value else [])


def _long_tmpfs(value: Mapping[str, object]) -> Parsed:
    """`{type: tmpfs, target, read_only, tmpfs: {size, mode}}` (compose-go's ServiceVolumeTmpfs):
    a native tmpfs entry. A size as Docker writes sizes (0: none given, as compose-go reads it);
    the mode a number (YAML's 0o1777), or octal digits as text."""
    if "source" in value:
        raise SubfieldError(("source",), "a tmpfs has no source: leave source out")
    if "target" not in value:
        raise SubfieldError((), "missing required field 'target'")
    for key in ("bind", "volume"):
        if key in value:
            raise SubfieldError((key,), f"{key} options do not apply to type: tmpfs")
    options = value.get("tmpfs") or {}
    if not isinstance(options, dict):
        raise SubfieldError(("tmpfs",), f"expected a mapping, got {describe_value(options)}")
    entry: dict[str, object] = {"target": value["target"]}
    for key, option in options.items():
        if key not in ("size", "mode"):
            raise SubfieldError(("tmpfs", key), f"unknown field {quoted(str(key))}")
        try:
            parsed = to_mode(option) if key == "mode" else docker_bytes(option)
        except ValueError as exc:
            raise SubfieldError(("tmpfs", key), str(exc)) from None
        if key == "mode":
            entry[key] = format(parsed, "o")  # as the native file writes it: "750", not 488
        elif parsed:
            entry[key] = parsed
    if "read_only" in value:
        entry["read_only"] = value["read_only"]
    return Parsed([entry], ["consistency has no effect here"] if "consistency" in value else [], into="tmpfs")


def _bind_warnings(value: Mapping[str, object]) -> list[str]:
    options = value.get("bind")
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise SubfieldError(("bind",), f"expected a mapping, got {describe_value(options)}")
    for key, option in options.items():
        if key == "propagation" and option not in ("rprivate", "private"):
            raise SubfieldError(("bind", key), f"mount propagation {describe_value(option)} is not supported")
        if key not in ("propagation", "create_host_path", "selinux"):
            raise SubfieldError(("bind", key), f"unknown field {quoted(str(key))}")
    warnings = ["bind.selinux has no effect here"] if "selinux" in options else []
    return warnings + (["consistency has no effect here"] if "consistency" in value else [])
