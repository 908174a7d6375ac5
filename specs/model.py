"""The stack file, v1 (docs/spec.md), as pydantic models.

Validation checks every field on its own and then normalises and resolves: short forms become
the mapping form, defaults that depend on the stack name or a key are filled in (bridge,
hostname, default route), so every consumer reads one shape and never re-derives a default.
Checks that span fields or stacks live in specs.validate; the loader runs both.

Types are strict (no "yes" for true, no 8080 for "8080"): a YAML scalar that means something
else than the user thought is an error, not a silent conversion. Models are frozen.
`Stack.model_dump_json()`, decoded, validates back to an equal Stack (the state store keeps it).
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainSerializer,
    Tag,
    WithJsonSchema,
    model_validator,
)

from specs import health, resolv, sysctls
from specs.errors import quoted
from specs.fields import (
    KEY_RULE,
    SubfieldError,
    check_absolute_path,
    check_capability,
    check_env_name,
    check_hostname,
    check_ifname,
    check_image,
    check_no_nul,
    check_program,
    check_user,
    check_volume_name,
    check_volume_target,
    name_checker,
    reject_duplicates,
    reject_unknown_log_options,
    reject_volume_drivers,
    to_argv,
    to_attachments,
    to_bind_address,
    to_cpuset,
    to_host_path,
    to_ipv4_address,
    to_ipv4_network,
    to_ipv6_address,
    to_ipv6_network,
    to_log_file_count,
    to_log_size,
    to_memory_bytes,
    to_port_mapping,
    to_security_opts,
    to_tuple,
    to_volume,
    to_volume_source,
)
from specs.hosts import HOST_GATEWAY, check_dns_name, to_extra_host, to_host_address, to_ip_address
from specs.names import KEY_PATTERN, NAME_PATTERN, VOLUME_NAME_PATTERN, default_bridge_name
from specs.signals import to_stop_signal
from specs.tmpfs import check_tmpfs_target, to_id, to_mode, to_tmpfs, to_tmpfs_size
from specs.ulimits import NAMES as ULIMIT_NAMES
from specs.ulimits import check_name as check_ulimit_name
from specs.ulimits import check_order, to_limit, to_ulimit
from specs.units import DEFAULT_CPU_SHARES, MAX_CPU_SHARES, MIN_CPU_SHARES

MAX_CPUS = 1024
MAX_PIDS = 4194304
"""PID_MAX_LIMIT on 64-bit kernels: pids.max cannot usefully be higher."""
MAX_STOP_GRACE = 86400
DEFAULT_LOG_MAX_SIZE = 4 * 1024**2
DEFAULT_LOG_MAX_FILE = 2
"""8 MiB of log at most by default, the cap reconcile has always had."""


_KEY_SCHEMA = WithJsonSchema({"type": "string", "pattern": KEY_PATTERN.pattern})
StackName = Annotated[str, AfterValidator(name_checker("stack name")),
                      WithJsonSchema({"type": "string", "pattern": NAME_PATTERN.pattern})]
NetworkKey = Annotated[str, AfterValidator(name_checker("network key", KEY_PATTERN, KEY_RULE)), _KEY_SCHEMA]
ContainerKey = Annotated[str, AfterValidator(name_checker("container key", KEY_PATTERN, KEY_RULE)), _KEY_SCHEMA]
VolumeName = Annotated[str, AfterValidator(check_volume_name),
                       WithJsonSchema({"type": "string", "pattern": VOLUME_NAME_PATTERN.pattern})]
Address = Annotated[IPv4Address, BeforeValidator(to_ipv4_address, json_schema_input_type=IPv4Address)]
BindAddress = Annotated[IPv4Address | None,
                        BeforeValidator(to_bind_address, json_schema_input_type=IPv4Address | None)]
Subnet = Annotated[IPv4Network, BeforeValidator(to_ipv4_network, json_schema_input_type=IPv4Network)]
Address6 = Annotated[IPv6Address, BeforeValidator(to_ipv6_address, json_schema_input_type=IPv6Address)]
Subnet6 = Annotated[IPv6Network, BeforeValidator(to_ipv6_network, json_schema_input_type=IPv6Network)]
HostPath = Annotated[Path, BeforeValidator(to_host_path, json_schema_input_type=Path)]
ContainerPath = Annotated[str, AfterValidator(check_absolute_path)]
Port = Annotated[int, Field(ge=1, le=65535)]
Text = Annotated[str, AfterValidator(check_no_nul)]
EnvName = Annotated[str, AfterValidator(check_env_name)]
Capability = Annotated[str, AfterValidator(check_capability)]
IPAddress = Annotated[IPv4Address | IPv6Address, BeforeValidator(to_ip_address, json_schema_input_type=str)]
DnsName = Annotated[str, AfterValidator(check_dns_name)]


def _drop_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


def _derived(description: str) -> Any:
    """A field whose default depends on the stack name or a key: None until Stack resolves it,
    so its type stays the resolved one for consumers (and the schema shows no null default)."""
    return Field(default=None, description=description, json_schema_extra=_drop_default)


class SpecModel(BaseModel):
    """Strict (no "yes" for true, no 8080 for "8080"), no unknown fields, frozen."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    def same_as(self, other: SpecModel) -> bool:
        """Equal in every field and in the order of every mapping. `==` compares dicts, which
        ignore the order of their keys, and here order means something: a container's networks
        number its interfaces (eth0, eth1, ...) and pick its default route in the order written,
        and the containers' order is the order of /etc/hosts' lines."""
        return self is other or self.model_dump_json() == other.model_dump_json()


