"""A Compose document as a native stack document (pure): the dict `specs.model.Stack`
validates, the Compose field each native field came from, and warnings. What cannot become a
stack raises ComposeInvalid with every error found, each at its Compose field.

The stack name is the Compose project name (`name:`, else the directory's name normalised as
Compose normalises it); services with `profiles` are left out unless a profile is enabled.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from specs.compose_keys import NO_EFFECT_NETWORK, NO_EFFECT_TOP_LEVEL, NO_EFFECT_VOLUME, UNSUPPORTED_TOP_LEVEL
from specs.compose_report import Collector, ComposeInvalid, Finding
from specs.compose_secrets import KINDS, declared_files
from specs.compose_service import (
    DEFAULT_NETWORK,
    ComposeContext,
    ServiceMapper,
    uses_default_network,
)
from specs.errors import Loc, quoted
from specs.fields import KEY_RULE, NAME_RULE, VOLUME_DRIVER_KEYS, describe_value, volume_driver_problem
from specs.hosts import alias_clashes
from specs.names import KEY_PATTERN, NAME_PATTERN, native_key
from specs.origins import Origins

TOP_LEVEL = ("name", "services", "networks", "volumes", "secrets", "configs", *UNSUPPORTED_TOP_LEVEL,
             *NO_EFFECT_TOP_LEVEL)
VOLUME_KEYS = (*VOLUME_DRIVER_KEYS, *NO_EFFECT_VOLUME)
NETWORK_KEYS = ("driver", "driver_opts", "ipam", "internal", "external", "enable_ipv6", *NO_EFFECT_NETWORK)
MTU_OPTION = "com.docker.network.driver.mtu"
BRIDGE_NAME_OPTION = "com.docker.network.bridge.name"
GATEWAY_MODE6_OPTION = "com.docker.network.bridge.gateway_mode_ipv6"
DRIVER_OPTIONS = (MTU_OPTION, BRIDGE_NAME_OPTION, GATEWAY_MODE6_OPTION)
GATEWAY_MODES6 = {"nat": True, "routed": False}
"""Docker's IPv6 gateway modes reconcile has (the value of ipv6_nat): Docker masquerades IPv6
by default, so a Compose network does too unless it asks for routed."""
NO_IPV6_POOL = ("enable_ipv6 needs an IPv6 subnet: reconcile has no IPv6 pool; add one to ipam.config, "
                "e.g. {subnet: fd00:89:1::/64} (a unique local prefix, or one of your global prefix)")


@dataclass(frozen=True)
class Converted:
    native: dict[str, object]
    origins: Origins
    warnings: list[Finding]


def normalise_project_name(directory: str) -> str:
    """Compose's default project name: the directory's name, lowercased, keeping [a-z0-9_-],
    from its first letter or digit on."""
    kept = re.sub(r"[^a-z0-9_-]", "", directory.lower())
    return kept.lstrip("_-")


def to_native(document: Mapping[str, object], context: ComposeContext, directory_name: str,
              profiles: Collection[str] = ()) -> Converted:
    out = Collector()
    native: dict[str, object] = {}
    for key in document:
        _top_level_key(out, str(key))
    project_name(out, native, document.get("name"), directory_name)
    services = _services(out, document.get("services"), profiles)
    _networks(out, native, document.get("networks"), services)
    files = {kind.section: declared_files(out, kind, document.get(kind.section), context.project_dir,
                                          context.variables.get("HOME")) for kind in KINDS}
    containers: dict[str, object] = {}
    out.origins[("containers",)] = ("services",)
    named: dict[str, str] = {}  # container key -> the service name that took it
    for name, service in services.items():
        key = native_key(name)
        first = named.setdefault(key, name)
        if not KEY_PATTERN.fullmatch(key):
            out.key_error(("services", name), f"the service name {quoted(name, ascii_only=True)} cannot be a container "
                                          f"key: {KEY_RULE} (capitals are read in lower case, '_' and '.' as '-')")
        elif first != name:
            out.key_error(("services", name), _one_key("services", first, name))
        else:
            containers[key] = ServiceMapper(out, name, service, context, files).map()
    native["containers"] = containers
    _drop_shared_aliases(out, containers)
    _volumes(out, native, document.get("volumes"))
    if out.errors:
        raise ComposeInvalid(out.errors, out.warnings)
    return Converted(native, Origins(out.origins), out.warnings)


def _drop_shared_aliases(out: Collector, containers: Mapping[str, object]) -> None:
    """docker compose lets services share an alias, or take another's name as one (its DNS
    answers with each in turn); an /etc/hosts name resolves to one container, which a native
    stack says with an error (specs.hosts.alias_clashes). Here the alias stays with the first
    container it names and is dropped from the others, each drop a warning at the alias."""
    mapped = {name: container for name, container in containers.items() if isinstance(container, dict)}
    attachments = {name: _with_aliases(container.get("networks")) for name, container in mapped.items()}
    members = [(name, _text(mapped[name], "hostname", name),
                {network: attachment["aliases"] for network, attachment in by_network.items()})
               for name, by_network in attachments.items()]
    dropped: dict[tuple[str, str], set[int]] = {}
    for clash in alias_clashes(members):
        native: Loc = ("containers", clash.container, "networks", clash.network, "aliases")
        out.warn(out.origins[native + (clash.index,)],
                 f"alias {quoted(clash.alias)} on network {quoted(clash.network)} already names service "
                 f"{quoted(clash.owner)}: left out here (in /etc/hosts a name resolves to one container, where "
                 "docker compose's DNS answers with each in turn)")
        dropped.setdefault((clash.container, clash.network), set()).add(clash.index)
    for (name, network), indices in dropped.items():
        attachment = attachments[name][network]
        native = ("containers", name, "networks", network, "aliases")
        sources = [out.origins.pop(native + (index,)) for index in range(len(attachment["aliases"]))]
        kept = [(alias, source) for index, (alias, source) in enumerate(zip(attachment["aliases"], sources))
                if index not in indices]
        attachment["aliases"] = [alias for alias, _ in kept]
        for index, (_, source) in enumerate(kept):
            out.origins[native + (index,)] = source


def _text(container: Mapping[str, object], key: str, default: str) -> str:
    value = container.get(key)
    return value if isinstance(value, str) else default


def _with_aliases(networks: object) -> dict[str, dict[str, list[str]]]:
    """A mapped service's attachments that list aliases as text, by network (the native
    model's errors say what is wrong with the others)."""
    if not isinstance(networks, dict):
        return {}
    return {str(network): attachment for network, attachment in networks.items()
            if isinstance(attachment, dict) and isinstance(attachment.get("aliases"), list)
            and all(isinstance(alias, str) for alias in attachment["aliases"])}


