"""The pure Compose -> native mapping: exact native documents for the keys Compose users write,
the warnings for keys without effect, and Compose's project-name normalisation."""

from __future__ import annotations

import textwrap
from ipaddress import IPv6Address, IPv6Network

import pytest

from specs.compose_map import normalise_project_name, to_native
from specs.compose_service import ComposeContext
from specs.document import UnreadableText, parse_fully
from specs.errors import format_loc
from specs.model import Stack

NET = """\
networks:
  default:
    ipam:
      config: [{subnet: 10.89.0.0/24}]
"""
ENV_FILES = {"/srv/app/web.env": "# comment\nFROM_FILE=1\nSHARED=file\nexport QUOTED=\"a b\"\nLITERAL='$X'\n",
             "/etc/extra.env": "EXTRA=yes\n",
             "/srv/app/chain.env": "A=1\nB=${A}2\nC=${FROM_FILE}-${X}\nSHARED=${SHARED}+chain\n",
             "/srv/app/raw.env": "  RAW='$X' \"q\" \r\n# comment\nEMPTY=\nNOT_SET\nFROM_SHELL\n"}


def _read(path: str) -> str:
    if path not in ENV_FILES:
        raise UnreadableText("cannot read the file: No such file or directory", missing=True)
    return ENV_FILES[path]


CONTEXT = ComposeContext("/srv/app", {"HOME": "/home/u", "FROM_SHELL": "shell", "X": "x"}, _read)


def convert(text: str, profiles: tuple[str, ...] = ()):
    document = parse_fully(textwrap.dedent(text), "compose.yaml").data
    assert isinstance(document, dict)
    return to_native(document, CONTEXT, "app", profiles)


def service(text: str) -> dict[str, object]:
    """The native container `web` of a file of two services (web can depend on db) on the
    default network."""
    web = textwrap.indent(textwrap.dedent(text), "    ")
    native = convert("services:\n  db: {image: busybox}\n  web:\n" + web + NET).native
    containers = native["containers"]
    assert isinstance(containers, dict)
    Stack.model_validate(native)  # every expected document is a valid stack
    return containers["web"]


DEFAULT = {"restart": "no", "networks": {"default": {}}}
"""What every service gets unless it says otherwise: Compose restarts nothing by default."""

