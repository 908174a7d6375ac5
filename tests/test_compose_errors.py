"""Compose files that cannot run here, and the exact lines `reconcile validate` prints: the
Compose file, line and column, the Compose field, and what to do. Errors the native stack
model finds name the Compose field the value came from."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from reconcile.cli import main
from specs.loader import load_path
from tests.specs_support import error_lines, load_text

NET = """\
networks:
  default:
    ipam: {config: [{subnet: 10.89.0.0/24}]}
"""

BAD: list[tuple[str, str, list[str]]] = [
    ("build-and-unknown-key", """\
        services:
          web:
            build: .
            imagee: busybox
        """,
     ["compose.yaml:3:5: services.web.build: building images is not supported: build and push the image, and "
      "name it in image:",
      "compose.yaml:4:5: services.web: unknown field 'imagee' (did you mean 'image'?)"]),
    ("no-image", """\
        services:
          host:
            command: cat /etc/shadow
          blank:
            image:
        """,
     ["compose.yaml:2:3: services.host: service 'host' has no image: name the image to run in image: (docker "
      "compose too refuses a service with neither an image nor a build context)",
      "compose.yaml:4:3: services.blank: service 'blank' has no image: name the image to run in image: (docker "
      "compose too refuses a service with neither an image nor a build context)"]),
    ("unsupported-service-keys", """\
        services:
          web:
            image: busybox
            network_mode: host
            devices: [/dev/fuse]
        """,
     ["compose.yaml:4:5: services.web.network_mode: network_mode 'host' is not supported: a container has a "
      "network namespace of its own; attach the service to networks: (or network_mode: none)",
      "compose.yaml:5:5: services.web.devices: is not supported by reconcile"]),
    ("extra-hosts-keys-that-are-no-names", """\
        services:
          web:
            image: busybox
            extra_hosts: {null: 10.0.0.1, 5: 10.0.0.2}
        """,
     ["compose.yaml:4:18: services.web.extra_hosts.5: expected a host name as the key, got an integer (5)",
      "compose.yaml:4:25: services.web.extra_hosts.None: expected a host name as the key, got null"]),
    ("network-mode", """\
        services:
          web:
            image: busybox
            network_mode: none
            networks: [default]
          db:
            image: busybox
            network_mode: bridge
        """,
     ["compose.yaml:4:5: services.web.network_mode: network_mode and networks cannot be combined (docker compose "
      "refuses them together too): keep one",
      "compose.yaml:8:5: services.db.network_mode: network_mode 'bridge' is not supported: use none, or attach the "
      "service to networks:"]),
    ("ports", """\
        services:
          web:
            image: busybox
            ports: ["80", "8000-8002:80-81", "[::1]:80:80", "53:53/sctp", {target: 80}, {target: 80, published: x}]
        """,
     ["compose.yaml:4:13: services.web.ports[0]: publishing on a random host port is not supported, got '80': "
      "write HOST:CONTAINER",
      "compose.yaml:4:19: services.web.ports[1]: host and container port ranges differ in length in "
      "'8000-8002:80-81'",
      "compose.yaml:4:38: services.web.ports[2]: IPv6 host addresses are not supported, got '[::1]:80:80': leave "
      "the address out, and the port is published on every host address, the IPv6 ones too for a container "
      "with an IPv6 address",
      "compose.yaml:4:53: services.web.ports[3]: unsupported protocol 'sctp' in '53:53/sctp': use tcp or udp",
      "compose.yaml:4:67: services.web.ports[4]: missing required field 'published': publishing on a random "
      "host port is not supported",
      "compose.yaml:4:105: services.web.ports[5].published: invalid port 'x' in 'x:80'"]),
    ("port-ranges-are-capped", """\
        services:
          web:
            image: busybox
            ports: ["1-65535:1-65535", "1-1024:1-1024", "2001-3024:1-1024", "4001-5024:1-1024"]
          db:
            image: busybox
            ports: ["6001-7024:1-1024", "8000:80"]
        """,
     ["compose.yaml:4:13: services.web.ports[0]: a range of 65535 ports in '1-65535:1-65535': an entry publishes "
      "at most 1024 ports",
      "compose.yaml:7:33: services.db.ports[1]: the file would publish more than 4096 ports with this entry: "
      "publish fewer ports"]),
    ("volumes", """\
        services:
          web:
            image: busybox
            volumes: [data:/data, /only, "./a:/a:shared", {type: npipe, target: /t}]
        volumes:
          data: {}
        """,
     ["compose.yaml:4:27: services.web.volumes[1]: anonymous volumes are not supported, got '/only': name the "
      "volume (NAME:TARGET, NAME declared in the top-level volumes) or mount a host directory (SOURCE:TARGET)",
      "compose.yaml:4:34: services.web.volumes[2]: unsupported volume mode 'shared' in './a:/a:shared': use ro "
      "or rw",
      "compose.yaml:4:58: services.web.volumes[3].type: volume type a string ('npipe') is not supported: use "
      "type: bind, type: volume or type: tmpfs"]),
    ("tmpfs", """\
        services:
          web:
            image: busybox
            shm_size: lots
            volumes:
              - {type: tmpfs, source: mem, target: /a}
              - {type: tmpfs, target: /b, tmpfs: {size: 2x}}
              - {type: tmpfs, target: /c, tmpfs: {mode: 0o17777}}
              - {type: tmpfs, target: /d, tmpfs: {uid: 1}}
              - {type: tmpfs, target: /e, bind: {propagation: rprivate}}
        """,
     ["compose.yaml:4:15: services.web.shm_size: expected a size like '512m', '1g' or a number of bytes, got a "
      "string ('lots')",
      "compose.yaml:6:31: services.web.volumes[0].source: a tmpfs has no source: leave source out",
      "compose.yaml:7:49: services.web.volumes[1].tmpfs.size: expected a size like '512m', '1g' or a number of "
      "bytes, got a string ('2x')",
      "compose.yaml:8:49: services.web.volumes[2].tmpfs.mode: expected permission bits up to 0o7777, in octal "
      "like '1777' or 0o1777, got 0o17777",
      "compose.yaml:9:48: services.web.volumes[3].tmpfs.uid: unknown field 'uid'",
      "compose.yaml:10:41: services.web.volumes[4].bind: bind options do not apply to type: tmpfs"]),
    ("tmpfs-options", """\
        services:
          web:
            image: busybox
            tmpfs: ["/tmp:exec,suid", /data]
            volumes: ["/srv:/data"]
          db:
            image: busybox
            tmpfs: "/run:size=0"
        """,
     ["compose.yaml:4:13: services.web.tmpfs[0]: tmpfs option 'suid' in '/tmp:exec,suid' is not supported: a "
      "tmpfs is always nosuid and nodev (no setuid programs), as Docker's default",
      "compose.yaml:8:12: services.db.tmpfs: must be at least 1 byte, got 0: the kernel reads 0 as no limit "
      "(leave the size out for the default)"]),
    ("tmpfs-over-a-volume", """\
        services:
          web:
            image: busybox
            tmpfs: [/run, /data]
            volumes: ["/srv:/data"]
        """,
     ["compose.yaml:4:19: services.web.tmpfs[1]: target /data is already mounted by volumes[0]"]),
    ("volume-name", """\
        services:
          web: {image: busybox, volumes: ["bad name:/b"]}
        """,
     ["compose.yaml:2:35: services.web.volumes[0]: expected an absolute path on the host or the name of a volume "
      "declared in volumes: (use 1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit), "
      "got 'bad name'"]),
    ("volume-undeclared", """\
        services:
          web: {image: busybox, volumes: ["dat:/d", {type: volume, source: other, target: /o}]}
        volumes:
          data:
        """,
     ["compose.yaml:2:35: services.web.volumes[0]: volume 'dat' is not declared in the top-level volumes "
      "(did you mean 'data'?)",
      "compose.yaml:2:45: services.web.volumes[1]: volume 'other' is not declared in the top-level volumes"]),
    ("named-volumes", """\
        services:
          web:
            image: busybox
            volumes:
              - {type: volume, target: /anon}
              - {type: volume, source: data, target: /d, volume: {nocopy: true}}
              - {type: volume, source: data, target: /e, volume: {subpath: x}}
        volumes:
          data:
          nfs: {driver: nfs, driver_opts: {type: nfs}}
          outside: {external: true}
        """,
     ["compose.yaml:5:16: services.web.volumes[0].type: anonymous volumes are not supported: name the volume in "
      "source: (declared in the top-level volumes)",
      "compose.yaml:6:67: services.web.volumes[1].volume.nocopy: nocopy is not supported: a new volume is filled "
      "with what the image holds at the mount point, as Docker does by default",
      "compose.yaml:7:68: services.web.volumes[2].volume.subpath: subpath is not supported: mount the whole volume",
      "compose.yaml:10:9: volumes.nfs.driver: volume driver 'nfs' is not supported: reconcile keeps volumes as "
      "local directories only (<state-dir>/volumes/STACK/NAME)",
      "compose.yaml:10:22: volumes.nfs.driver_opts: driver_opts are not supported: reconcile keeps volumes as "
      "local directories only (<state-dir>/volumes/STACK/NAME)",
      "compose.yaml:11:13: volumes.outside.external: external volumes are not supported: reconcile keeps volumes "
      "as local directories only (<state-dir>/volumes/STACK/NAME); declare the volume without external"]),
    ("networks", """\
        services:
          web: {image: busybox, networks: [front, back, ext]}
        networks:
          front: {driver: overlay, ipam: {config: [{subnet: 10.89.1.0/24}]}}
          back: {}
          ext: {external: true, ipam: {config: [{subnet: 10.89.2.0/24, ip_range: 10.89.2.0/25}]}}
        """,
     ["compose.yaml:4:19: networks.front.driver: network driver 'overlay' is not supported: only bridge networks",
      "compose.yaml:6:9: networks.ext.external: external networks are not supported: reconcile owns the bridges "
      "of its networks; declare the network here",
      "compose.yaml:6:64: networks.ext.ipam.config[0].ip_range: ip_range is not supported: addresses are "
      "allocated from the whole subnet, or set with ipv4_address"]),
    ("ipv6-networks", """\
        services:
          web:
            image: busybox
            networks: [nopool, gwonly, notenabled, twice, mode, flag]
            ports: [{target: 80, published: 80, host_ip: "::1"}]
        networks:
          nopool: {enable_ipv6: true}
          gwonly: {enable_ipv6: true, ipam: {config: [{gateway: "fd00:89:1::1"}]}}
          notenabled: {ipam: {config: [{subnet: 10.89.2.0/24}, {subnet: "fd00:89:2::/64"}]}}
          twice: {enable_ipv6: true, ipam: {config: [{subnet: "fd00:89:3::/64"}, {subnet: "fd00:89:4::/64"}]}}
          mode:
            enable_ipv6: true
            ipam: {config: [{subnet: "fd00:89:5::/64", ip_range: "fd00:89:5::/80"}]}
            driver_opts: {com.docker.network.bridge.gateway_mode_ipv6: isolated}
          flag: {enable_ipv6: "true"}
        """,
     ["compose.yaml:5:50: services.web.ports[0].host_ip: IPv6 host addresses are not supported, got '::1': leave "
      "the address out, and the port is published on every host address, the IPv6 ones too for a container "
      "with an IPv6 address",
      "compose.yaml:7:12: networks.nopool.enable_ipv6: enable_ipv6 needs an IPv6 subnet: reconcile has no IPv6 "
      "pool; add one to ipam.config, e.g. {subnet: fd00:89:1::/64} (a unique local prefix, or one of your "
      "global prefix)",
      "compose.yaml:8:12: networks.gwonly.enable_ipv6: enable_ipv6 needs an IPv6 subnet: reconcile has no IPv6 "
      "pool; add one to ipam.config, e.g. {subnet: fd00:89:1::/64} (a unique local prefix, or one of your "
      "global prefix)",
      "compose.yaml:9:56: networks.notenabled.ipam.config[1]: an IPv6 entry needs enable_ipv6: true on the "
      "network",
      "compose.yaml:10:74: networks.twice.ipam.config[1]: a second IPv6 entry (the first is config[0]): a "
      "network has one IPv6 subnet",
      "compose.yaml:13:48: networks.mode.ipam.config[0].ip_range: ip_range is not supported: addresses are "
      "allocated from the whole subnet, or set with ipv6_address",
      "compose.yaml:14:64: networks.mode.driver_opts.'com.docker.network.bridge.gateway_mod...': IPv6 "
      "gateway mode 'isolated' is not supported: use nat (masquerade, Docker's default) or routed (the containers' own "
      "addresses)",
      "compose.yaml:15:23: networks.flag.enable_ipv6: expected true or false, got a string ('true')"]),
    ("static-address-needs-a-declared-subnet", """\
        # no default network
        services:
          web: {image: busybox, networks: {back: {ipv4_address: 10.89.0.5}}}
        networks:
          back: {}
        """,
     ["compose.yaml:3:57: services.web.networks.back.ipv4_address: a static address needs a declared subnet: "
      "set networks.back.subnet (a subnet from the pool is not known before apply)"]),
    ("gateway-needs-a-subnet", """\
        services:
          web: {image: busybox, networks: [gw]}
        networks:
          gw: {ipam: {config: [{gateway: 10.89.1.1}]}}
        """,
     ["compose.yaml:4:34: networks.gw.ipam.config[0].gateway: a gateway needs a subnet: set subnet too, or "
      "neither (both then come from the subnet pool)"]),
    ("values", """\
        services:
          web:
            image: busybox
            mem_limit: lots
            stop_grace_period: 10
            env_file: missing.env
        """,
     ["compose.yaml:4:16: services.web.mem_limit: expected a size like '512m', '1g' or a number of bytes, got a "
      "string ('lots')",
      "compose.yaml:5:24: services.web.stop_grace_period: expected a duration like '10s', '1m30s' or '500ms', "
      "got an integer (10)",
      "compose.yaml:6:15: services.web.env_file: cannot read env_file 'missing.env': No such file or directory"]),
    ("restart-policy", """\
        services:
          web:
            image: busybox
            deploy: {restart_policy: {condition: sometimes, attempts: 3}}
          db:
            image: busybox
            deploy: {restart_policy: on-failure}
        """,
     ["compose.yaml:4:42: services.web.deploy.restart_policy.condition: expected none, on-failure or any, got a "
      "string ('sometimes')",
      "compose.yaml:4:53: services.web.deploy.restart_policy: unknown field 'attempts' (did you mean "
      "'max_attempts'?)",
      "compose.yaml:7:30: services.db.deploy.restart_policy: expected a mapping (condition, max_attempts), got a "
      "string ('on-failure')"]),
    ("env-file-entries", """\
        services:
          web:
            image: busybox
            env_file: [{path: a.env, required: false, optional: true}, {path: a.env, format: json}]
        """,
     ["compose.yaml:4:47: services.web.env_file[0]: unknown field 'optional'",
      "compose.yaml:4:86: services.web.env_file[1].format: expected raw (each line's value verbatim), or no "
      "format (Compose's own syntax), got a string ('json')"]),
    ("top-level", """\
        name: Shop
        include: [other.yaml]
        service: {}
        """,
     ["compose.yaml:1:7: name: the project name 'Shop' cannot be a stack name: use 1 to 16 lowercase letters, "
      "digits or '-', starting with a letter",
      "compose.yaml:2:1: include: is not supported by reconcile: put every service in this file",
      "compose.yaml:3:1: unknown field 'service' (did you mean 'services'?)"]),
]

"""Errors of the native model, at the Compose field the value came from."""
NATIVE: list[tuple[str, str, list[str]]] = [
    ("ipv6-addresses", """\
        services:
          web:
            image: busybox
            networks:
              v6: {ipv6_address: "fd00:89:2::5"}
              default: {ipv6_address: "fd00:89:1::5"}
          db:
            image: busybox
            networks: {v6: {ipv6_address: "fd00:89:1::1"}, back: {}}
        networks:
          default:
            ipam: {config: [{subnet: 10.89.0.0/24}]}
          v6:
            enable_ipv6: true
            ipam: {config: [{subnet: "fd00:89:1::/64"}]}
          back:
            internal: true
            enable_ipv6: true
            ipam: {config: [{subnet: "fd00:89:1::/80"}]}
            driver_opts: {com.docker.network.bridge.gateway_mode_ipv6: nat}
        """,
     ["compose.yaml:5:26: services.web.networks.v6.ipv6_address: address fd00:89:2::5 is outside subnet "
      "fd00:89:1::/64",
      "compose.yaml:6:31: services.web.networks.default.ipv6_address: a static IPv6 address needs a dual-stack "
      "network: set networks.default.subnet6",
      "compose.yaml:9:35: services.db.networks.v6.ipv6_address: address fd00:89:1::1 is the gateway of network "
      "'v6'",
      "compose.yaml:19:30: networks.back.ipam.config[0].subnet: subnet6 fd00:89:1::/80 overlaps networks.v6 "
      "(fd00:89:1::/64)",
      "compose.yaml:20:64: networks.back.driver_opts.'com.docker.network.bridge.gateway_mod...': "
      "ipv6_nat: true on an internal network: nothing leaves an internal network; remove ipv6_nat"]),
    ("fields", """\
        services:
          web:
            image: busybox
            ports: ["8080:80", {target: 80, published: 99999}]
            pids_limit: 0
            cap_add: [NOPE]
            cpu_shares: 300000
            environment: {BAD-NAME: x}
            networks:
              default: {ipv4_address: 10.89.1.5}
            healthcheck: {test: ["CMD", "true"], intervall: 5s}
            stop_signal: [INT]
        """,
     ["compose.yaml:5:17: services.web.pids_limit: must be at least 1, got 0",
      "compose.yaml:6:15: services.web.cap_add[0]: unknown capability 'NOPE': use a name like NET_ADMIN, or ALL",
      "compose.yaml:7:17: services.web.cpu_shares: must be at most 262144, got 300000",
      "compose.yaml:8:19: services.web.environment.BAD-NAME: invalid variable name 'BAD-NAME': use letters, "
      "digits and '_', not starting with a digit",
      "compose.yaml:11:42: services.web.healthcheck: unknown field 'intervall' (did you mean 'interval'?)",
      "compose.yaml:12:18: services.web.stop_signal: expected a signal name like SIGINT or INT, or its number, "
      "got a list",
      "compose.yaml:4:24: services.web.ports[1]: must be at most 65535, got 99999"]),
    ("ulimits", """\
        services:
          web:
            image: busybox
            ulimits:
              nofiles: 1024
              nproc: {soft: 1024}
              memlock: {soft: -1, hard: 65536}
              core: -2
        """,
     ["compose.yaml:5:7: services.web.ulimits.nofiles: unknown ulimit 'nofiles': use core, cpu, data, fsize, locks, "
      "memlock, msgqueue, nice, nofile, nproc, rss, rtprio, rttime, sigpending or stack",
      "compose.yaml:6:14: services.web.ulimits.nproc: missing required field 'hard'",
      "compose.yaml:7:23: services.web.ulimits.memlock.soft: soft limit unlimited is above the hard limit 65536",
      "compose.yaml:8:13: services.web.ulimits.core: must be a number from 0 to 9223372036854775807, or -1 for no "
      "limit, got -2"]),
    ("service-names", """\
        services:
          9_Lives: {image: busybox}
          web_app: {image: busybox}
          Web.App: {image: busybox}
        """,
     ["compose.yaml:2:3: services.9_Lives: the service name '9_Lives' cannot be a container key: use 1 to 63 "
      "lowercase letters, digits or '-', starting with a letter (capitals are read in lower case, '_' and '.' as "
      "'-')",
      "compose.yaml:4:3: services.'Web.App': services 'web_app' and 'Web.App' are one container key here, "
      "'web-app': rename one of them"]),
    ("secrets-and-configs", """\
        services:
          web:
            image: busybox
            secrets: [token, api_key, {source: token, target: t, owner: root}, {target: x}, 7]
            configs: [{source: nginx, target: /etc/nginx.conf}, nope]
        secrets:
          token: {environment: TOKEN}
          api_key: {file: ./key.txt, external: true}
          cert: {}
          pem: ./cert.pem
        configs:
          nginx: {file: [a]}
        """,
     ["compose.yaml:4:65: services.web.secrets[2].owner: unknown field 'owner'",
      "compose.yaml:4:72: services.web.secrets[3]: missing required field 'source'",
      "compose.yaml:4:85: services.web.secrets[4]: expected a secret name or a mapping (source, target), got an "
      "integer (7)",
      "compose.yaml:5:57: services.web.configs[1]: config 'nope' is not declared in the top-level configs "
      "(declared: nginx)",
      "compose.yaml:7:11: secrets.token.environment: has no file to mount here: write the value to a file and "
      "name it in file:",
      "compose.yaml:8:30: secrets.api_key.external: an external secret is Swarm's: declare it with file:",
      "compose.yaml:9:9: secrets.cert: missing required field 'file': the file to mount into the services that "
      "list the secret",
      "compose.yaml:10:8: secrets.pem: expected a mapping (file: PATH), got a string ('./cert.pem')",
      "compose.yaml:12:17: configs.nginx.file: expected a path, got a list"]),
    ("sysctls", """\
        services:
          web: {image: busybox, sysctls: {kernel.hostname: web, net.ipv4.tcp_syncookies: [1]}}
          api: {image: busybox, sysctls: ["net.core.somaxconn=1024", "Net.X=1"]}
        """,
     ["compose.yaml:2:35: services.web.sysctls.'kernel.hostname': kernel.hostname is not supported: set the "
      "container's hostname with hostname:",
      "compose.yaml:2:82: services.web.sysctls.'net.ipv4.tcp_syncookies': expected a number or text, got a list",
      "compose.yaml:3:62: services.api.sysctls[1]: invalid sysctl name 'Net.X': write it as sysctl(8) shows it, "
      "like net.core.somaxconn"]),
    ("sysctls-list", """\
        services:
          api: {image: busybox, sysctls: ["net.core.somaxconn=1024", somaxconn]}
        """,
     ["compose.yaml:2:62: services.api.sysctls[1]: expected NAME=VALUE, got a string ('somaxconn')"]),
    ("service-name-references", """\
        services:
          web_app: {image: busybox, depends_on: {Db_1: {condition: service_healthy}, cache: {}}}
          Db_1: {image: busybox}
        """,
     ["compose.yaml:2:85: services.web_app.depends_on.cache: missing required field 'condition'"]),
    ("service-name-twice-in-depends-on", """\
        services:
          web: {image: busybox, depends_on: {db_1: {condition: service_started}, db-1: {condition: service_started}}}
          db_1: {image: busybox}
        """,
     ["compose.yaml:2:74: services.web.depends_on.db-1: names the service another entry names, as the container "
      "'db-1': list it once"]),
    ("network-names-one-key", """\
        services:
          web: {image: busybox, networks: [back_end]}
        networks:
          back_end: {}
          Back-End: {}
        """,
     ["compose.yaml:5:3: networks.Back-End: networks 'back_end' and 'Back-End' are one network key here, "
      "'back-end': rename one of them"]),
    ("network-name-field-located", """\
        services:
          web: {image: busybox, networks: [app_net]}
        networks:
          app_net:
            ipam: {config: [{subnet: 10.77.7.0/24, gateway: 10.77.8.1}]}
        """,
     ["compose.yaml:5:53: networks.app_net.ipam.config[0].gateway: gateway 10.77.8.1 is outside subnet "
      "10.77.7.0/24"]),
    ("network-names-cross-reference", """\
        services:
          web: {image: busybox, networks: [a_b, a_b_2]}
        networks:
          a_b: {driver_opts: {com.docker.network.bridge.name: br-x}}
          a_b_2: {driver_opts: {com.docker.network.bridge.name: br-x}}
        """,
     ["compose.yaml:5:57: networks.a_b_2.driver_opts.'com.docker.network.bridge.name': bridge name 'br-x' is "
      "already used by networks.a_b: set networks.a-b-2.bridge to another name"]),
    ("network-name-undeclared", """\
        services:
          web: {image: busybox, networks: [back_end, front_net]}
        networks:
          back_end: {}
        """,
     ["compose.yaml:2:46: services.web.networks[1]: network 'front-net' is not defined in this stack"]),
    ("cross-checks", """\
        services:
          web: {image: busybox, networks: [defualt], depends_on: [dbb]}
          db:
            image: busybox
            networks:
              default: {ipv4_address: 10.77.0.5}
        """,
     ["compose.yaml:2:36: services.web.networks[0]: network 'defualt' is not defined in this stack (did you mean "
      "'default'?)",
      "compose.yaml:2:59: services.web.depends_on[0]: container 'dbb' is not defined in this stack (did you mean "
      "'db'?)",
      "compose.yaml:6:31: services.db.networks.default.ipv4_address: address 10.77.0.5 is outside subnet "
      "10.89.0.0/24"]),
]


@pytest.mark.parametrize("text, expected", [case[1:] for case in BAD + NATIVE],
                         ids=[case[0] for case in BAD + NATIVE])
def test_errors_name_the_compose_field_at_its_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    text: str, expected: list[str]) -> None:
    monkeypatch.delenv("COMPOSE_PROFILES", raising=False)
    project = tmp_path / "app"
    project.mkdir()
    body = textwrap.dedent(text)
    if "\nnetworks:" not in body and "# no default network" not in body:
        body += NET
    assert error_lines(project, {"compose.yaml": body}) == sorted(expected, key=_position)


def _position(line: str) -> tuple[int, int]:
    _, row, column, _ = line.split(":", 3)
    return int(row), int(column)


def test_a_directory_name_that_cannot_be_a_stack_name_asks_for_name(tmp_path: Path) -> None:
    project = tmp_path / "My_Shop"
    project.mkdir()
    assert error_lines(project, {"compose.yaml": "services: {}\n"}) == [
        "compose.yaml:1:1: the project name 'my_shop' (from the directory 'My_Shop') cannot be a stack name: use "
        "1 to 16 lowercase letters, digits or '-', starting with a letter; set name: in this file"]


def test_an_override_file_is_refused_by_name(tmp_path: Path) -> None:
    project = tmp_path / "app"
    project.mkdir()
    assert error_lines(project, {"compose.yaml": "services:\n  web: {image: busybox}\n",
                                 "compose.override.yaml": "services:\n  web: {ports: ['80:80']}\n"}) == [
        "compose.override.yaml:1:1: override files are not merged: docker compose would merge this one over the "
        "Compose file beside it; merge its services into that file, or rename this one to make it a project of its own"]


def test_a_compose_file_sits_beside_native_stacks(tmp_path: Path) -> None:
    project = tmp_path / "app"
    project.mkdir()
    (project / "native.yaml").write_text("name: other\ncontainers: {}\n")
    files = load_text(project, "services:\n  web: {image: busybox}\n" + NET, name="compose.yaml")
    assert [f.stack.name for f in files] == ["app"]
    assert sorted(f.stack.name for f in load_path(project)) == ["app", "other"]


def test_convert_prints_a_native_stack_file_that_validates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project = tmp_path / "app"
    project.mkdir()
    compose = project / "compose.yaml"
    compose.write_text("services:\n  web: {image: busybox, restart: 'no', expose: ['80'], ports: ['8080:80']}\n" + NET)
    assert main(["convert", str(compose)]) == 0
    printed = capsys.readouterr()
    assert printed.out == textwrap.dedent("""\
        name: app
        networks:
          default:
            subnet: 10.89.0.0/24
        containers:
          web:
            image: busybox
            restart: no
            networks:
              default: {}
            ports:
            - host: 8080
              container: 80
        """)
    assert printed.err.startswith(f"WARNING: {compose}:2:40: services.web.expose: has no effect here")
    native = project / "native.yml"
    compose.rename(project / "compose.txt")
    native.write_text(printed.out)
    assert [f.stack.name for f in load_path(native)] == ["app"]
    assert main(["convert", str(native)]) == 1
    assert capsys.readouterr().err == f"{native}: not a Compose file: it has no top-level services:\n"


def test_env_files_are_read_as_stack_files_are(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A FIFO would hang validate, /dev/zero eat the memory, and a scalar or non-UTF-8 file
    escaped without a place: each is an error at its env_file entry (`required: false` only
    forgives a missing file)."""
    monkeypatch.delenv("COMPOSE_PROFILES", raising=False)
    project = tmp_path / "app"
    project.mkdir()
    os.mkfifo(project / "fifo.env")
    (project / "big.env").write_text("A=" + "x" * 1024 * 1024 + "\n")
    assert error_lines(project, {"latin1.env": b"A=1\nB=caf\xe9\n", "compose.yaml": textwrap.dedent("""\
        services:
          fifo: {image: busybox, env_file: [{path: fifo.env, required: false}]}
          zero: {image: busybox, env_file: /dev/zero}
          big: {image: busybox, env_file: big.env}
          one: {image: busybox, env_file: 1}
          latin: {image: busybox, env_file: latin1.env}
        """) + NET}) == [
        "compose.yaml:2:37: services.fifo.env_file[0]: cannot read env_file 'fifo.env': not a regular file",
        "compose.yaml:3:36: services.zero.env_file: cannot read env_file '/dev/zero': not a regular file",
        "compose.yaml:4:35: services.big.env_file: cannot read env_file 'big.env': file is larger than 1 MiB: an "
        "env file is a few KiB of KEY=VALUE lines",
        "compose.yaml:5:35: services.one.env_file: expected a path, a list of paths or {path, required}, got an "
        "integer (1)",
        "compose.yaml:6:37: services.latin.env_file: cannot read latin1.env line 2: not UTF-8 text: invalid byte "
        "0xe9"]


def test_a_dotenv_that_is_no_regular_file_is_an_error_not_a_hang(tmp_path: Path) -> None:
    project = tmp_path / "app"
    project.mkdir()
    os.mkfifo(project / ".env")
    assert error_lines(project, {"compose.yaml": "services:\n  web: {image: busybox}\n" + NET}) == [
        f"{project / '.env'}: not a regular file"]


def test_convert_refuses_what_validate_refuses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A stack that validates field by field may still fail validate's checks across fields
    (a host port published twice): convert prints no stack then, and exits 1."""
    project = tmp_path / "app"
    project.mkdir()
    compose = project / "compose.yaml"
    compose.write_text("services:\n  web: {image: busybox, ports: ['8080:80']}\n"
                       "  api: {image: busybox, ports: ['8080:81']}\n" + NET)
    assert main(["validate", str(compose)]) == 1
    refused = capsys.readouterr()
    assert main(["convert", str(compose)]) == 1
    printed = capsys.readouterr()
    assert (printed.out, printed.err) == ("", refused.err)
    assert ("services.api.ports[0]: host port 0.0.0.0:8080/tcp conflicts with 0.0.0.0:8080/tcp of "
            "services.web.ports[0]\n") in printed.err  # the other field as this file names it