class Network(SpecModel):
    """A Linux bridge holding the gateway address; containers attach to it with veth pairs."""

    subnet: Subnet | None = Field(
        None, description="IPv4 subnet in CIDR form without host bits, e.g. 10.88.1.0/24; default: a free "
                          "one from the subnet pool (RECONCILE_SUBNET_POOL), kept across runs")
    gateway: Address | None = _derived("address of the bridge; default: the first host address of the subnet")
    bridge: Annotated[str, AfterValidator(check_ifname)] = _derived(
        "bridge interface name, at most 15 bytes; default: rc-<stack>-<network>")
    mtu: int = Field(1500, ge=68, le=65535, description="MTU of the bridge and of every veth on it")
    internal: bool = Field(False, description="true: no masquerade, no published ports, no route out")
    subnet6: Subnet6 | None = Field(
        None, description="IPv6 subnet, unique local (fd00::/8) or global, e.g. fd00:88:1::/64: the network "
                          "is dual-stack and every container on it gets an IPv6 address too; default: IPv4 only")
    gateway6: Address6 | None = _derived("IPv6 address of the bridge; default: the first address after "
                                         "subnet6's network address")
    ipv6_nat: bool = Field(False, description="true: IPv6 traffic leaving the host is masqueraded, as IPv4's; "
                                              "false: it is routed with the containers' own addresses")

    @model_validator(mode="after")
    def _default_gateway(self) -> Network:
        if self.subnet is None and self.gateway is not None:
            raise SubfieldError(("gateway",), "a gateway needs a subnet: set subnet too, or neither "
                                              "(both then come from the subnet pool)")
        if self.subnet6 is None and (self.gateway6 is not None or self.ipv6_nat):
            field = "gateway6" if self.gateway6 is not None else "ipv6_nat"
            raise SubfieldError((field,), f"{field} needs an IPv6 subnet: set subnet6 too")
        network = self
        if self.subnet6 is not None and self.gateway6 is None:
            network = network.model_copy(update={"gateway6": self.subnet6.network_address + 1})
        if network.gateway is not None or network.subnet is None:
            return network
        return network.with_subnet(network.subnet)

    @property
    def assigned_subnet(self) -> IPv4Network:
        """`subnet`, declared or from the pool: reconcile.engine.subnets fills it in before a
        network reaches IPAM or the controllers."""
        if self.subnet is None:
            raise ValueError("the network's subnet is not assigned yet (none declared, none from the pool)")
        return self.subnet

    @property
    def assigned_gateway(self) -> IPv4Address:
        """`gateway`, set whenever the subnet is (see assigned_subnet)."""
        if self.gateway is None:
            raise ValueError("the network's gateway is not assigned yet (none declared, none from the pool)")
        return self.gateway

    def with_subnet(self, subnet: IPv4Network) -> Network:
        """This network on `subnet`, its gateway the subnet's first host address (how a subnet
        from the pool is filled in: a gateway of the user's needs a declared subnet)."""
        return self.model_copy(update={"subnet": subnet, "gateway": subnet.network_address + 1})

    def _resolve(self, stack: str, key: str) -> Network:
        if self.bridge is not None:
            return self
        return self.model_copy(update={"bridge": default_bridge_name(stack, key)})