SERVICES: list[tuple[str, str, dict[str, object]]] = [
    ("image-command-entrypoint", """\
        image: busybox:1.36
        entrypoint: /bin/sh -c
        command: ["echo hi"]
        working_dir: /srv
        user: "1000:1000"
        hostname: box
        """,
     {"image": "busybox:1.36", "entrypoint": "/bin/sh -c", "command": ["echo hi"], "workdir": "/srv",
      "hostname": "box", "user": "1000:1000", **DEFAULT}),
    ("confinement", """\
        image: busybox
        read_only: true
        privileged: false
        cap_add: [NET_ADMIN]
        cap_drop: [ALL]
        security_opt: ["no-new-privileges:true"]
        """,
     {"image": "busybox", "read_only": True, "privileged": False, "cap_add": ["NET_ADMIN"], "cap_drop": ["ALL"],
      "security_opt": ["no-new-privileges:true"], **DEFAULT}),
    ("environment-list", """\
        image: busybox
        environment: ["A=1", "B=", "FROM_SHELL", "NOT_SET", "C=x=y"]
        """,
     {"image": "busybox", "env": {"A": "1", "B": "", "FROM_SHELL": "shell", "C": "x=y"}, **DEFAULT}),
    ("environment-map", """\
        image: busybox
        environment: {A: 1, B: true, C: 1.5, FROM_SHELL: null, NOT_SET: null, D: text}
        """,
     {"image": "busybox", "env": {"A": "1", "B": "true", "C": "1.5", "FROM_SHELL": "shell", "D": "text"},
      **DEFAULT}),
    ("env-file-then-environment", """\
        image: busybox
        env_file: [web.env, {path: /etc/extra.env}, {path: missing.env, required: false}]
        environment: {SHARED: environment}
        """,
     {"image": "busybox", "env": {"FROM_FILE": "1", "SHARED": "environment", "QUOTED": "a b", "LITERAL": "$X",
                                  "EXTRA": "yes"}, **DEFAULT}),
    # compose-go expands an env file's value against the lines above and the files before
    # (dotenv.expandVariables), then the environment; `format: raw` takes values verbatim.
    ("env-file-chained-and-raw", """\
        image: busybox
        env_file: [web.env, chain.env, {path: raw.env, format: raw}]
        """,
     {"image": "busybox", "env": {"FROM_FILE": "1", "SHARED": "file+chain", "QUOTED": "a b", "LITERAL": "$X",
                                  "A": "1", "B": "12", "C": "1-x", "RAW": "'$X' \"q\" ", "EMPTY": "",
                                  "FROM_SHELL": "shell"}, **DEFAULT}),
    ("env-file-string", """\
        image: busybox
        env_file: web.env
        """,
     {"image": "busybox", "env": {"FROM_FILE": "1", "SHARED": "file", "QUOTED": "a b", "LITERAL": "$X"},
      **DEFAULT}),
    ("ports", """\
        image: busybox
        ports:
          - "8080:80"
          - 127.0.0.1:5353:53/udp
          - "9000-9001:90-91"
          - target: 443
            published: "8443"
            host_ip: 127.0.0.1
            protocol: tcp
            mode: host
        """,
     {"image": "busybox", **DEFAULT, "ports": [
         {"host": 8080, "container": 80}, {"host": 5353, "container": 53, "protocol": "udp", "host_ip": "127.0.0.1"},
         {"host": 9000, "container": 90}, {"host": 9001, "container": 91},
         {"host": 8443, "container": 443, "protocol": "tcp", "host_ip": "127.0.0.1"}]}),
    ("volumes", """\
        image: busybox
        volumes:
          - ./data:/data
          - /etc/ssl:/ssl:ro
          - ~/cache:/cache:rw
          - type: bind
            source: ../shared
            target: /shared
            read_only: true
          - type: bind
            source: ./made
            target: /made
            bind: {create_host_path: true}
        """,
     # The short syntax makes a missing host directory (as docker run -v); the long one when asked.
     {"image": "busybox", **DEFAULT, "volumes": [
         {"source": "/srv/app/data", "target": "/data", "create_host_path": True},
         {"source": "/etc/ssl", "target": "/ssl", "read_only": True, "create_host_path": True},
         {"source": "/home/u/cache", "target": "/cache", "create_host_path": True},
         {"source": "/srv/shared", "target": "/shared", "read_only": True},
         {"source": "/srv/app/made", "target": "/made", "create_host_path": True}]}),
    ("tmpfs", """\
        image: busybox
        read_only: true
        tmpfs: [/run, "/tmp:size=64m,mode=1770,exec"]
        shm_size: 1gb
        volumes:
          - type: tmpfs
            target: /cache
            tmpfs: {size: 2M, mode: 0o750}
          - /etc/ssl:/ssl:ro
          - {type: tmpfs, target: /scratch, read_only: false, tmpfs: {size: 0, mode: "1777"}}
        """,
     # The service's own tmpfs entries as written (the native model reads Docker's syntax), then
     # the volumes of type tmpfs; sizes as Docker's (powers of 1024), a size of 0 none at all.
     {"image": "busybox", **DEFAULT, "read_only": True, "shm_size": 1024**3,
      "tmpfs": ["/run", "/tmp:size=64m,mode=1770,exec", {"target": "/cache", "size": 2 * 1024**2, "mode": "750"},
                {"target": "/scratch", "mode": "1777", "read_only": False}],
      "volumes": [{"source": "/etc/ssl", "target": "/ssl", "read_only": True, "create_host_path": True}]}),
    ("tmpfs-string", """\
        image: busybox
        tmpfs: /run
        shm_size: 0
        """,
     {"image": "busybox", **DEFAULT, "tmpfs": ["/run"]}),  # shm_size 0: Docker's default (64m)
    ("limits", """\
        image: busybox
        mem_limit: 512m
        cpus: "1.5"
        pids_limit: 100
        cpuset: "0"
        cpu_shares: 512
        """,
     {"image": "busybox", **DEFAULT, "resources": {"memory": 512 * 1024**2, "cpus": 1.5, "pids": 100,
                                                   "cpuset": "0", "cpu_shares": 512}}),
    ("cpu-shares-text", """\
        image: busybox
        cpu_shares: "2048"
        """,
     {"image": "busybox", **DEFAULT, "resources": {"cpu_shares": 2048}}),
    # Docker: 1 is below the kernel's least weight and runs as 2 (v1; runc and crun give both weight 1 on v2)
    ("cpu-shares-one", """\
        image: busybox
        cpu_shares: 1
        """,
     {"image": "busybox", **DEFAULT, "resources": {"cpu_shares": 2}}),
    ("deploy-limits", """\
        image: busybox
        mem_limit: 1g
        deploy:
          replicas: 1
          resources:
            limits: {cpus: '0.25', memory: 1gb, pids: 50}
        """,
     {"image": "busybox", **DEFAULT, "resources": {"memory": 1024**3, "cpus": 0.25, "pids": 50}}),
    ("binary-unit-sizes", """\
        image: busybox
        mem_limit: 1GiB
        deploy: {resources: {limits: {memory: 1024mi}}}
        """,
     {"image": "busybox", **DEFAULT, "resources": {"memory": 1024**3}}),
    ("no-limits", """\
        image: busybox
        cpus: 0
        pids_limit: -1
        cpu_shares: 0
        """,
     {"image": "busybox", **DEFAULT}),  # cpu_shares 0: Docker's "not set", the default weight
    ("restart-stop-logging", """\
        image: busybox
        restart: "no"
        stop_grace_period: 1m30s
        stop_signal: SIGINT
        pull_policy: if_not_present
        logging:
          driver: local
          options: {max-size: 10m, max-file: "3"}
        """,
     {"image": "busybox", "pull": "missing", "restart": "no", **DEFAULT, "stop_grace": 90.0, "stop_signal": "SIGINT",
      "logging": {"driver": "local", "options": {"max-size": "10m", "max-file": "3"}}}),
    # docker compose reads deploy.restart_policy (over restart:): none, on-failure, any; no
    # condition restarts nothing (pkg/compose/create.go getRestartPolicy).
    ("restart-policy-any", """\
        image: busybox
        restart: "no"
        deploy: {restart_policy: {condition: any}}
        """,
     {"image": "busybox", **DEFAULT, "restart": "always"}),
    ("restart-policy-none", """\
        image: busybox
        deploy: {restart_policy: {condition: none}}
        """,
     {"image": "busybox", **DEFAULT}),
    ("restart-policy-on-failure", """\
        image: busybox
        deploy: {restart_policy: {condition: on-failure, max_attempts: 5}}
        """,
     {"image": "busybox", **DEFAULT, "restart": "on-failure"}),
    ("restart-policy-without-condition", """\
        image: busybox
        restart: always
        deploy: {restart_policy: {max_attempts: 5}}
        """,
     {"image": "busybox", **DEFAULT}),
    ("ulimits-as-written", """\
        image: busybox
        ulimits: {nofile: {soft: 65536, hard: 65536}, memlock: -1, nproc: 65535}
        """,
     {"image": "busybox", "ulimits": {"nofile": {"soft": 65536, "hard": 65536}, "memlock": -1, "nproc": 65535},
      **DEFAULT}),
    ("network-mode-none", """\
        image: busybox
        network_mode: none
        """,
     {"image": "busybox", "restart": "no", "networks": {}}),
    ("depends-on-and-healthcheck-as-written", """\
        image: busybox
        depends_on: {db: {condition: service_healthy}}
        healthcheck: {test: ["CMD", "true"], interval: 5s}
        """,
     {"image": "busybox", "healthcheck": {"test": ["CMD", "true"], "interval": "5s"}, **DEFAULT,
      "depends_on": {"db": {"condition": "service_healthy"}}}),
]