def _top_level_key(out: Collector, key: str) -> None:
    if key in UNSUPPORTED_TOP_LEVEL:
        out.key_error((key,), UNSUPPORTED_TOP_LEVEL[key])
    elif key in NO_EFFECT_TOP_LEVEL:
        out.key_warning((key,), NO_EFFECT_TOP_LEVEL[key])
    elif key not in TOP_LEVEL and not key.startswith("x-"):
        out.unknown((key,), TOP_LEVEL)


def project_name(out: Collector, native: dict[str, object], name: object, directory_name: str) -> None:
    """The project name (`name`, else the directory's): it must also be a valid stack name (it
    prefixes kernel objects)."""
    if name is None:
        derived = normalise_project_name(directory_name)
        if not NAME_PATTERN.fullmatch(derived):
            out.error((), f"the project name {quoted(derived)} (from the directory {quoted(directory_name)}) "
                          f"cannot be a stack name: {NAME_RULE}; set name: in this file")
        out.put(native, ("name",), derived, ())
        return
    if isinstance(name, str) and not NAME_PATTERN.fullmatch(name):
        out.error(("name",), f"the project name {quoted(name)} cannot be a stack name: {NAME_RULE}")
    out.put(native, ("name",), name, ("name",))


def _services(out: Collector, services: object, profiles: Collection[str]) -> dict[str, Mapping[str, object]]:
    """The services to run: those without `profiles`, and those with an enabled profile."""
    if services is None:
        return {}
    if not isinstance(services, dict):
        out.error(("services",), f"expected a mapping of service name to service, got {describe_value(services)}")
        return {}
    enabled: dict[str, Mapping[str, object]] = {}
    for name, service in services.items():
        loc = ("services", str(name))
        if not isinstance(service, dict):
            out.error(loc, f"expected a mapping (image, command, ...), got {describe_value(service)}")
            continue
        wanted = service.get("profiles")
        if wanted is not None and not isinstance(wanted, list):
            out.error(loc + ("profiles",), f"expected a list of profile names, got {describe_value(wanted)}")
            continue
        if wanted and "*" not in profiles and not set(map(str, wanted)) & set(profiles):
            continue
        enabled[str(name)] = service
    return enabled