class Attachment(SpecModel):
    """A container's interface on one network."""

    ip: Address | None = Field(
        None, description="static address; default: allocated from the subnet and kept across runs")
    ip6: Address6 | None = Field(
        None, description="static IPv6 address on a dual-stack network; default: allocated from subnet6 "
                          "and kept across runs")
    aliases: Annotated[tuple[DnsName, ...], BeforeValidator(to_tuple, json_schema_input_type=list[str]),
                       AfterValidator(reject_duplicates)] = Field(
        (), description="more names of the container on this network: every container "
                                          "on it resolves them to its address there (/etc/hosts)")


class ExtraHost(SpecModel):
    """An /etc/hosts entry of the container's own, as Docker's --add-host: "NAME:ADDRESS",
    "NAME=ADDRESS" (an IPv6 address bare or in brackets) or this mapping."""

    host: DnsName = Field(description="the name, e.g. host.docker.internal")
    ip: Annotated[IPv4Address | IPv6Address | Literal["host-gateway"],
                  BeforeValidator(to_host_address, json_schema_input_type=str)] = Field(
        description=f"an IPv4 or IPv6 address, or {HOST_GATEWAY}: the gateway of the container's default "
                    "route (its IPv6 gateway too on a dual-stack network)")


class PortMapping(SpecModel):
    """A published port: "HOST:CONTAINER[/proto]", "IP:HOST:CONTAINER[/proto]" or this mapping."""

    host: Port = Field(description="port on the host")
    container: Port = Field(description="port inside the container")
    protocol: Literal["tcp", "udp"] = "tcp"
    host_ip: BindAddress = Field(None, description="host address to publish on; default (or 0.0.0.0): all")


class Resources(SpecModel):
    """cgroup limits, changed in place on a running container."""

    memory: Annotated[int, BeforeValidator(to_memory_bytes, json_schema_input_type=int | str)] | None = Field(
        None, description="bytes, or with a unit: Ki Mi Gi Ti (1024) or K M G T (1000); at least 4Mi")
    cpus: float | None = Field(None, ge=0.01, le=MAX_CPUS, allow_inf_nan=False,
                               description="CPU quota in cores, e.g. 0.5")
    pids: int | None = Field(None, ge=1, le=MAX_PIDS, description="most processes and threads at once")
    cpuset: Annotated[str, BeforeValidator(to_cpuset, json_schema_input_type=str)] | None = Field(
        None, description="CPUs the container may run on, e.g. \"0-3,5\" (normalised as the kernel prints it)")
    cpu_shares: int | None = Field(
        None, ge=MIN_CPU_SHARES, le=MAX_CPU_SHARES,
        description=f"relative CPU weight against the other cgroups when the CPUs are busy, as Docker's "
                    f"--cpu-shares: {MIN_CPU_SHARES} to {MAX_CPU_SHARES}, {DEFAULT_CPU_SHARES} when left out "
                    f"(cgroup v2: cpu.weight, converted as runc and crun do)")