@pytest.mark.parametrize("text, expected", [case[1:] for case in SERVICES], ids=[case[0] for case in SERVICES])
def test_a_service_maps_to_this_container(text: str, expected: dict[str, object]) -> None:
    assert service(text) == expected


def test_networks_and_the_stack_name() -> None:
    converted = convert("""\
        name: shop
        services:
          web:
            image: busybox
            networks: [front, back]
          db:
            image: busybox
            networks:
              back: {ipv4_address: 10.89.2.10}
        networks:
          front:
            driver: bridge
            driver_opts: {com.docker.network.driver.mtu: "1400", com.docker.network.bridge.name: br-shop}
            ipam:
              driver: default
              config: [{subnet: 10.89.1.0/24, gateway: 10.89.1.254}]
          back:
            internal: true
            ipam: {config: [{subnet: 10.89.2.0/24}]}
        """)
    assert converted.native == {
        "name": "shop",
        "networks": {"front": {"subnet": "10.89.1.0/24", "gateway": "10.89.1.254", "mtu": 1400, "bridge": "br-shop"},
                     "back": {"subnet": "10.89.2.0/24", "internal": True}},
        "containers": {"web": {"image": "busybox", "restart": "no", "networks": {"front": {}, "back": {}}},
                       "db": {"image": "busybox", "restart": "no", "networks": {"back": {"ip": "10.89.2.10"}}}}}
    assert converted.warnings == []
    Stack.model_validate(converted.native)