def _networks(out: Collector, native: dict[str, object], declared: object,
              services: Mapping[str, Mapping[str, object]]) -> None:
    out.origins[("networks",)] = ("networks",)
    if declared is not None and not isinstance(declared, dict):
        out.error(("networks",), f"expected a mapping of network name to network, got {describe_value(declared)}")
        declared = {}
    networks: dict[str, object] = {}
    named: dict[str, str] = {}  # native key -> the Compose name that took it
    for key, network in (declared or {}).items():
        mapped = _network(out, str(key), {} if network is None else network)
        first = named.setdefault(native_key(key), str(key))
        if first != str(key):
            out.key_error(("networks", str(key)), _one_key("networks", first, str(key)))
        elif mapped is not None:
            out.put(networks, ("networks", native_key(key)), mapped, ("networks", str(key)))
    on_default = [name for name, service in services.items() if uses_default_network(service)]
    if on_default and DEFAULT_NETWORK not in named:
        # Compose makes its default network, undeclared, when a service is on it (one that
        # lists no networks, or lists default); its subnet comes from the pool. An error about
        # it points at the first such service.
        out.put(networks, ("networks", DEFAULT_NETWORK), {}, ("services", on_default[0]))
    native["networks"] = networks


def _one_key(section: str, first: str, second: str) -> str:
    kind = "network" if section == "networks" else "container"
    return (f"{section} {quoted(first)} and {quoted(second)} are one {kind} key here, {quoted(native_key(second))}: "
            "rename one of them")


def _volumes(out: Collector, native: dict[str, object], declared: object) -> None:
    """Named volumes: `{}` or nothing in the native stack (directories under the state dir);
    a driver, its options or an external volume are errors, as in a native stack file."""
    if declared is None:
        return
    out.origins[("volumes",)] = ("volumes",)
    if not isinstance(declared, dict):
        out.error(("volumes",), f"expected a mapping of volume name to volume, got {describe_value(declared)}")
        return
    volumes: dict[str, object] = {}
    for key, volume in declared.items():
        loc: Loc = ("volumes", str(key))
        if volume is not None and not isinstance(volume, dict):
            out.error(loc, f"expected a mapping (driver, external, ...), got {describe_value(volume)}")
            continue
        for option, value in (volume or {}).items():
            problem = volume_driver_problem(option, value) if option in VOLUME_DRIVER_KEYS else None
            if problem is not None:
                out.key_error(loc + (option,), problem)
            elif option in NO_EFFECT_VOLUME:
                out.key_warning(loc + (option,), NO_EFFECT_VOLUME[option])
            elif option not in VOLUME_KEYS:
                out.unknown(loc + (str(option),), VOLUME_KEYS)
        out.put(volumes, loc, {}, loc)
    native["volumes"] = volumes


def _network(out: Collector, key: str, network: object) -> dict[str, object] | None:
    loc: Loc = ("networks", key)
    if not isinstance(network, dict):
        out.error(loc, f"expected a mapping (driver, ipam, internal, ...), got {describe_value(network)}")
        return None
    result: dict[str, object] = {}
    for option in network:
        if option in NO_EFFECT_NETWORK:
            out.key_warning(loc + (option,), NO_EFFECT_NETWORK[option])
        elif option not in NETWORK_KEYS:
            out.unknown(loc + (str(option),), NETWORK_KEYS)
    if network.get("external"):
        out.key_error(loc + ("external",), "external networks are not supported: reconcile owns the bridges "
                                           "of its networks; declare the network here")
    if network.get("driver", "bridge") != "bridge":
        out.error(loc + ("driver",), f"network driver {quoted(str(network['driver']))} is not supported: "
                                     "only bridge networks")
    enable_ipv6 = network.get("enable_ipv6", False)
    if not isinstance(enable_ipv6, bool):
        out.error(loc + ("enable_ipv6",), f"expected true or false, got {describe_value(enable_ipv6)}")
    _ipam(out, result, key, network.get("ipam"), enable_ipv6 is True)
    if enable_ipv6 is True and "subnet6" not in result:
        out.key_error(loc + ("enable_ipv6",), NO_IPV6_POOL)
    _driver_opts(out, result, key, network.get("driver_opts"))
    if "internal" in network:
        out.put(result, ("networks", native_key(key), "internal"), network["internal"], loc + ("internal",))
    if "subnet6" in result and network.get("internal") is not True:
        result.setdefault("ipv6_nat", True)  # Docker's default gateway mode: nat
        out.origins.setdefault(("networks", native_key(key), "ipv6_nat"), loc + ("enable_ipv6",))
    return result