UlimitName = Annotated[str, AfterValidator(check_ulimit_name), WithJsonSchema({"enum": list(ULIMIT_NAMES)})]
SysctlName = Annotated[str, AfterValidator(sysctls.check_name)]
SysctlValue = Annotated[str, BeforeValidator(sysctls.to_value, json_schema_input_type=str | int)]
Limit = Annotated[int, BeforeValidator(to_limit, json_schema_input_type=int | Literal["unlimited"])]


class Ulimit(SpecModel):
    """A resource limit (setrlimit): the soft one is enforced, the process may raise it up to the
    hard one; -1 (or unlimited) is no limit."""

    soft: Limit
    hard: Limit

    @model_validator(mode="after")
    def _soft_within_hard(self) -> Ulimit:
        check_order(self.soft, self.hard)
        return self


class NamedVolume(SpecModel):
    """A directory reconcile keeps for the stack, <state-dir>/volumes/<stack>/<name>: made on the
    first apply that mounts it, kept across recreates and `down`, removed by `down --volumes`.
    `{}` or nothing; `driver: local` is accepted, other drivers, options and external are errors
    (Stack.volumes checks them: specs.fields.reject_volume_drivers)."""


class Volume(SpecModel):
    """A bind mount: "SOURCE:TARGET[:ro|rw]" or this mapping; SOURCE is an absolute host path or
    the name of one of the stack's volumes."""

    source: Annotated[Path | VolumeName, BeforeValidator(to_volume_source, json_schema_input_type=str)] = Field(
        description="absolute path on the host, or the name of a volume declared in the stack's volumes")
    target: Annotated[str, AfterValidator(check_volume_target)] = Field(
        description="absolute path inside the container (not in /proc, but for the files lxcfs serves)")
    read_only: bool = False
    create_host_path: bool = Field(
        False, exclude=True,  # how a missing source is handled, not what the container runs with
        description="true: a missing host directory is made (root, 0755) when the container starts, as "
                    "docker run -v and Compose's short syntax do; false: a missing source is an error")

    @model_validator(mode="after")
    def _host_path_only(self) -> Volume:
        if self.create_host_path and isinstance(self.source, str):
            raise SubfieldError(("create_host_path",),
                                f"applies to a host path, not to the volume {quoted(self.source)}")
        return self

    @property
    def volume_name(self) -> str | None:
        """The named volume mounted (None: a bind mount of a host path)."""
        return self.source if isinstance(self.source, str) else None


TmpfsSize = Annotated[int, BeforeValidator(to_tmpfs_size, json_schema_input_type=int | str)]


class Tmpfs(SpecModel):
    """A tmpfs of the container's own: "/PATH[:OPTIONS]" (Docker's --tmpfs) or this mapping.
    Always nosuid and nodev, and noexec unless `exec` (as Docker mounts one); its pages count
    against the container's memory limit."""

    target: Annotated[str, AfterValidator(check_tmpfs_target)] = Field(
        description="absolute path inside the container (not under /proc, /sys or /dev)")
    size: TmpfsSize | None = Field(
        None, description="bytes, or with a unit: Ki Mi Gi Ti (1024) or K M G T (1000); default: the kernel's, "
                          "half of the host's memory (as Docker)")
    mode: Annotated[int, BeforeValidator(to_mode, json_schema_input_type=int | str)] | None = Field(
        None, description="permission bits of its root, octal: \"1777\" or 0o1777; default: 1777")
    uid: Annotated[int, BeforeValidator(to_id, json_schema_input_type=int)] | None = Field(
        None, description="owner of its root (the container's uid); default: the container's root")
    gid: Annotated[int, BeforeValidator(to_id, json_schema_input_type=int)] | None = Field(
        None, description="group of its root; default: the container's root's")
    read_only: bool = False
    exec: bool = Field(False, description="true: programs on it may be run (Docker's exec option); "
                                          "default: noexec")