def test_dual_stack_networks_map_to_subnet6_and_masquerade_as_docker_does() -> None:
    """Docker masquerades IPv6 by default (gateway mode nat): so does a Compose network, unless
    it asks for routed; an internal network has nothing to masquerade."""
    converted = convert("""\
        services:
          web:
            image: busybox
            networks:
              front: {ipv4_address: 10.89.1.10, ipv6_address: "fd00:89:1::10"}
              public: {}
              back: {}
        networks:
          front:
            enable_ipv6: true
            ipam: {config: [{subnet: "fd00:89:1::/64", gateway: "fd00:89:1::fe"}, {subnet: 10.89.1.0/24}]}
          public:
            enable_ipv6: true
            driver_opts: {com.docker.network.bridge.gateway_mode_ipv6: routed}
            ipam: {config: [{subnet: "2001:db8:1::/64"}]}
          back:
            internal: true
            enable_ipv6: true
            ipam: {config: [{subnet: "fd00:89:2::/64"}]}
        """)
    assert converted.native["networks"] == {
        "front": {"subnet6": "fd00:89:1::/64", "gateway6": "fd00:89:1::fe", "subnet": "10.89.1.0/24",
                  "ipv6_nat": True},
        "public": {"subnet6": "2001:db8:1::/64", "ipv6_nat": False},
        "back": {"subnet6": "fd00:89:2::/64", "internal": True}}
    assert converted.native["containers"] == {"web": {"image": "busybox", "restart": "no", "networks": {
        "front": {"ip": "10.89.1.10", "ip6": "fd00:89:1::10"}, "public": {}, "back": {}}}}
    assert converted.warnings == []
    stack = Stack.model_validate(converted.native)
    assert [(n.subnet6, n.gateway6, n.ipv6_nat) for n in stack.networks.values()] == [
        (IPv6Network("fd00:89:1::/64"), IPv6Address("fd00:89:1::fe"), True),
        (IPv6Network("2001:db8:1::/64"), IPv6Address("2001:db8:1::1"), False),
        (IPv6Network("fd00:89:2::/64"), IPv6Address("fd00:89:2::1"), False)]


