"""One Compose service as a native container (pure: env files are read through the function the
caller hands in). Every native field records the Compose field it came from; keys that cannot
be honoured are errors and keys without effect are warnings, each at its key."""

from __future__ import annotations

import posixpath
from collections import ChainMap
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import cast

from specs.compose_interpolation import interpolate, parse_env_file, parse_raw_env_file
from specs.compose_keys import (
    NO_EFFECT_ATTACHMENT,
    NO_EFFECT_DEPLOY,
    NO_EFFECT_SERVICE,
    UNSUPPORTED_ATTACHMENT,
    UNSUPPORTED_SERVICE,
)
from specs.compose_report import Collector
from specs.compose_secrets import KINDS, Files, long_entry, short_entry
from specs.compose_values import (
    MAX_PUBLISHED_PORTS,
    Parsed,
    docker_bytes,
    duration_seconds,
    integer,
    long_port,
    long_volume,
    number,
    short_port,
    short_volume,
)
from specs.document import UnreadableText
from specs.errors import Loc, quoted
from specs.fields import SubfieldError, describe_value
from specs.hosts import EXTRA_HOST_TEXT, split_entry, unbracketed
from specs.names import native_key
from specs.units import MIN_CPU_SHARES

DEFAULT_NETWORK = "default"
"""Compose's network for services that list none; always there to be listed, declared or not."""


def uses_default_network(service: Mapping[str, object]) -> bool:
    """Whether the service is on Compose's `default` network: it lists no networks (none,
    `[]`, `{}`), or lists `default`."""
    if service.get("network_mode") is not None:
        return False
    networks = service.get("networks")
    if networks is None or networks == [] or networks == {}:
        return True
    return isinstance(networks, (list, dict)) and any(native_key(name) == DEFAULT_NETWORK for name in networks)

PASSED_AS_WRITTEN = {"image": "image", "entrypoint": "entrypoint", "command": "command", "read_only": "read_only",
                     "privileged": "privileged", "cap_add": "cap_add", "cap_drop": "cap_drop",
                     "security_opt": "security_opt", "working_dir": "workdir", "hostname": "hostname",
                     "user": "user", "healthcheck": "healthcheck", "dns": "dns", "dns_search": "dns_search",
                     "dns_opt": "dns_opt", "ulimits": "ulimits"}
"""Compose key -> native field that reads the same syntax. `healthcheck` and `ulimits` are
native with Compose's syntax (reconcile's health checks; a number, or {soft, hard}, by name)."""

CONVERTED = ("pull_policy", "environment", "env_file", "restart", "networks", "ports", "mem_limit", "cpus",
             "pids_limit", "cpuset", "cpu_shares", "deploy", "volumes", "tmpfs", "shm_size", "depends_on",
             "stop_grace_period", "logging", "stop_signal", "init", "profiles", "extra_hosts", "network_mode",
             "secrets", "configs", "sysctls")
HANDLED = (*PASSED_AS_WRITTEN, *CONVERTED)
KNOWN = (*HANDLED, *UNSUPPORTED_SERVICE, *NO_EFFECT_SERVICE)

_PULL_POLICIES = {"always": "always", "missing": "missing", "if_not_present": "missing", "never": "never"}
_RESTART_POLICIES = {"no": "no", "always": "always", "on-failure": "on-failure", "unless-stopped": "always"}
_RESTART_CONDITIONS = {"none": "no", "no": "no", "on-failure": "on-failure", "any": "always",
                       "always": "always", "unless-stopped": "unless-stopped"}
"""deploy.restart_policy.condition -> restart, as docker compose maps it (Swarm's words and
Docker's)."""
_RESTART_POLICY_KEYS = ("condition", "max_attempts", "delay", "window")
_LOG_DRIVERS = ("json-file", "local")
ENV_FILE_KEYS = ("path", "required", "format")
_LIMIT_KEYS = {"memory": "memory", "cpus": "cpus", "pids": "pids"}
ATTACHMENT_ADDRESSES = {"ipv4_address": "ip", "ipv6_address": "ip6"}
"""A service's static addresses on a network, and the attachment fields they become."""
ATTACHMENT_FIELDS = {**ATTACHMENT_ADDRESSES, "aliases": "aliases"}
"""Every attachment key with a native field, read as written."""