class LogOptions(SpecModel):
    """Docker's json-file/local options: the file being written is rotated past max-size, and
    max-file files are kept (the one being written included)."""

    model_config = ConfigDict(serialize_by_alias=True)

    max_size: Annotated[int, BeforeValidator(to_log_size, json_schema_input_type=str | int)] = Field(
        DEFAULT_LOG_MAX_SIZE, alias="max-size",
        description="rotate past this size: \"10m\", \"512k\", \"1g\" (powers of 1024, as Docker) or bytes")
    max_file: Annotated[int, BeforeValidator(to_log_file_count, json_schema_input_type=str | int)] = Field(
        DEFAULT_LOG_MAX_FILE, alias="max-file", description="files kept, the one being written included")

    @model_validator(mode="before")
    @classmethod
    def _known_options(cls, data: Any) -> Any:
        return reject_unknown_log_options(data)


class Logging(SpecModel):
    """Docker Compose's `logging:`; both drivers mean reconcile's own rotated log files."""

    driver: Literal["json-file", "local"] = "json-file"
    options: LogOptions = LogOptions()


Duration = Annotated[float, BeforeValidator(health.to_duration, json_schema_input_type=str),
                     PlainSerializer(health.format_duration, return_type=str, when_used="json")]


class Healthcheck(SpecModel):
    """Docker Compose's `healthcheck:`, with Docker's `0 means inherit`: a timing left out (or 0)
    is the image's HEALTHCHECK's, else Docker's default (`over`, once the image is known). The
    test runs inside the container, with its confinement and in its cgroups, as `reconcile exec`."""

    test: Annotated[list[Text],
                    BeforeValidator(health.to_health_test, json_schema_input_type=str | list[str])] | None = Field(
        None, description="[\"CMD\", argv...], [\"CMD-SHELL\", \"command line\"] (run by /bin/sh -c), "
                          "[\"NONE\"] (no check), or a string: a CMD-SHELL command line")
    interval: Duration = Field(0.0, description="between probes, e.g. 30s, 1m30s, 500ms; default (or 0): the "
                                                "image's, else 30s")
    timeout: Duration = Field(0.0, description="a probe running longer fails (and is killed); default (or 0): "
                                               "the image's, else 30s")
    retries: int = Field(0, ge=0, description="consecutive failures that make it unhealthy; default (or 0): the "
                                              "image's, else 3")
    start_period: Duration = Field(0.0, description="after a start, failures before the first success do not "
                                                    "count; default (or 0): the image's, else 0s")
    start_interval: Duration = Field(0.0, description="between probes within start_period, until the first "
                                                      "success; default (or 0): the image's, else 5s")
    disable: bool = Field(False, description="true: no health check (as test: [\"NONE\"])")

    @model_validator(mode="after")
    def _test_or_disable(self) -> Healthcheck:
        if self.disable and self.test not in (None, ["NONE"]):
            raise SubfieldError(("disable",), "disable: true with a test: remove one of them")
        if not self.disable and self.test is None:
            raise SubfieldError(("test",), "a healthcheck needs a test, or disable: true (without a "
                                           "healthcheck, an image's HEALTHCHECK applies whole)")
        return self

    def over(self, base: Healthcheck | None) -> Healthcheck:
        """The check as it runs: each timing left out (0) is `base`'s (the image's HEALTHCHECK,
        as Docker merges a container's over its image's), else Docker's default; the test is
        this one's. Idempotent: a check resolved already stays as it is."""
        def inherited(name: str, default: float) -> Any:
            own = getattr(self, name)
            return own or (getattr(base, name) if base is not None else 0) or default

        return self.model_copy(update={
            "interval": inherited("interval", health.DEFAULT_INTERVAL),
            "timeout": inherited("timeout", health.DEFAULT_TIMEOUT),
            "retries": inherited("retries", health.DEFAULT_RETRIES),
            "start_period": inherited("start_period", health.DEFAULT_START_PERIOD),
            "start_interval": inherited("start_interval", health.DEFAULT_START_INTERVAL)})

    @property
    def enabled(self) -> bool:
        return not self.disable and self.test is not None and self.test[0] != "NONE"