def test_networks_without_ipam_get_no_subnet_and_services_without_networks_join_default() -> None:
    """Their subnets come from the pool at apply time (reconcile.engine.subnets)."""
    converted = convert("""\
        services:
          web: {image: busybox}
          db: {image: busybox, networks: [back]}
        networks:
          back: {ipam: {driver: default}}
        """)
    assert converted.native == {
        "name": "app",
        "networks": {"back": {}, "default": {}},
        "containers": {"web": {"image": "busybox", "restart": "no", "networks": {"default": {}}},
                       "db": {"image": "busybox", "restart": "no", "networks": {"back": {}}}}}
    stack = Stack.model_validate(converted.native)
    assert [(n.subnet, n.gateway) for n in stack.networks.values()] == [(None, None), (None, None)]


def test_network_names_with_underscores_dots_or_capitals_become_network_keys() -> None:
    """Network keys name kernel objects (bridges, link marks): `app_net` and `Backend.Net` are
    `app-net` and `backend-net`, in the networks and in every service's list; errors about them
    still point at the Compose names (their origins)."""
    converted = convert("""\
        services:
          web: {image: busybox, networks: [app_net]}
          api: {image: busybox, networks: {Backend.Net: {aliases: [backend]}}}
        networks:
          app_net: {}
          Backend.Net: {}
        """)
    assert converted.native["networks"] == {"app-net": {}, "backend-net": {}}
    containers = converted.native["containers"]
    assert isinstance(containers, dict)
    assert containers["web"]["networks"] == {"app-net": {}}
    assert containers["api"]["networks"] == {"backend-net": {"aliases": ["backend"]}}
    assert converted.origins.translate(("networks", "backend-net")) == ("networks", "Backend.Net")
    Stack.model_validate(converted.native)


def test_service_names_become_container_keys_and_stay_names_peers_resolve() -> None:
    """Service names name kernel objects too (netns, cgroups): `my_db` and `Cache.Main` run as
    `my-db` and `cache-main`, which `depends_on` (both forms) names; each keeps its Compose name
    as its last alias on every network, so `my_db` still resolves there, as in docker compose. A
    service named as its key, or with no network, gets no alias."""
    converted = convert("""\
        services:
          my_db: {image: busybox, networks: {back: {aliases: [db]}, default: {}}}
          Cache.Main: {image: busybox, network_mode: none}
          web: {image: busybox, depends_on: [my_db], networks: [back]}
          api: {image: busybox, depends_on: {my_db: {condition: service_started}}, networks: [back]}
        networks:
          back: {}
          default: {}
        """)
    containers = converted.native["containers"]
    assert isinstance(containers, dict)
    assert list(containers) == ["my-db", "cache-main", "web", "api"]
    assert containers["my-db"]["networks"] == {"back": {"aliases": ["db", "my_db"]}, "default": {"aliases": ["my_db"]}}
    assert containers["cache-main"]["networks"] == {}
    assert containers["web"]["networks"] == {"back": {}} and containers["web"]["depends_on"] == ["my-db"]
    assert containers["api"]["depends_on"] == {"my-db": {"condition": "service_started"}}
    translate = converted.origins.translate
    assert translate(("containers", "my-db", "networks", "default", "aliases", 0)) == ("services", "my_db")
    assert translate(("containers", "my-db", "networks", "back", "aliases", 0)) == (
        "services", "my_db", "networks", "back", "aliases", 0)
    assert translate(("containers", "api", "depends_on", "my-db", "condition")) == (
        "services", "api", "depends_on", "my_db", "condition")
    assert translate(("containers", "cache-main", "image")) == ("services", "Cache.Main", "image")
    Stack.model_validate(converted.native)