@dataclass(frozen=True)
class ComposeContext:
    """What a Compose file's meaning depends on beyond its text."""

    project_dir: str
    """Absolute directory of the Compose file: relative paths start there."""
    variables: Mapping[str, str]
    """The process environment over the `.env` file: `environment: [KEY]` takes KEY from here."""
    read_text: Callable[[str], str]
    """Reads an env_file (UnreadableText when it cannot)."""


class ServiceMapper:
    def __init__(self, out: Collector, name: str, service: Mapping[str, object], context: ComposeContext,
                 files: Mapping[str, Files]):
        self.out = out
        self.name = name
        self.service = service
        self.context = context
        self.files = files  # the declared secrets' and configs' host files, by section and name
        self.src: Loc = ("services", name)
        self.dst: Loc = ("containers", native_key(name))
        self.container: dict[str, object] = {}

    def map(self) -> dict[str, object]:
        self.out.origins[self.dst] = self.src
        for key in self.service:
            self._classify(str(key))
        self._image()
        for key, native in PASSED_AS_WRITTEN.items():
            if self.service.get(key) is not None:
                self.out.put(self.container, self.dst + (native,),
                             self.out.passthrough(self.dst + (native,), self.src + (key,), self.service[key]),
                             self.src + (key,))
        self._pull_policy()
        self._env()
        self._restart()
        self._networks()
        self._extra_hosts()
        self._ports()
        self._resources()
        self._tmpfs()
        self._volumes()
        self._mounted_files()
        self._sysctls()
        self._depends_on()
        self._stop()
        self._logging()
        return self.container

    def _classify(self, key: str) -> None:
        loc = self.src + (key,)
        if key in HANDLED or key.startswith("x-"):
            return
        if key in UNSUPPORTED_SERVICE:
            self.out.key_error(loc, UNSUPPORTED_SERVICE[key])
        elif key in NO_EFFECT_SERVICE:
            self.out.key_warning(loc, NO_EFFECT_SERVICE[key])
        elif key == "scale":
            if self.service[key] != 1:
                self.out.key_error(loc, "more than one replica is not supported: declare each container")
        else:
            self.out.unknown(loc, KNOWN)

    def _image(self) -> None:
        """A native container without an image runs on the host's own root (read-only, but the
        host's /etc all the same): never what a service without `image:` means. Compose refuses
        it too (compose-go checkConsistency: "has neither an image nor a build context
        specified"); with `build:`, that key's own error already says to name the image."""
        if self.service.get("image") is None and "build" not in self.service:
            self.out.error(self.src, f"service {quoted(str(self.src[-1]))} has no image: name the image to run in "
                                     "image: (docker compose too refuses a service with neither an image nor a "
                                     "build context)")

    def _set(self, native: str, value: object, key: str) -> None:
        self._set_from(native, value, self.src + (key,))

    def _set_from(self, native: str, value: object, source: Loc) -> None:
        self.out.put(self.container, self.dst + (native,), value, source)

    def _pull_policy(self) -> None:
        policy = self.service.get("pull_policy")
        if policy is None:
            return
        if policy in ("daily", "weekly") or (isinstance(policy, str) and policy.startswith("every_")):
            self.out.warn(self.src + ("pull_policy",), f"{quoted(policy)} is read as 'missing': pull the "
                                                       "image again with reconcile apply --pull")
            policy = "missing"
        if policy == "build":
            self.out.error(self.src + ("pull_policy",), "building images is not supported")
            return
        self._set("pull", _PULL_POLICIES.get(policy, policy) if isinstance(policy, str) else policy, "pull_policy")

    def _env(self) -> None:
        """env_file entries first, in order, then `environment`, which wins (as Compose)."""
        env: dict[str, object] = {}
        self.out.origins[self.dst + ("env",)] = self.src
        files = self.service.get("env_file")
        loc = self.src + ("env_file",)
        if isinstance(files, list):
            for index, entry in enumerate(files):
                self._env_file(env, entry, loc + (index,))
        elif isinstance(files, (str, dict)):
            self._env_file(env, files, loc)
        elif files is not None:
            self.out.error(loc, f"expected a path, a list of paths or {{path, required}}, got {describe_value(files)}")
        self._environment(env)
        if env:
            self.container["env"] = env

    def _env_file(self, env: dict[str, object], entry: object, loc: Loc) -> None:
        """One env_file entry into `env`. A value may use the variables of the lines above it
        and of the files before it, then the environment (compose-go: dotenv.expandVariables
        and the resolver of WithServicesEnvironmentResolved)."""
        path, required, raw = entry, True, False
        if isinstance(entry, dict):
            for key in entry:
                if key not in ENV_FILE_KEYS:
                    self.out.unknown(loc + (str(key),), ENV_FILE_KEYS)
            path, required, file_format = entry.get("path"), entry.get("required", True), entry.get("format")
            if file_format is not None and file_format != "raw":
                self.out.error(loc + ("format",), "expected raw (each line's value verbatim), or no format "
                                                  f"(Compose's own syntax), got {describe_value(file_format)}")
                return
            raw = file_format == "raw"
        if not isinstance(path, str) or not isinstance(required, bool):
            self.out.error(loc, f"expected a path or {{path, required, format}}, got {describe_value(entry)}")
            return
        full = path if path.startswith("/") else f"{self.context.project_dir}/{path}"
        try:
            text = self.context.read_text(full)
        except UnreadableText as exc:
            if required or not exc.missing:
                where = f"{path} line {exc.position[0]}" if exc.position[0] else f"env_file {quoted(path)}"
                self.out.error(loc, f"cannot read {where}: {exc.message.removeprefix('cannot read the file: ')}")
            return
        entries, errors = parse_raw_env_file(text) if raw else parse_env_file(text)
        for line, message in errors:
            self.out.error(loc, f"{path} line {line}: {message}")
        # env holds the env files' values alone so far (strings): they come before the environment
        lookup = ChainMap(cast(dict[str, str], env), dict(self.context.variables))
        for item in entries:
            value = lookup.get(item.key) if item.value is None else self._expand(item.value, loc, lookup)
            if value is not None:
                self.out.put(env, self.dst + ("env", item.key), value, loc)

    def _expand(self, template: str, loc: Loc, variables: Mapping[str, str] | None = None) -> str | None:
        unset: list[str] = []
        try:
            value = interpolate(template, self.context.variables if variables is None else variables, unset)
        except ValueError as exc:
            self.out.error(loc, str(exc))
            return None
        for name in unset:
            self.out.warn(loc, f"variable {name} is not set: it is read as a blank string")
        return value

    def _environment(self, env: dict[str, object]) -> None:
        environment = self.service.get("environment")
        loc = self.src + ("environment",)
        if isinstance(environment, list):
            for index, item in enumerate(environment):
                if not isinstance(item, str):
                    self.out.error(loc + (index,), f"expected 'KEY=VALUE' or 'KEY', got {describe_value(item)}")
                    continue
                key, equals, value = item.partition("=")
                self._env_value(env, key, value if equals else None, loc + (index,))
        elif isinstance(environment, dict):
            for key, value in environment.items():
                self._env_value(env, str(key), value, loc + (str(key),))
        elif environment is not None:
            self.out.error(loc, f"expected a list of 'KEY=VALUE' or a mapping, got {describe_value(environment)}")

    def _env_value(self, env: dict[str, object], key: str, value: object, loc: Loc) -> None:
        """A value left out (`KEY`, `KEY:` with nothing) comes from the environment, if set."""
        if value is None:
            value = self.context.variables.get(key)
            if value is None:
                env.pop(key, None)
                return
        elif isinstance(value, bool):
            value = str(value).lower()
        elif isinstance(value, (int, float)):
            value = str(value)
        self.out.put(env, self.dst + ("env", key), value, loc)

    def _restart(self) -> None:
        """Compose's default is no restart (Docker's `--restart no`), where the native default is
        `always`: a one-shot job would otherwise run again and again under `reconcile watch`.
        `deploy.restart_policy` wins over `restart`, as docker compose applies it (pkg/compose
        create.go getRestartPolicy, mapRestartPolicyCondition)."""
        policy, loc = self.service.get("restart"), self.src + ("restart",)
        deployed = self._deploy_restart_policy()
        if deployed is not None:
            if policy is not None:
                self.out.key_warning(loc, "has no effect here: deploy.restart_policy wins, as in docker compose")
            policy, loc = deployed
        if policy is None:
            self._set_from("restart", "no", self.src)
            return
        if isinstance(policy, str) and policy.startswith("on-failure:"):
            self.out.warn(loc, f"the retry count of {quoted(policy)} has no effect here: "
                               "a failed container is restarted with growing delays (reconcile watch)")
            policy = "on-failure"
        if policy == "unless-stopped":
            self.out.warn(loc, "unless-stopped is read as always: reconcile has no stopped-by-hand state")
        self._set_from("restart", _RESTART_POLICIES.get(policy, policy) if isinstance(policy, str) else policy, loc)

    def _deploy_restart_policy(self) -> tuple[object, Loc] | None:
        """`deploy.restart_policy` as a `restart` value and the field it comes from. docker
        compose reads its `condition` (none, on-failure, any; a missing one restarts nothing) and
        `max_attempts`; `delay` and `window` only Swarm reads."""
        deploy = self.service.get("deploy")
        restart_policy = deploy.get("restart_policy") if isinstance(deploy, dict) else None
        loc = self.src + ("deploy", "restart_policy")
        if restart_policy is None:
            return None
        if not isinstance(restart_policy, dict):
            self.out.error(loc, f"expected a mapping (condition, max_attempts), got {describe_value(restart_policy)}")
            return None
        for key in restart_policy:
            if key in ("delay", "window"):
                self.out.key_warning(loc + (key,), "has no effect here: docker compose ignores it too "
                                                   "(a Swarm setting)")
            elif key == "max_attempts":
                self.out.key_warning(loc + (key,), "has no effect here: a failed container is restarted with "
                                                   "growing delays (reconcile watch)")
            elif key != "condition":
                self.out.unknown(loc + (str(key),), _RESTART_POLICY_KEYS)
        if "condition" not in restart_policy:
            return "no", loc
        condition = restart_policy["condition"]
        if not isinstance(condition, str) or condition not in _RESTART_CONDITIONS:
            self.out.error(loc + ("condition",), f"expected none, on-failure or any, got {describe_value(condition)}")
            return None
        return _RESTART_CONDITIONS[condition], loc + ("condition",)

    def _networks(self) -> None:
        networks = self.service.get("networks")
        loc = self.src + ("networks",)
        native = self.dst + ("networks",)
        attachments: dict[str, object] = {}
        if self.service.get("network_mode") is not None:
            self._network_mode(networks is not None)
            return
        self.out.origins[native] = self.src if networks is None else loc
        if networks is None or networks == [] or networks == {}:
            # no networks, or none listed: Compose's `default` (compose-go loader/normalize.go)
            self.out.put(attachments, native + (DEFAULT_NETWORK,), {}, self.src if networks is None else loc)
        elif isinstance(networks, list):
            for index, key in enumerate(networks):
                self.out.put(attachments, native + (native_key(key),), {}, loc + (index,))
        elif isinstance(networks, dict):
            for key, attachment in networks.items():
                self.out.put(attachments, native + (native_key(key),),
                             self._attachment(attachment, loc + (str(key),), native + (native_key(key),)),
                             loc + (str(key),))
        else:
            self.out.error(loc, f"expected a list of network names or a mapping, got {describe_value(networks)}")
            return
        self._named_as_written(attachments, native)
        self.container["networks"] = attachments

    def _named_as_written(self, attachments: dict[str, object], native: Loc) -> None:
        """A service whose name is not its key (`my_db` runs as `my-db`) still answers to its
        name on each of its networks, as in docker compose: the name is its last alias there."""
        if native_key(self.name) == self.name:
            return
        for network, attachment in attachments.items():
            if not isinstance(attachment, dict):
                continue
            aliases = attachment.setdefault("aliases", [])
            if isinstance(aliases, list) and self.name not in aliases:
                self.out.origins.setdefault(native + (network, "aliases"), self.src)
                self.out.origins[native + (network, "aliases", len(aliases))] = self.src
                aliases.append(self.name)

    def _network_mode(self, with_networks: bool) -> None:
        """`none`: a network namespace of its own with its loopback alone (native `networks: {}`),
        as Docker's; the modes that share another namespace (the host's, another container's)
        are errors, as is `networks:` beside it (compose-go refuses the pair too)."""
        mode, loc = self.service["network_mode"], self.src + ("network_mode",)
        if with_networks:
            self.out.key_error(loc, "network_mode and networks cannot be combined (docker compose refuses them "
                                    "together too): keep one")
        elif mode == "none":
            self.out.origins[self.dst + ("networks",)] = loc
            self.container["networks"] = {}
        elif mode == "host" or (isinstance(mode, str) and mode.startswith(("service:", "container:"))):
            self.out.key_error(loc, f"network_mode {quoted(mode)} is not supported: a container has a network "
                                    "namespace of its own; attach the service to networks: (or network_mode: none)")
        else:
            self.out.key_error(loc, f"network_mode {quoted(str(mode))} is not supported: use none, or attach the "
                                    "service to networks:")

    def _attachment(self, attachment: object, loc: Loc, native: Loc) -> object:
        if attachment is None:
            return {}
        if not isinstance(attachment, dict):
            return attachment  # the native model names what it expects
        result: dict[str, object] = {}
        for key, value in attachment.items():
            if key in ATTACHMENT_FIELDS:
                field = native + (ATTACHMENT_FIELDS[key],)
                self.out.put(result, field, self.out.passthrough(field, loc + (key,), value), loc + (key,))
            elif key in UNSUPPORTED_ATTACHMENT:
                self.out.key_error(loc + (key,), UNSUPPORTED_ATTACHMENT[key])
            elif key in NO_EFFECT_ATTACHMENT:
                self.out.key_warning(loc + (key,), NO_EFFECT_ATTACHMENT[key])
            else:
                self.out.unknown(loc + (str(key),), (*ATTACHMENT_FIELDS, *UNSUPPORTED_ATTACHMENT,
                                                     *NO_EFFECT_ATTACHMENT))
        return result

    def _extra_hosts(self) -> None:
        """compose-go's forms: a list of "NAME=ADDRESS" or "NAME:ADDRESS" (several addresses
        comma-separated), or a mapping NAME -> an address or a list of them; a native entry per
        address, at the Compose entry it came from (the native model checks name and address)."""
        hosts = self.service.get("extra_hosts")
        if hosts is None:
            return
        loc = self.src + ("extra_hosts",)
        entries: list[tuple[Loc, str, object]] = []
        if isinstance(hosts, list):
            for index, item in enumerate(hosts):
                if not isinstance(item, str):
                    self.out.error(loc + (index,), f"expected {EXTRA_HOST_TEXT}, got {describe_value(item)}")
                    continue
                try:
                    name, addresses = split_entry(item)
                except ValueError as exc:
                    self.out.error(loc + (index,), str(exc))
                    continue
                entries += [(loc + (index,), name, address) for address in addresses.split(",")]
        elif isinstance(hosts, dict):
            for name, value in hosts.items():
                if not isinstance(name, str):  # `null:` or `5:` as a key: no host name
                    self.out.error(loc + (str(name),), f"expected a host name as the key, got {describe_value(name)}")
                    continue
                given = value if isinstance(value, list) else [value]
                entries += [(loc + (name,), name, address) for address in given]
        else:
            self.out.error(loc, f"expected a list of {EXTRA_HOST_TEXT}, or a mapping, got {describe_value(hosts)}")
            return
        native = self.dst + ("extra_hosts",)
        self.out.origins[native] = loc
        converted: list[object] = []
        for source, name, address in entries:
            self.out.origins[native + (len(converted),)] = source
            converted.append({"host": name, "ip": unbracketed(address) if isinstance(address, str) else address})
        self.container["extra_hosts"] = converted

    def _entries(self, key: str, native: str, short: Callable[[object], Parsed],
                 long: Callable[[dict[str, object]], Parsed]) -> None:
        """A list whose items each become zero or more native items (a port range: several)."""
        items = self.service.get(key)
        if items is None:
            return
        loc = self.src + (key,)
        if not isinstance(items, list):
            self.out.error(loc, f"expected a list, got {describe_value(items)}")
            return
        self._native_list(native, loc)
        for index, item in enumerate(items):
            try:
                parsed = long(item) if isinstance(item, dict) else short(item)
            except SubfieldError as exc:
                self.out.error(loc + (index,) + exc.loc, str(exc))
                continue
            except ValueError as exc:
                self.out.error(loc + (index,), str(exc))
                continue
            if native == "ports" and not self._within_port_budget(len(parsed.values), loc + (index,)):
                continue
            converted = self._native_list(parsed.into or native, loc)
            for value in parsed.values:
                self.out.origins[self.dst + (parsed.into or native, len(converted))] = loc + (index,)
                converted.append(value)
            for warning in parsed.warnings:
                self.out.warn(loc + (index,), warning)

    def _native_list(self, native: str, loc: Loc) -> list[object]:
        """The container's list `native`, made empty the first time, its origin `loc` then."""
        self.out.origins.setdefault(self.dst + (native,), loc)
        return cast(list[object], self.container.setdefault(native, []))

    def _within_port_budget(self, count: int, loc: Loc) -> bool:
        """Whether `count` more published ports keep the file within MAX_PUBLISHED_PORTS (an
        error at the entry that would not)."""
        if self.out.published_ports + count > MAX_PUBLISHED_PORTS:
            self.out.error(loc, f"the file would publish more than {MAX_PUBLISHED_PORTS} ports with this entry: "
                                "publish fewer ports")
            return False
        self.out.published_ports += count
        return True

    def _ports(self) -> None:
        self._entries("ports", "ports", short_port, long_port)

    def _volumes(self) -> None:
        home = self.context.variables.get("HOME")
        project = self.context.project_dir
        self._entries("volumes", "volumes", lambda item: short_volume(item, project, home),
                      lambda item: long_volume(item, project, home))

    def _mounted_files(self) -> None:
        """`secrets` and `configs`: bind volumes of their files (specs.compose_secrets), each at a
        target the service's volumes leave free."""
        volumes = self.container.get("volumes")
        taken = {posixpath.normpath(volume["target"]) for volume in (volumes if isinstance(volumes, list) else ())
                 if isinstance(volume, dict) and isinstance(volume.get("target"), str)}
        for kind in KINDS:
            files = self.files[kind.section]
            self._entries(kind.section, "volumes", partial(short_entry, kind, files, taken),
                          partial(long_entry, kind, files, taken))

    def _sysctls(self) -> None:
        """A mapping, as native `sysctls`, or a list of `NAME=VALUE` (as `docker run --sysctl`)."""
        values, loc = self.service.get("sysctls"), self.src + ("sysctls",)
        native = self.dst + ("sysctls",)
        if isinstance(values, list):
            mapping: dict[str, object] = {}
            self.out.origins[native] = loc
            for index, entry in enumerate(values):
                name, sep, value = entry.partition("=") if isinstance(entry, str) else ("", "", "")
                if not sep:
                    self.out.error(loc + (index,), f"expected NAME=VALUE, got {describe_value(entry)}")
                    continue
                self.out.put(mapping, native + (name.strip(),), value.strip(), loc + (index,))
            self.container["sysctls"] = mapping
        elif values is not None:
            self._set("sysctls", self.out.passthrough(native, loc, values), "sysctls")

    def _tmpfs(self) -> None:
        """`tmpfs:` (a string or a list) as the native list, each entry passed as written: the
        native model reads Docker's `/PATH[:OPTIONS]`. `shm_size` as Docker sizes; 0 is Docker's
        default (64m)."""
        tmpfs, loc = self.service.get("tmpfs"), self.src + ("tmpfs",)
        if isinstance(tmpfs, list):
            self.container["tmpfs"] = self.out.passthrough(self.dst + ("tmpfs",), loc, list(tmpfs))
        elif tmpfs is not None:
            self.container["tmpfs"] = [tmpfs]
            self.out.origins[self.dst + ("tmpfs",)] = self.out.origins[self.dst + ("tmpfs", 0)] = loc
        shm_size = self.service.get("shm_size")
        if shm_size is None:
            return
        try:
            size = docker_bytes(shm_size)
        except ValueError as exc:
            self.out.error(self.src + ("shm_size",), str(exc))
            return
        if size:
            self._set("shm_size", size, "shm_size")

    def _resources(self) -> None:
        """mem_limit, cpus, pids_limit, cpuset, cpu_shares and deploy.resources.limits: one native
        `resources`; a limit set twice must agree (as Compose requires)."""
        resources: dict[str, object] = {}
        native = self.dst + ("resources",)
        self.out.origins[native] = self.src
        for key, field, parse in (("mem_limit", "memory", docker_bytes), ("cpus", "cpus", _cpus),
                                  ("pids_limit", "pids", _pids), ("cpuset", "cpuset", lambda value: value),
                                  ("cpu_shares", "cpu_shares", _cpu_shares)):
            self._limit(resources, field, self.service.get(key), self.src + (key,), parse)
        limits = self._deploy_limits()
        for key, value in limits.items():
            parse = {"memory": docker_bytes, "cpus": _cpus, "pids": _pids}[key]
            self._limit(resources, _LIMIT_KEYS[key], value, self.src + ("deploy", "resources", "limits", key), parse)
        if resources:
            self.container["resources"] = resources

    def _limit(self, resources: dict[str, object], field: str, value: object, loc: Loc,
               parse: Callable[[object], object]) -> None:
        if value is None:
            return
        try:
            parsed = parse(value)
        except ValueError as exc:
            self.out.error(loc, str(exc))
            return
        if parsed is None:
            return
        if field in resources and resources[field] != parsed:
            self.out.error(loc, f"{describe_value(value)} differs from the {field} limit set before "
                                f"({resources[field]}): set it once")
            return
        self.out.put(resources, self.dst + ("resources", field), parsed, loc)

    def _deploy_limits(self) -> dict[str, object]:
        deploy = self.service.get("deploy")
        loc = self.src + ("deploy",)
        if deploy is None:
            return {}
        if not isinstance(deploy, dict):
            self.out.error(loc, f"expected a mapping, got {describe_value(deploy)}")
            return {}
        for key, value in deploy.items():
            if key in NO_EFFECT_DEPLOY:
                self.out.key_warning(loc + (key,), NO_EFFECT_DEPLOY[key])
            elif key == "replicas" and value != 1:
                self.out.key_error(loc + (key,), "more than one replica is not supported: declare each container")
            elif key not in ("resources", "replicas", "restart_policy"):
                self.out.unknown(loc + (str(key),), ("resources", "replicas", "restart_policy", *NO_EFFECT_DEPLOY))
        return self._mapping_of(deploy.get("resources"), loc + ("resources",), "limits", ("reservations",))

    def _mapping_of(self, value: object, loc: Loc, wanted: str, ignored: tuple[str, ...]) -> dict[str, object]:
        """deploy.resources -> its `limits` (checked), warning about `reservations`."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.out.error(loc, f"expected a mapping, got {describe_value(value)}")
            return {}
        for key in value:
            if key in ignored:
                self.out.key_warning(loc + (key,), "has no effect here: reservations are not enforced")
            elif key != wanted:
                self.out.unknown(loc + (str(key),), (wanted, *ignored))
        limits = value.get(wanted) or {}
        if not isinstance(limits, dict):
            self.out.error(loc + (wanted,), f"expected a mapping, got {describe_value(limits)}")
            return {}
        for key in limits:
            if key not in _LIMIT_KEYS:
                self.out.unknown(loc + (wanted, str(key)), _LIMIT_KEYS)
        return {key: limit for key, limit in limits.items() if key in _LIMIT_KEYS}

    def _depends_on(self) -> None:
        """The list form is native; the long form (conditions) is passed as written: the native
        model reads Compose's syntax for it."""
        depends_on = self.service.get("depends_on")
        if depends_on is None:
            return
        native, loc = self.dst + ("depends_on",), self.src + ("depends_on",)
        if isinstance(depends_on, list):
            depends_on = [native_key(name) if isinstance(name, str) else name for name in depends_on]
            self._set("depends_on", self.out.passthrough(native, loc, depends_on), "depends_on")
        elif isinstance(depends_on, dict):
            self.out.origins[native] = loc
            mapped: dict[str, object] = {}
            for name, condition in depends_on.items():
                key = native_key(name)
                if key in mapped:
                    self.out.key_error(loc + (str(name),), f"names the service another entry names, as the container "
                                                           f"{quoted(key)}: list it once")
                    continue
                mapped[key] = self.out.passthrough(native + (key,), loc + (str(name),), condition)
            self._set("depends_on", mapped, "depends_on")
        else:
            self._set("depends_on", self.out.passthrough(native, loc, depends_on), "depends_on")

    def _stop(self) -> None:
        grace = self.service.get("stop_grace_period")
        if grace is not None:
            try:
                self._set("stop_grace", duration_seconds(grace), "stop_grace_period")
            except ValueError as exc:
                self.out.error(self.src + ("stop_grace_period",), str(exc))
        signal = self.service.get("stop_signal")
        if signal is not None:
            self._set("stop_signal", signal, "stop_signal")
        if self.service.get("init") is False:
            self.out.key_warning(self.src + ("init",), "false has no effect here: every container runs an init "
                                                       "(catatonit) as PID 1, as with init: true")

    def _logging(self) -> None:
        logging = self.service.get("logging")
        loc = self.src + ("logging",)
        if not isinstance(logging, dict):
            if logging is not None:
                self._set("logging", logging, "logging")
            return
        driver = logging.get("driver", "json-file")
        if driver in _LOG_DRIVERS:
            self._set("logging", self.out.passthrough(self.dst + ("logging",), loc, logging), "logging")
        else:
            named = quoted(driver) if isinstance(driver, str) else describe_value(driver)
            self.out.warn(loc + ("driver",), f"logging driver {named} has no effect here: output "
                                             "goes to reconcile's own rotated files (json-file, 8 MiB at most)")


def _cpus(value: object) -> float | None:
    cpus = number(value, "a number of CPUs like 0.5")
    return None if cpus == 0 else cpus  # 0: no limit, as Docker reads it


def _cpu_shares(value: object) -> int | None:
    """0 is Docker's "not set" (the default, 1024); 1 is below the kernel's least weight, which it
    raises to 2 under Docker (cgroup v1), as runc and crun convert both to weight 1 (v2)."""
    shares = integer(value, "a relative CPU weight like 512")
    if shares == 0:
        return None
    return MIN_CPU_SHARES if shares == 1 else shares


def _pids(value: object) -> int | None:
    if value == -1 or value == "-1":
        return None  # no limit, as Docker reads it
    return integer(value, "a number of processes")