class Dependency(SpecModel):
    """Docker Compose's long form of a depends_on entry."""

    condition: Literal["service_started", "service_healthy", "service_completed_successfully"] = Field(
        description="service_started: started before this one; service_healthy: its healthcheck passed; "
                    "service_completed_successfully: it ran and exited 0")
    required: bool = Field(True, description="false: a dependency not in the stack is ignored, and one that "
                                             "fails its condition does not hold this container back")
    restart: Annotated[bool, AfterValidator(health.dependency_restart)] = Field(
        False, description="only false: reconcile does not restart dependents with their dependency")


def _dependency_form(value: Any) -> str:
    return "dict[str,Dependency]" if isinstance(value, dict) else "list[str]"


def _listed_once(value: list[str] | dict[str, Dependency]) -> list[str] | dict[str, Dependency]:
    return reject_duplicates(value) if isinstance(value, list) else value


DependsOn = Annotated[
    Annotated[list[str], Tag("list[str]")] | Annotated[dict[str, Dependency], Tag("dict[str,Dependency]")],
    Discriminator(_dependency_form), AfterValidator(_listed_once)]
"""Either form kept as written (an error then points at the list item or the key); the tags are
named as pydantic's own, which error messages drop (specs.messages)."""


class Container(SpecModel):
    """A process in its own namespaces, attached to networks, limited by cgroups."""

    image: Annotated[str, AfterValidator(check_image)] | None = Field(
        None, description="image to run, as Docker names it (busybox:1.36, host:5000/team/app:v2, "
                          "name@sha256:...), or a local source: oci:/DIR[:TAG], docker-archive:/FILE; "
                          "its layers are the container's root (exclusive with rootfs)")
    pull: Literal["missing", "always", "never"] = Field(
        "missing", description="missing: pull the image when this host has no copy (then keep that "
                               "digest); always: resolve the tag on every apply; never: only a local copy")
    entrypoint: Annotated[list[Text], BeforeValidator(to_argv, json_schema_input_type=str | list[str])] | None = Field(
        None, description="replaces the image's Entrypoint (and, as with Docker, its Cmd); [] clears it")
    command: Annotated[list[Text], BeforeValidator(to_argv, json_schema_input_type=str | list[str]),
                       AfterValidator(check_program)] = Field(
        default_factory=list, description="argv as a list, or a string split like a shell (never run by "
                                          "one), after the entrypoint; with an image, default: its Cmd")
    rootfs: HostPath | None = Field(
        None, description="root directory, never written to (a writable layer of the container's own "
                          "lies over it); default: the host's filesystem, with private /proc, /tmp and /run")
    read_only: bool = Field(False, description="true: the container's root is read-only (volumes as they say)")
    privileged: bool = Field(False, description="true: every capability, no seccomp filter, every device, "
                                                "writable /sys and /proc: the container can take over the host")
    userns: Literal["host", "auto"] = Field(
        "host", description="auto: a private range of host uids and gids (uid 0 inside is an unprivileged "
                            "uid outside), as podman's --userns=auto; host: the host's ids, as Docker")
    cap_add: Annotated[list[Capability], AfterValidator(reject_duplicates)] = Field(
        default_factory=list, description="capabilities beyond Docker's default 14, e.g. NET_ADMIN; ALL for all")
    cap_drop: Annotated[list[Capability], AfterValidator(reject_duplicates)] = Field(
        default_factory=list, description="capabilities taken from Docker's default 14; ALL for all")
    security_opt: Annotated[list[str], BeforeValidator(to_security_opts, json_schema_input_type=list[str]),
                            AfterValidator(reject_duplicates)] = Field(
        default_factory=list, description="no-new-privileges: setuid programs and file capabilities "
                                          "grant nothing")
    env: dict[EnvName, Text] = Field(default_factory=dict,
                                     description="environment (values are strings: quote numbers)")
    workdir: ContainerPath | None = _derived("absolute working directory inside the container; default: the "
                                      "image's, else /")
    hostname: Annotated[str, AfterValidator(check_hostname)] = _derived("default: the container key")
    user: Annotated[str, AfterValidator(check_user)] | None = Field(
        None, description="USER or USER:GROUP, each a number or a name of the container's /etc/passwd and "
                          "/etc/group (\"node\", \"node:node\", \"1000:1000\"); default: root")
    restart: Literal["always", "on-failure", "no"] = "always"
    networks: Annotated[dict[str, Attachment], BeforeValidator(
        to_attachments, json_schema_input_type=list[str] | dict[str, Attachment | None])] = Field(
        default_factory=dict, description="network keys, or a mapping network key -> {ip: ...}; "
                                          "interfaces are eth0, eth1, ... in this order")
    default_route: str | None = Field(
        None, description="network whose gateway is the default route; default: the first listed "
                          "non-internal network; null: no default route")
    extra_hosts: Annotated[tuple[Annotated[ExtraHost, BeforeValidator(to_extra_host,
                                                                      json_schema_input_type=str | ExtraHost)], ...],
                           BeforeValidator(to_tuple, json_schema_input_type=list[str | ExtraHost])] = Field(
        (), description="more /etc/hosts entries, after the localhost lines and before the "
                                          "stack's containers; a change rewrites the file in place")
    dns: Annotated[tuple[IPAddress, ...],
                   BeforeValidator(resolv.to_items, json_schema_input_type=str | list[str])] = Field(
        (), description="nameservers of its resolv.conf instead of the host's; a change "
                                          "rewrites the file in place")
    dns_search: Annotated[tuple[str, ...], BeforeValidator(resolv.to_items, json_schema_input_type=str | list[str]),
                          AfterValidator(resolv.check_search_domains)] = Field(
        (), description="search domains instead of the host's; \".\": none")
    dns_opt: Annotated[tuple[Annotated[str, AfterValidator(resolv.check_resolver_option)], ...],
                       BeforeValidator(resolv.to_items, json_schema_input_type=str | list[str])] = Field(
        (), description="resolver options (ndots:2, edns0, ...) instead of the host's")
    ports: list[Annotated[PortMapping,
                          BeforeValidator(to_port_mapping, json_schema_input_type=str | PortMapping)]] = Field(
        default_factory=list, description="published ports (not on internal networks)")
    resources: Resources = Resources()
    volumes: list[Annotated[Volume, BeforeValidator(to_volume, json_schema_input_type=str | Volume)]] = Field(
        default_factory=list)
    tmpfs: Annotated[tuple[Annotated[Tmpfs, BeforeValidator(to_tmpfs, json_schema_input_type=str | Tmpfs)], ...],
                     BeforeValidator(to_tuple, json_schema_input_type=list[str | Tmpfs])] = Field(
        (), description="tmpfs mounts: \"/PATH[:OPTIONS]\" as Docker's --tmpfs (size=64m, "
                                          "mode=1777, uid=, gid=, ro, exec), or mappings")
    shm_size: TmpfsSize | None = Field(
        None, description="size of /dev/shm: bytes, or Ki Mi Gi (1024), K M G (1000); default: 64Mi, as Docker")
    depends_on: DependsOn = Field(
        default_factory=list, description="containers started before this one: a list (start order only), "
                                          "or Compose's mapping key -> {condition, required, restart}")
    healthcheck: Healthcheck | None = Field(None, description="as Docker Compose's; a change of it alone "
                                                              "keeps the running process")
    restart_on_unhealthy: bool = Field(False, description="true: `reconcile watch` stops the container once "
                                                          "unhealthy, and its restart policy starts it again")
    stop_signal: Annotated[str, BeforeValidator(to_stop_signal, json_schema_input_type=str | int)] | None = Field(
        None, description="what stops it (SIGINT, INT or 2; SIGKILL follows after stop_grace); default: the "
                          "image's StopSignal, else SIGTERM, as Docker")
    stop_grace: float = Field(10.0, ge=0, le=MAX_STOP_GRACE, allow_inf_nan=False,
                              description="seconds between the stop signal and SIGKILL")
    ulimits: dict[UlimitName, Annotated[Ulimit, BeforeValidator(
        to_ulimit, json_schema_input_type=int | Literal["unlimited"] | Ulimit)]] = Field(
        default_factory=dict, description="resource limits by name, as Docker's: nofile: 65536 (soft and hard), "
                                          "or {soft, hard}; -1 or unlimited: no limit. Left out: nofile "
                                          "1024:524288, nproc unlimited, core 0:unlimited, the others the "
                                          "host's; a change recreates the container")
    sysctls: dict[SysctlName, SysctlValue] = Field(
        default_factory=dict, description="kernel parameters of the container's own namespaces, as Docker's: "
                                          "net.*, fs.mqueue.*, kernel.msg*, kernel.sem, kernel.shm*. Left out: "
                                          "net.ipv4.ip_unprivileged_port_start 0 and net.ipv4.ping_group_range "
                                          "'0 2147483647', as Docker; a change recreates the container")
    logging: Logging = Field(Logging(),
                             description="how much output `reconcile logs` keeps; a change recreates the container")

    @property
    def dependencies(self) -> dict[str, Dependency]:
        """depends_on in one shape: a listed name waits for its start only (service_started)."""
        if isinstance(self.depends_on, dict):
            return dict(self.depends_on)
        return {name: Dependency(condition="service_started") for name in self.depends_on}

    @property
    def probed(self) -> bool:
        """Whether the container has a health check to run."""
        return self.healthcheck is not None and self.healthcheck.enabled

    def _resolve(self, key: str, networks: dict[str, Network]) -> Container:
        update: dict[str, object] = {}
        if self.hostname is None:
            update["hostname"] = key
        if self.image is None:  # an image's config fills these in (reconcile.engine.pinning)
            if self.workdir is None:
                update["workdir"] = "/"
            if self.healthcheck is not None:
                update["healthcheck"] = self.healthcheck.over(None)
            if self.entrypoint:
                update.update(entrypoint=None, command=[*self.entrypoint, *self.command])
        if "default_route" not in self.model_fields_set:
            routed = (name for name in self.networks if name in networks and not networks[name].internal)
            update["default_route"] = next(routed, None)
        return self.model_copy(update=update) if update else self


class Stack(SpecModel):
    """A reconcile stack file (v1): networks and the containers attached to them."""

    name: StackName = Field(description="unique across a directory; prefixes every kernel object")
    networks: dict[NetworkKey, Network] = Field(default_factory=dict, description="bridge networks by key")
    containers: dict[ContainerKey, Container] = Field(
        default_factory=dict, description="containers by key; the key is also their name on the networks")
    volumes: dict[VolumeName, Annotated[NamedVolume,
                                        BeforeValidator(reject_volume_drivers,
                                                        json_schema_input_type=NamedVolume | None)]] = Field(
        default_factory=dict, description="named volumes by name ({} or nothing): directories kept under the "
                                          "state dir, mounted by a container volume whose source is the name")

    @model_validator(mode="after")
    def _resolve_defaults(self) -> Stack:
        networks = {key: network._resolve(self.name, key) for key, network in self.networks.items()}
        containers = {key: container._resolve(key, networks) for key, container in self.containers.items()}
        return self.model_copy(update={"networks": networks, "containers": containers})