def test_secrets_and_configs_are_read_only_bind_volumes_of_their_files() -> None:
    """docker compose without Swarm: a secret at /run/secrets/NAME (or its relative target
    there), a config at /NAME (or its target), after the service's own volumes; `file:` is from
    the Compose file's directory, with or without ./; uid, gid and mode are warnings."""
    converted = convert("""\
        services:
          web:
            image: busybox
            volumes: ["./data:/data"]
            secrets: [db_pw, {source: db_pw, target: pw, uid: "0", gid: "0"}, {source: tls, target: /etc/tls.pem}]
            configs: [nginx, {source: nginx, target: conf/nginx.conf}]
        secrets:
          db_pw: {file: ./secrets/db_pw.txt}
          tls: {file: /etc/ssl/web.pem}
        configs:
          nginx: {file: nginx.conf, name: web-nginx}
        """)
    containers = converted.native["containers"]
    assert isinstance(containers, dict)
    assert containers["web"]["volumes"] == [
        {"source": "/srv/app/data", "target": "/data", "create_host_path": True},
        {"source": "/srv/app/secrets/db_pw.txt", "target": "/run/secrets/db_pw", "read_only": True},
        {"source": "/srv/app/secrets/db_pw.txt", "target": "/run/secrets/pw", "read_only": True},
        {"source": "/etc/ssl/web.pem", "target": "/etc/tls.pem", "read_only": True},
        {"source": "/srv/app/nginx.conf", "target": "/nginx", "read_only": True},
        {"source": "/srv/app/nginx.conf", "target": "/conf/nginx.conf", "read_only": True}]
    assert [(format_loc(w.loc), w.message.split(":")[0]) for w in converted.warnings] == [
        ("configs.nginx.name", "has no effect here"),
        ("services.web.secrets[1]", "uid has no effect here"), ("services.web.secrets[1]", "gid has no effect here")]
    assert converted.origins.translate(("containers", "web", "volumes", 4)) == ("services", "web", "configs", 0)
    Stack.model_validate(converted.native)


def test_a_secret_on_a_target_mounted_already_is_left_out_as_docker_compose_leaves_it() -> None:
    """The service's own volume there stays, or the first entry; targets are compared as paths
    (`./pw` is `/run/secrets/pw`); `~` in `file:` is $HOME."""
    converted = convert("""\
        services:
          web:
            image: busybox
            volumes: ["./mine:/run/secrets/db_pw:ro"]
            secrets: [db_pw, {source: tls, target: ./pw}, {source: db_pw, target: pw}]
        secrets:
          db_pw: {file: db_pw.txt}
          tls: {file: ~/tls.pem}
        """)
    containers = converted.native["containers"]
    assert isinstance(containers, dict)
    assert containers["web"]["volumes"] == [
        {"source": "/srv/app/mine", "target": "/run/secrets/db_pw", "read_only": True, "create_host_path": True},
        {"source": "/home/u/tls.pem", "target": "/run/secrets/pw", "read_only": True}]
    assert [(format_loc(w.loc), w.message) for w in converted.warnings] == [
        ("services.web.secrets[0]", "left out: /run/secrets/db_pw is mounted already by this service (docker "
                                    "compose leaves it out too)"),
        ("services.web.secrets[2]", "left out: /run/secrets/pw is mounted already by this service (docker "
                                    "compose leaves it out too)")]
    assert converted.origins.translate(("containers", "web", "volumes", 1)) == ("services", "web", "secrets", 1)
    Stack.model_validate(converted.native)


def test_sysctls_as_a_mapping_or_a_list_are_the_native_mapping() -> None:
    converted = convert("""\
        services:
          a: {image: busybox, sysctls: {net.core.somaxconn: 1024, kernel.shmmax: "65536"}}
          b: {image: busybox, sysctls: ["net.core.somaxconn=1024", "net.ipv4.ping_group_range = 0 0"]}
        """)
    containers = converted.native["containers"]
    assert isinstance(containers, dict)
    assert containers["a"]["sysctls"] == {"net.core.somaxconn": 1024, "kernel.shmmax": "65536"}
    assert containers["b"]["sysctls"] == {"net.core.somaxconn": "1024", "net.ipv4.ping_group_range": "0 0"}
    assert converted.origins.translate(("containers", "b", "sysctls", "net.ipv4.ping_group_range")) == (
        "services", "b", "sysctls", 1)
    stack = Stack.model_validate(converted.native)
    assert stack.containers["a"].sysctls == {"net.core.somaxconn": "1024", "kernel.shmmax": "65536"}