def _ipam(out: Collector, result: dict[str, object], key: str, ipam: object, enable_ipv6: bool) -> None:
    loc: Loc = ("networks", key, "ipam")
    configs = ipam.get("config") if isinstance(ipam, dict) else None
    if ipam is not None and not isinstance(ipam, dict):
        out.error(loc, f"expected a mapping (config: [{{subnet, gateway}}]), got {describe_value(ipam)}")
        return
    options = ipam if isinstance(ipam, dict) else {}
    for option in options:
        if option == "driver" and options["driver"] != "default":
            out.key_error(loc + ("driver",), "only the default IPAM driver is supported")
        elif option not in ("driver", "config", "options"):
            out.unknown(loc + (str(option),), ("driver", "config"))
        elif option == "options" and options["options"]:
            out.key_error(loc + ("options",), "IPAM options are not supported")
    if not configs:
        return  # the subnet comes from the pool
    if not isinstance(configs, list) or not all(isinstance(config, dict) for config in configs):
        out.error(loc + ("config",), "expected a list of {subnet, gateway}: one IPv4 entry, and one IPv6 entry "
                                     "with enable_ipv6: true")
        return
    seen: dict[int, int] = {}  # IP version -> index of its entry
    for index, config in enumerate(configs):
        version = 6 if ":" in str(config.get("subnet", config.get("gateway", ""))) else 4
        first = seen.setdefault(version, index)
        if first != index:
            out.error(loc + ("config", index), f"a second IPv{version} entry (the first is config[{first}]): "
                                               f"a network has one IPv{version} subnet")
        elif version == 6 and not enable_ipv6:
            out.error(loc + ("config", index), "an IPv6 entry needs enable_ipv6: true on the network")
        else:
            _ipam_config(out, result, key, index, config, "6" if version == 6 else "")


def _ipam_config(out: Collector, result: dict[str, object], key: str, index: int,
                 config: dict[object, object], suffix: str) -> None:
    """One entry of ipam.config: an IPv4 one is subnet and gateway, an IPv6 one subnet6 and
    gateway6 (`suffix`)."""
    loc: Loc = ("networks", key, "ipam", "config", index)
    for option, value in config.items():
        if option in ("subnet", "gateway"):
            out.put(result, ("networks", native_key(key), f"{option}{suffix}"), value, loc + (option,))
        elif option in ("ip_range", "aux_addresses"):
            out.key_error(loc + (option,), f"{option} is not supported: addresses are allocated "
                                           f"from the whole subnet, or set with ipv{suffix or '4'}_address")
        else:
            out.unknown(loc + (str(option),), ("subnet", "gateway", "ip_range", "aux_addresses"))


def _driver_opts(out: Collector, result: dict[str, object], key: str, options: object) -> None:
    loc: Loc = ("networks", key, "driver_opts")
    if options is None:
        return
    if not isinstance(options, dict):
        out.error(loc, f"expected a mapping, got {describe_value(options)}")
        return
    for option, value in options.items():
        if option == MTU_OPTION:
            mtu = int(value) if isinstance(value, str) and value.strip().isdigit() else value
            out.put(result, ("networks", native_key(key), "mtu"), mtu, loc + (option,))
        elif option == BRIDGE_NAME_OPTION:
            out.put(result, ("networks", native_key(key), "bridge"), value, loc + (option,))
        elif option == GATEWAY_MODE6_OPTION:
            _gateway_mode6(out, result, key, value, loc + (option,))
        else:
            out.key_error(loc + (str(option),), f"driver option {quoted(str(option))} is not supported: "
                                                f"supported are {', '.join(DRIVER_OPTIONS)}")


def _gateway_mode6(out: Collector, result: dict[str, object], key: str, mode: object, loc: Loc) -> None:
    if not isinstance(mode, str) or mode not in GATEWAY_MODES6:
        shown = quoted(mode) if isinstance(mode, str) else describe_value(mode)
        out.error(loc, f"IPv6 gateway mode {shown} is not supported: use nat (masquerade, Docker's default) "
                       "or routed (the containers' own addresses)")
    elif "subnet6" not in result:
        out.key_error(loc, "applies to a network with enable_ipv6: true and an IPv6 subnet")
    else:
        out.put(result, ("networks", native_key(key), "ipv6_nat"), GATEWAY_MODES6[mode], loc)