def test_services_listing_no_networks_or_default_are_on_the_implicit_default() -> None:
    """Compose attaches a service with `networks: []` or `{}` to `default` (compose-go
    loader/normalize.go), and `default` exists for any service to list, declared or not."""
    converted = convert("""\
        services:
          a: {image: busybox, networks: []}
          b: {image: busybox, networks: {}}
          c: {image: busybox, networks: [default, front]}
          d: {image: busybox, networks: {front: {}, default: {}}}
        networks:
          front: {}
        """)
    assert converted.native["networks"] == {"front": {}, "default": {}}
    containers = converted.native["containers"]
    assert isinstance(containers, dict)
    assert {name: container["networks"] for name, container in containers.items()} == {
        "a": {"default": {}}, "b": {"default": {}}, "c": {"default": {}, "front": {}},
        "d": {"front": {}, "default": {}}}
    Stack.model_validate(converted.native)


def test_named_volumes_map_to_the_stack_volumes() -> None:
    converted = convert("""\
        services:
          db:
            image: postgres
            volumes:
              - db_data:/var/lib/postgresql/data
              - "db_data:/backup:ro"
              - {type: volume, source: cache, target: /cache, read_only: true, volume: {nocopy: false}}
        volumes:
          db_data:
          cache: {driver: local}
        """)
    assert converted.native["volumes"] == {"db_data": {}, "cache": {}}
    assert converted.native["containers"]["db"]["volumes"] == [  # type: ignore[index]
        {"source": "db_data", "target": "/var/lib/postgresql/data"},
        {"source": "db_data", "target": "/backup", "read_only": True},
        {"source": "cache", "target": "/cache", "read_only": True}]
    stack = Stack.model_validate(converted.native)
    assert [v.volume_name for v in stack.containers["db"].volumes] == ["db_data", "db_data", "cache"]
    assert list(stack.volumes) == ["db_data", "cache"]


def test_services_with_profiles_run_only_when_a_profile_is_enabled() -> None:
    text = textwrap.dedent("""\
        services:
          web: {image: busybox}
          debug: {image: busybox, profiles: [debug]}
          tools: {image: busybox, profiles: [tools, debug]}
        """) + NET
    assert list(convert(text).native["containers"]) == ["web"]  # type: ignore[arg-type]
    assert list(convert(text, ("debug",)).native["containers"]) == ["web", "debug", "tools"]  # type: ignore[arg-type]
    assert list(convert(text, ("tools",)).native["containers"]) == ["web", "tools"]  # type: ignore[arg-type]


@pytest.mark.parametrize("directory, expected", [
    ("myapp", "myapp"), ("My App", "myapp"), ("__web.shop", "webshop"), ("my_app", "my_app"), ("1st", "1st"),
])
def test_the_project_name_is_the_directory_normalised_as_compose_does(directory: str, expected: str) -> None:
    assert normalise_project_name(directory) == expected


WARNINGS: list[tuple[str, str, list[str]]] = [
    ("expose-labels-init", """\
        image: busybox
        expose: ["80"]
        labels: {a: b}
        init: false
        container_name: web-1
        """,
     ["services.web.expose: has no effect here: containers on a shared network reach every port of each other, "
      "and only ports: publishes on the host",
      "services.web.labels: has no effect here: reconcile keeps no labels",
      "services.web.container_name: has no effect here: the container is named STACK/SERVICE (the service's name "
      "as a key)",
      "services.web.init: false has no effect here: every container runs an init (catatonit) as PID 1, as with "
      "init: true"]),
    ("restart-and-logging", """\
        image: busybox
        restart: unless-stopped
        logging: {driver: syslog}
        """,
     ["services.web.restart: unless-stopped is read as always: reconcile has no stopped-by-hand state",
      "services.web.logging.driver: logging driver 'syslog' has no effect here: output goes to "
      "reconcile's own rotated files (json-file, 8 MiB at most)"]),
    ("deploy", """\
        image: busybox
        restart: always
        deploy:
          restart_policy: {condition: on-failure, max_attempts: 3, delay: 5s, window: 1m}
          resources:
            reservations: {memory: 1g}
        """,
     ["services.web.deploy.restart_policy.max_attempts: has no effect here: a failed container is restarted with "
      "growing delays (reconcile watch)",
      "services.web.deploy.restart_policy.delay: has no effect here: docker compose ignores it too (a Swarm setting)",
      "services.web.deploy.restart_policy.window: has no effect here: docker compose ignores it too (a Swarm "
      "setting)",
      "services.web.restart: has no effect here: deploy.restart_policy wins, as in docker compose",
      "services.web.deploy.resources.reservations: has no effect here: reservations are not enforced"]),
    ("port-and-volume-hints", """\
        image: busybox
        ports: [{target: 80, published: 8080, name: http}]
        volumes: ["./data:/data:ro,z"]
        """,
     ["services.web.ports[0]: name has no effect here",
      "services.web.volumes[0]: volume mode 'z' has no effect here"]),
]


@pytest.mark.parametrize("text, expected", [case[1:] for case in WARNINGS], ids=[case[0] for case in WARNINGS])
def test_keys_without_effect_are_warnings(text: str, expected: list[str]) -> None:
    converted = convert("services:\n  web:\n" + textwrap.indent(textwrap.dedent(text), "    ") + NET)
    assert [f"{format_loc(w.loc)}: {w.message}" for w in converted.warnings] == expected
    Stack.model_validate(converted.native)


def test_ulimits_in_either_form_are_a_soft_and_a_hard_limit() -> None:
    """`nofile: 20000` is both limits, as Compose (compose-go's Single) and `docker run --ulimit
    nofile=20000` read it; -1 is no limit."""
    web = Stack.model_validate(convert("""\
        services:
          web:
            image: busybox
            ulimits: {nofile: 20000, nproc: {soft: 1024, hard: 2048}, memlock: -1}
        """).native).containers["web"]
    assert {name: (limit.soft, limit.hard) for name, limit in web.ulimits.items()} == {
        "nofile": (20000, 20000), "nproc": (1024, 2048), "memlock": (-1, -1)}


def test_an_alias_services_share_stays_with_the_first_and_is_dropped_from_the_others_with_a_warning() -> None:
    """docker compose takes it (its DNS answers with each); a native stack refuses it (an
    /etc/hosts name resolves to one container), so the Compose file still applies, as before."""
    converted = convert("""\
        services:
          web:
            image: busybox
            networks: {default: {aliases: [shared, www]}}
          api:
            image: busybox
            networks: {default: {aliases: [web, shared, api-v1]}}
        """)
    assert [f"{format_loc(w.loc)}: {w.message}" for w in converted.warnings] == [
        "services.api.networks.default.aliases[0]: alias 'web' on network 'default' already names service 'web': "
        "left out here (in /etc/hosts a name resolves to one container, where docker compose's DNS answers with "
        "each in turn)",
        "services.api.networks.default.aliases[1]: alias 'shared' on network 'default' already names service "
        "'web': left out here (in /etc/hosts a name resolves to one container, where docker compose's DNS answers "
        "with each in turn)"]
    stack = Stack.model_validate(converted.native)
    assert stack.containers["api"].networks["default"].aliases == ("api-v1",)
    assert stack.containers["web"].networks["default"].aliases == ("shared", "www")
    assert converted.origins.translate(("containers", "api", "networks", "default", "aliases", 0)) == \
        ("services", "api", "networks", "default", "aliases", 2)
