"""Bad stack files and the exact error line `reconcile validate` prints for each: the field
path, the position (1-based line:col of the offending node, or of the mapping that lacks a
required key), and a message that says what to do."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic_core import ErrorDetails

from specs.messages import explain
from tests.specs_support import error_lines

BAD_INPUTS: list[tuple[str, str | bytes, str]] = [
    ("unknown-field-suggestion", """\
        name: demo
        networks:
          front:
            subnet: 10.88.1.0/24
        containers:
          web:
            command: [/bin/true]
            networks: [front]
            resources:
              cpus: 0.5
              memroy: 64Mi
        """,
     "stack.yaml:11:7: containers.web.resources: unknown field 'memroy' (did you mean 'memory'?)"),
    ("unknown-top-level", """\
        name: demo
        containers: {}
        services: {}
        """,
     "stack.yaml:3:1: unknown field 'services'"),
    ("missing-name", """\
        networks: {}
        """,
     "stack.yaml:1:1: missing required field 'name'"),
    ("gateway-without-subnet", """\
        name: demo
        networks:
          front:
            gateway: 10.88.1.1
        """,
     "stack.yaml:4:14: networks.front.gateway: a gateway needs a subnet: set subnet too, or neither (both then "
     "come from the subnet pool)"),
    ("missing-command", """\
        name: demo
        containers:
          web: {}
        """,
     "stack.yaml:3:8: containers.web: missing required field 'command' (the program to run), or an image whose command "
     "is run"),
    ("stack-name-pattern", """\
        name: My_App
        """,
     "stack.yaml:1:7: name: invalid stack name 'My_App': use 1 to 16 lowercase letters, digits or '-', starting with a "
     "letter"),
    ("network-key-pattern", """\
        name: demo
        networks:
          Front:
            subnet: 10.88.1.0/24
        """,
     "stack.yaml:3:3: networks.Front: invalid network key 'Front': use 1 to 63 lowercase letters, digits or '-', "
     "starting with a letter"),
    ("sysctl-of-the-host", """\
        name: demo
        containers:
          db: {command: [sleep, "1"], sysctls: {net.core.somaxconn: 1024, vm.max_map_count: 262144}}
        """,
     "stack.yaml:3:67: containers.db.sysctls.'vm.max_map_count': sysctl 'vm.max_map_count' is not a container's own: "
     "it would change the whole host; only kernel.msgmax, kernel.msgmnb, kernel.msgmni, kernel.sem, kernel.shmall, "
     "kernel.shmmax, kernel.shmmni, kernel.shm_rmid_forced, fs.mqueue.* and net.* are (as Docker allows)"),
    ("sysctl-value", """\
        name: demo
        containers:
          db: {command: [sleep, "1"], sysctls: {net.core.somaxconn: "a\\nb"}}
        """,
     "stack.yaml:3:61: containers.db.sysctls.'net.core.somaxconn': expected one line of at most 4096 characters, "
     "got 'a\\nb'"),
    ("sysctl-against-dual-stack", """\
        name: demo
        networks:
          v4: {subnet: 10.88.1.0/24}
          dual: {subnet: 10.88.2.0/24, subnet6: "fd00:88:2::/64"}
        containers:
          ok: {command: [sleep, "1"], networks: [v4], sysctls: {net.ipv6.conf.all.disable_ipv6: 1}}
          db: {command: [sleep, "1"], networks: [v4, dual], sysctls: {net.ipv6.conf.eth1.disable_ipv6: 1}}
        """,
     "stack.yaml:7:96: containers.db.sysctls.'net.ipv6.conf.eth1.disable_ipv6': turns IPv6 off, which the "
     "dual-stack network 'dual' gives this container: leave the sysctl out, or attach the container to IPv4-only "
     "networks"),
    ("container-key-length", f"""\
        name: demo
        containers:
          {"c" * 63}: {{command: [sleep, "1"]}}
          {"c" * 64}: {{command: [sleep, "1"]}}
        """,
     f"stack.yaml:4:3: containers.{'c' * 64}: invalid container key '{'c' * 37}...': use 1 to 63 lowercase letters, "
     "digits or '-', starting with a letter"),
    ("subnet-host-bits", """\
        name: demo
        networks:
          front:
            subnet: 10.88.1.5/24
        """,
     'stack.yaml:4:13: networks.front.subnet: subnet 10.88.1.5/24 has host bits set: did you mean 10.88.1.0/24?'),
    ("subnet-no-prefix", """\
        name: demo
        networks:
          front: {subnet: 10.88.1.0}
        """,
     "stack.yaml:3:19: networks.front.subnet: expected an IPv4 subnet like 10.88.1.0/24 (with the prefix length), got "
     "'10.88.1.0'"),
    ("subnet-ipv6", """\
        name: demo
        networks:
          front: {subnet: "fd00::/64"}
        """,
     "stack.yaml:3:19: networks.front.subnet: expected an IPv4 subnet like 10.88.1.0/24, got 'fd00::/64': IPv6 goes "
     "in the field of its own (subnet6, gateway6, ip6)"),
    ("subnet-too-small", """\
        name: demo
        networks:
          front: {subnet: 10.88.1.0/31}
        """,
     'stack.yaml:3:19: networks.front.subnet: subnet 10.88.1.0/31 is too small: use a prefix of /30 or shorter (room '
     'for a gateway and a container)'),
    ("gateway-outside", """\
        name: demo
        networks:
          front:
            subnet: 10.88.1.0/24
            gateway: 10.88.2.1
        """,
     'stack.yaml:5:14: networks.front.gateway: gateway 10.88.2.1 is outside subnet 10.88.1.0/24'),
    ("gateway-broadcast", """\
        name: demo
        networks:
          front:
            subnet: 10.88.1.0/24
            gateway: 10.88.1.255
        """,
     'stack.yaml:5:14: networks.front.gateway: gateway 10.88.1.255 is the broadcast address of 10.88.1.0/24'),
    ("mtu-too-small", """\
        name: demo
        networks:
          front: {subnet: 10.88.1.0/24, mtu: 60}
        """,
     'stack.yaml:3:38: networks.front.mtu: must be at least 68, got 60'),
    ("internal-yes", """\
        name: demo
        networks:
          front: {subnet: 10.88.1.0/24, internal: yes}
        """,
     "stack.yaml:3:43: networks.front.internal: expected true or false, got a string ('yes')"),
    ("bridge-invalid", """\
        name: demo
        networks:
          front: {subnet: 10.88.1.0/24, bridge: "br front"}
        """,
     "stack.yaml:3:41: networks.front.bridge: invalid interface name 'br front': use at most 15 letters, digits, '_', "
     "'.' or '-', starting with a letter or digit"),
    ("subnet-overlap", """\
        name: demo
        networks:
          front: {subnet: 10.88.0.0/16}
          back: {subnet: 10.88.2.0/24}
        """,
     'stack.yaml:4:18: networks.back.subnet: subnet 10.88.2.0/24 overlaps networks.front (10.88.0.0/16)'),
    ("command-unbalanced-quote", """\
        name: demo
        containers:
          web:
            command: sh -c 'echo hi
        """,
     'stack.yaml:4:14: containers.web.command: cannot split the command like a shell: no closing quotation'),
    ("command-empty", """\
        name: demo
        containers:
          web:
            command: []
        """,
     'stack.yaml:4:14: containers.web.command: must not be empty'),
    ("command-number", """\
        name: demo
        containers:
          web:
            command: [sleep, 10]
        """,
     'stack.yaml:4:22: containers.web.command[1]: expected a string, got an integer (10): quote it ("10")'),
    ("env-number", """\
        name: demo
        containers:
          web:
            command: /bin/true
            env:
              PORT: 8080
        """,
     'stack.yaml:6:13: containers.web.env.PORT: expected a string, got an integer (8080): quote it ("8080")'),
    ("env-bool", """\
        name: demo
        containers:
          web:
            command: /bin/true
            env: {DEBUG: true}
        """,
     'stack.yaml:5:18: containers.web.env.DEBUG: expected a string, got a boolean (true): quote it ("true")'),
    ("env-key", """\
        name: demo
        containers:
          web:
            command: /bin/true
            env: {MY-VAR: x}
        """,
     "stack.yaml:5:11: containers.web.env.MY-VAR: invalid variable name 'MY-VAR': use letters, digits and '_', not "
     "starting with a digit"),
    ("ulimit-name", """\
        name: demo
        containers:
          web:
            command: /bin/true
            ulimits: {nofiles: 1024}
        """,
     "stack.yaml:5:15: containers.web.ulimits.nofiles: unknown ulimit 'nofiles': use core, cpu, data, fsize, locks, "
     "memlock, msgqueue, nice, nofile, nproc, rss, rtprio, rttime, sigpending or stack"),
    ("ulimit-as", """\
        name: demo
        containers:
          web:
            command: /bin/true
            ulimits: {as: 1024}
        """,
     "stack.yaml:5:15: containers.web.ulimits.as: ulimit 'as' is not supported, as Docker does not take it: limit "
     "memory with resources.memory"),
    ("ulimit-soft-above-hard", """\
        name: demo
        containers:
          web:
            command: /bin/true
            ulimits: {nofile: {soft: 2048, hard: 1024}}
        """,
     "stack.yaml:5:30: containers.web.ulimits.nofile.soft: soft limit 2048 is above the hard limit 1024"),
    ("ulimit-negative", """\
        name: demo
        containers:
          web:
            command: /bin/true
            ulimits: {nproc: -5}
        """,
     "stack.yaml:5:22: containers.web.ulimits.nproc: must be a number from 0 to 9223372036854775807, or -1 for no "
     "limit, got -5"),
    ("ulimit-quoted-number", """\
        name: demo
        containers:
          web:
            command: /bin/true
            ulimits: {nofile: {soft: "1024", hard: 2048}}
        """,
     "stack.yaml:5:30: containers.web.ulimits.nofile.soft: expected a number, or -1 (or unlimited) for no limit, "
     "got a string ('1024')"),
    ("workdir-relative", """\
        name: demo
        containers:
          web: {command: /bin/true, workdir: app}
        """,
     "stack.yaml:3:38: containers.web.workdir: expected an absolute path (starting with '/'), got 'app'"),
    ("rootfs-dotdot", """\
        name: demo
        containers:
          web: {command: /bin/true, rootfs: /srv/../etc}
        """,
     "stack.yaml:3:37: containers.web.rootfs: path '/srv/../etc' must not contain '..'"),
    ("rootfs-space", """\
        name: demo
        containers:
          web: {command: /bin/true, rootfs: "/srv/my rootfs"}
        """,
     "stack.yaml:3:37: containers.web.rootfs: path '/srv/my rootfs' contains ' ': use letters, digits and . _ + @ - / "
     "only"),
    ("hostname-invalid", """\
        name: demo
        containers:
          web: {command: /bin/true, hostname: web_1}
        """,
     "stack.yaml:3:39: containers.web.hostname: invalid hostname 'web_1': use 1 to 63 letters, digits or '-', not "
     "starting or ending with '-' (RFC 1123)"),
    ("hostname-derived-invalid", """\
        name: demo
        containers:
          web-:
            command: /bin/true
        """,
     "stack.yaml:3:3: containers.web-.hostname: the hostname defaults to the container key 'web-', which is not a "
     "valid RFC 1123 hostname: set containers.web-.hostname"),
    ("user-invalid", """\
        name: demo
        containers:
          web: {command: /bin/true, user: "root; rm"}
        """,
     "stack.yaml:3:35: containers.web.user: invalid user 'root; rm': use USER or USER:GROUP, each a number "
     "(uid, gid) or a name ('node', 'node:node', '1000:1000')"),
    ("user-number", """\
        name: demo
        containers:
          web: {command: /bin/true, user: 1000}
        """,
     'stack.yaml:3:35: containers.web.user: expected a string, got an integer (1000): quote it ("1000")'),
    ("restart-invalid", """\
        name: demo
        containers:
          web: {command: /bin/true, restart: sometimes}
        """,
     "stack.yaml:3:38: containers.web.restart: expected 'always', 'on-failure' or 'no', got a string ('sometimes')"),
    ("network-undefined", """\
        name: demo
        networks:
          front: {subnet: 10.88.1.0/24}
        containers:
          web:
            command: /bin/true
            networks: [fornt]
        """,
     "stack.yaml:7:16: containers.web.networks.fornt: network 'fornt' is not defined in this stack (did you mean "
     "'front'?)"),
    ("network-listed-twice", """\
        name: demo
        networks:
          front: {subnet: 10.88.1.0/24}
        containers:
          web:
            command: /bin/true
            networks: [front, front]
        """,
     "stack.yaml:7:23: containers.web.networks[1]: 'front' is listed twice"),
    ("static-ip-outside", """\
        name: demo
        networks:
          front: {subnet: 10.88.1.0/24}
        containers:
          web:
            command: /bin/true
            networks:
              front: {ip: 10.88.2.10}
        """,
     'stack.yaml:8:19: containers.web.networks.front.ip: address 10.88.2.10 is outside subnet 10.88.1.0/24'),
    ("static-ip-gateway", """\
        name: demo
        networks:
          front: {subnet: 10.88.1.0/24}
        containers:
          web:
            command: /bin/true
            networks:
              front: {ip: 10.88.1.1}
        """,
     "stack.yaml:8:19: containers.web.networks.front.ip: address 10.88.1.1 is the gateway of network 'front'"),
    ("static-ip-duplicate", """\
        name: demo
        networks:
          front: {subnet: 10.88.1.0/24}
        containers:
          web:
            command: /bin/true
            networks: {front: {ip: 10.88.1.10}}
          db:
            command: /bin/true
            networks: {front: {ip: 10.88.1.10}}
        """,
     "stack.yaml:10:28: containers.db.networks.front.ip: address 10.88.1.10 on network 'front' is already taken by "
     "container 'web'"),
    ("static-ip-garbage", """\
        name: demo
        networks:
          front: {subnet: 10.88.1.0/24}
        containers:
          web:
            command: /bin/true
            networks: {front: {ip: 10.88.1.300}}
        """,
     "stack.yaml:7:28: containers.web.networks.front.ip: expected an IPv4 address like 10.88.1.10, got '10.88.1.300'"),
    ("default-route-not-attached", """\
        name: demo
        networks:
          front: {subnet: 10.88.1.0/24}
          back: {subnet: 10.88.2.0/24}
        containers:
          web:
            command: /bin/true
            networks: [front]
            default_route: back
        """,
     "stack.yaml:9:20: containers.web.default_route: default_route 'back' is not one of this container's networks "
     "('front')"),
    ("default-route-internal", """\
        name: demo
        networks:
          front: {subnet: 10.88.1.0/24}
          back: {subnet: 10.88.2.0/24, internal: true}
        containers:
          web:
            command: /bin/true
            networks: [front, back]
            default_route: back
        """,
     "stack.yaml:9:20: containers.web.default_route: default_route 'back' is an internal network: internal networks "
     "have no route out"),
    ("port-bad-string", """\
        name: demo
        networks:
          front: {subnet: 10.88.1.0/24}
        containers:
          web:
            command: /bin/true
            networks: [front]
            ports: ["8080-8090:80"]
        """,
     "stack.yaml:8:13: containers.web.ports[0]: port ranges are not supported, got '8080-8090:80': publish each port "
     "on its own"),
    ("port-out-of-range", """\
        name: demo
        networks:
          front: {subnet: 10.88.1.0/24}
        containers:
          web:
            command: /bin/true
            networks: [front]
            ports:
              - {host: 0, container: 80}
        """,
     'stack.yaml:9:16: containers.web.ports[0].host: must be at least 1, got 0'),
    ("port-protocol", """\
        name: demo
        networks:
          front: {subnet: 10.88.1.0/24}
        containers:
          web:
            command: /bin/true
            networks: [front]
            ports: ["8080:80/sctp"]
        """,
     "stack.yaml:8:13: containers.web.ports[0].protocol: expected 'tcp' or 'udp', got a string ('sctp')"),
    ("port-unquoted-number", """\
        name: demo
        networks:
          front: {subnet: 10.88.1.0/24}
        containers:
          web:
            command: /bin/true
            networks: [front]
            ports: [8080]
        """,
     "stack.yaml:8:13: containers.web.ports[0]: expected 'HOST:CONTAINER[/tcp|udp]', 'IP:HOST:CONTAINER[/tcp|udp]' or "
     "a mapping, got an integer (8080)"),
    ("port-duplicate", """\
        name: demo
        networks:
          front: {subnet: 10.88.1.0/24}
        containers:
          web:
            command: /bin/true
            networks: [front]
            ports: ["8080:80"]
          api:
            command: /bin/true
            networks: [front]
            ports: ["127.0.0.1:8080:8080"]
        """,
     'stack.yaml:12:13: containers.api.ports[0]: host port 127.0.0.1:8080/tcp conflicts with 0.0.0.0:8080/tcp of '
     'containers.web.ports[0]'),
    ("port-internal-only", """\
        name: demo
        networks:
          back: {subnet: 10.88.2.0/24, internal: true}
        containers:
          db:
            command: /bin/true
            networks: [back]
            ports: ["5432:5432"]
        """,
     'stack.yaml:8:12: containers.db.ports: published ports need a non-internal network, and this container is only on '
     'internal networks (back)'),
    ("port-without-default-route", """\
        name: demo
        networks:
          front: {subnet: 10.88.1.0/24}
        containers:
          web:
            command: /bin/true
            networks: [front]
            default_route: null
            ports: ["8080:80"]
        """,
     'stack.yaml:9:12: containers.web.ports: published ports need a default route, and default_route is null'),
    ("memory-unit", """\
        name: demo
        containers:
          web:
            command: /bin/true
            resources: {memory: 64m}
        """,
     "stack.yaml:5:25: containers.web.resources.memory: unknown unit 'm' in '64m': use Ki, Mi, Gi, Ti (powers of "
     "1024), K, M, G, T (powers of 1000) or no unit for bytes"),
    ("memory-too-small", """\
        name: demo
        containers:
          web:
            command: /bin/true
            resources: {memory: 1Mi}
        """,
     "stack.yaml:5:25: containers.web.resources.memory: must be at least 4Mi (4194304 bytes), got '1Mi'"),
    ("memory-float", """\
        name: demo
        containers:
          web:
            command: /bin/true
            resources: {memory: 1.5e9}
        """,
     "stack.yaml:5:25: containers.web.resources.memory: expected a size like '64Mi' or a number of bytes, got a number "
     "(1500000000.0)"),
    ("cpus-zero", """\
        name: demo
        containers:
          web:
            command: /bin/true
            resources: {cpus: 0}
        """,
     'stack.yaml:5:23: containers.web.resources.cpus: must be at least 0.01, got 0'),
    ("cpus-string", """\
        name: demo
        containers:
          web:
            command: /bin/true
            resources: {cpus: "2"}
        """,
     "stack.yaml:5:23: containers.web.resources.cpus: expected a number, got a string ('2'): remove the quotes"),
    ("pids-zero", """\
        name: demo
        containers:
          web:
            command: /bin/true
            resources: {pids: 0}
        """,
     'stack.yaml:5:23: containers.web.resources.pids: must be at least 1, got 0'),
    ("cpu-shares-zero", """\
        name: demo
        containers:
          web:
            command: /bin/true
            resources: {cpu_shares: 0}
        """,
     'stack.yaml:5:29: containers.web.resources.cpu_shares: must be at least 2, got 0'),
    ("cpu-shares-one", """\
        name: demo
        containers:
          web:
            command: /bin/true
            resources: {cpu_shares: 1}
        """,
     'stack.yaml:5:29: containers.web.resources.cpu_shares: must be at least 2, got 1'),
    ("cpu-shares-huge", """\
        name: demo
        containers:
          web:
            command: /bin/true
            resources: {cpu_shares: 262145}
        """,
     'stack.yaml:5:29: containers.web.resources.cpu_shares: must be at most 262144, got 262145'),
    ("cpu-shares-string", """\
        name: demo
        containers:
          web:
            command: /bin/true
            resources: {cpu_shares: "512"}
        """,
     "stack.yaml:5:29: containers.web.resources.cpu_shares: expected an integer, got a string ('512'): "
     "remove the quotes"),
    ("cpuset-backwards", """\
        name: demo
        containers:
          web:
            command: /bin/true
            resources: {cpuset: "3-1"}
        """,
     "stack.yaml:5:25: containers.web.resources.cpuset: CPU range '3-1' is backwards: write '1-3'"),
    ("volume-mode", """\
        name: demo
        containers:
          web:
            command: /bin/true
            volumes: ["/srv/data:/data:rx"]
        """,
     "stack.yaml:5:15: containers.web.volumes[0]: unknown volume mode 'rx' in '/srv/data:/data:rx': use ro or rw"),
    ("volume-root-target", """\
        name: demo
        containers:
          web:
            command: /bin/true
            volumes: [{source: /srv/data, target: /}]
        """,
     "stack.yaml:5:43: containers.web.volumes[0].target: nothing can be mounted over the container's root '/'"),
    ("volume-target-in-proc", """\
        name: demo
        containers:
          web:
            command: /bin/true
            volumes: ["/srv/data:/proc/meminfo", "/srv/data:/proc/sys"]
        """,
     "stack.yaml:5:42: containers.web.volumes[1].target: a volume cannot be mounted at /proc/sys: /proc is the "
     "container's own procfs (as runc, only these files may be covered: /proc/cpuinfo, /proc/diskstats, "
     "/proc/meminfo, /proc/stat, /proc/swaps, /proc/uptime, /proc/loadavg, /proc/slabinfo, /proc/net/dev, "
     "/proc/sys/kernel/ns_last_pid)"),
    ("volume-target-twice", """\
        name: demo
        containers:
          web:
            command: /bin/true
            volumes: ["/srv/a:/data", "/srv/b:/data/"]
        """,
     'stack.yaml:5:31: containers.web.volumes[1]: target /data is already mounted by volumes[0]'),
    ("tmpfs-owner-outside-userns-auto", """\
        name: demo
        containers:
          web:
            command: /bin/true
            userns: auto
            tmpfs: [{target: /cache, uid: 70000}]
        """,
     "stack.yaml:6:35: containers.web.tmpfs[0].uid: uid 70000 is outside the container's ids: userns: auto maps 0 "
     "to 65535"),
    ("tmpfs-uid-not-ascii-digits", """\
        name: demo
        containers:
          web:
            command: /bin/true
            tmpfs: ["/x:uid=²"]
        """,
     "stack.yaml:5:13: containers.web.tmpfs[0]: invalid uid '²' in '/x:uid=²': use a number"),
    ("dns-option-with-a-control-character", """\
        name: demo
        containers:
          web:
            command: /bin/true
            dns_opt: ["ndots:2\\u0001"]
        """,
     "stack.yaml:5:15: containers.web.dns_opt[0]: invalid resolver option 'ndots:2\\x01': one word, like ndots:2 or "
     "edns0"),
    ("tmpfs-suid", """\
        name: demo
        containers:
          web:
            command: /bin/true
            tmpfs: ["/tmp:size=64m,suid"]
        """,
     "stack.yaml:5:13: containers.web.tmpfs[0]: tmpfs option 'suid' in '/tmp:size=64m,suid' is not supported: a "
     "tmpfs is always nosuid and nodev (no setuid programs), as Docker's default"),
    ("tmpfs-dev", """\
        name: demo
        containers:
          web:
            command: /bin/true
            tmpfs: ["/tmp:dev"]
        """,
     "stack.yaml:5:13: containers.web.tmpfs[0]: tmpfs option 'dev' in '/tmp:dev' is not supported: a tmpfs is "
     "always nosuid and nodev (no device nodes), as Docker's default"),
    ("tmpfs-unknown-option", """\
        name: demo
        containers:
          web:
            command: /bin/true
            tmpfs: ["/tmp:nr_inodes=10"]
        """,
     "stack.yaml:5:13: containers.web.tmpfs[0]: unsupported tmpfs option 'nr_inodes=10' in '/tmp:nr_inodes=10': "
     "use size=, mode=, uid=, gid=, ro, rw, exec, noexec"),
    ("tmpfs-size-percent", """\
        name: demo
        containers:
          web:
            command: /bin/true
            tmpfs: ["/tmp:size=50%"]
        """,
     "stack.yaml:5:13: containers.web.tmpfs[0]: invalid size '50%' in '/tmp:size=50%': use bytes or k, m, g "
     "(powers of 1024), like size=64m"),
    ("tmpfs-size-zero", """\
        name: demo
        containers:
          web:
            command: /bin/true
            tmpfs: [{target: /tmp, size: 0}]
        """,
     "stack.yaml:5:34: containers.web.tmpfs[0].size: must be at least 1 byte, got 0: the kernel reads 0 as no "
     "limit (leave the size out for the default)"),
    ("tmpfs-mode", """\
        name: demo
        containers:
          web:
            command: /bin/true
            tmpfs: [{target: /tmp, mode: "1778"}]
        """,
     "stack.yaml:5:34: containers.web.tmpfs[0].mode: expected permission bits up to 0o7777, in octal like "
     "'1777' or 0o1777, got a string ('1778')"),
    ("tmpfs-relative", """\
        name: demo
        containers:
          web:
            command: /bin/true
            tmpfs: [tmp]
        """,
     "stack.yaml:5:13: containers.web.tmpfs[0].target: expected an absolute path (starting with '/'), got 'tmp'"),
    ("tmpfs-under-proc", """\
        name: demo
        containers:
          web:
            command: /bin/true
            tmpfs: [/proc/sys]
        """,
     "stack.yaml:5:13: containers.web.tmpfs[0].target: a tmpfs cannot be mounted at /proc/sys: /proc is the "
     "runtime's own"),
    ("tmpfs-dev-shm", """\
        name: demo
        containers:
          web:
            command: /bin/true
            tmpfs: ["/dev/shm:size=1g"]
        """,
     "stack.yaml:5:13: containers.web.tmpfs[0].target: /dev/shm is a tmpfs already: set its size with shm_size"),
    ("tmpfs-over-a-volume", """\
        name: demo
        containers:
          web:
            command: /bin/true
            volumes: ["/srv/a:/data"]
            tmpfs: [/run, /data/]
        """,
     "stack.yaml:6:19: containers.web.tmpfs[1]: target /data is already mounted by volumes[0]"),
    ("tmpfs-twice", """\
        name: demo
        containers:
          web:
            command: /bin/true
            tmpfs: [/run, "/run:size=1m"]
        """,
     "stack.yaml:5:19: containers.web.tmpfs[1]: target /run is already mounted by tmpfs[0]"),
    ("shm-size-zero", """\
        name: demo
        containers:
          web:
            command: /bin/true
            shm_size: 0
        """,
     "stack.yaml:5:15: containers.web.shm_size: must be at least 1 byte, got 0: the kernel reads 0 as no limit "
     "(leave the size out for the default)"),
    ("volume-undeclared", """\
        name: demo
        volumes: {data: {}}
        containers:
          web:
            command: /bin/true
            volumes: ["dat:/data", {source: data, target: /d}]
        """,
     "stack.yaml:6:15: containers.web.volumes[0].source: volume 'dat' is not declared in the top-level volumes "
     "(did you mean 'data'?)"),
    ("volume-create-host-path-on-a-named-volume", """\
        name: demo
        volumes: {data: {}}
        containers:
          web:
            command: /bin/true
            volumes: [{source: data, target: /d, create_host_path: true}]
        """,
     "stack.yaml:6:60: containers.web.volumes[0].create_host_path: applies to a host path, not to the "
     "volume 'data'"),
    ("volume-source-relative", """\
        name: demo
        containers:
          web:
            command: /bin/true
            volumes: [{source: ./data, target: /d}]
        """,
     "stack.yaml:5:24: containers.web.volumes[0].source: expected an absolute path on the host or the name of a "
     "volume declared in volumes: (use 1 to 64 letters, digits, '_', '.' or '-', starting with a letter or "
     "digit), got './data'"),
    ("volume-name", """\
        name: demo
        volumes:
          db/data:
        """,
     "stack.yaml:3:3: volumes.'db/data': invalid volume name 'db/data': use 1 to 64 letters, digits, '_', '.' "
     "or '-', starting with a letter or digit"),
    ("volume-driver", """\
        name: demo
        volumes:
          data: {driver: nfs}
        """,
     "stack.yaml:3:18: volumes.data.driver: volume driver 'nfs' is not supported: reconcile keeps volumes as "
     "local directories only (<state-dir>/volumes/STACK/NAME)"),
    ("volume-external", """\
        name: demo
        volumes:
          data: {external: true}
        """,
     "stack.yaml:3:20: volumes.data.external: external volumes are not supported: reconcile keeps volumes as "
     "local directories only (<state-dir>/volumes/STACK/NAME); declare the volume without external"),
    ("volume-driver-opts", """\
        name: demo
        volumes:
          data: {driver: local, driver_opts: {type: nfs}}
        """,
     "stack.yaml:3:38: volumes.data.driver_opts: driver_opts are not supported: reconcile keeps volumes as "
     "local directories only (<state-dir>/volumes/STACK/NAME)"),
    ("depends-undefined", """\
        name: demo
        containers:
          web:
            command: /bin/true
            depends_on: [dbb]
          db:
            command: /bin/true
        """,
     "stack.yaml:5:18: containers.web.depends_on[0]: container 'dbb' is not defined in this stack (did you mean "
     "'db'?)"),
    ("depends-self", """\
        name: demo
        containers:
          web:
            command: /bin/true
            depends_on: [web]
        """,
     'stack.yaml:5:18: containers.web.depends_on[0]: a container cannot depend on itself'),
    ("depends-cycle", """\
        name: demo
        containers:
          web:
            command: /bin/true
            depends_on: [db]
          db:
            command: /bin/true
            depends_on: [web]
        """,
     'stack.yaml:8:18: containers.db.depends_on[0]: dependency cycle: web -> db -> web'),
    ("stop-grace-negative", """\
        name: demo
        containers:
          web: {command: /bin/true, stop_grace: -1}
        """,
     'stack.yaml:3:41: containers.web.stop_grace: must be at least 0, got -1'),
    ("stop-signal-unknown", """\
        name: demo
        containers:
          web: {command: /bin/true, stop_signal: SIGSTOPP}
        """,
     "stack.yaml:3:42: containers.web.stop_signal: expected a signal name like SIGINT or INT, or its number, "
     "got 'SIGSTOPP'"),
    ("stop-signal-number-out-of-range", """\
        name: demo
        containers:
          web: {command: /bin/true, stop_signal: 0}
        """,
     "stack.yaml:3:42: containers.web.stop_signal: expected a signal name like SIGINT or INT, or its number, "
     "got '0'"),
    ("duplicate-key", """\
        name: demo
        networks:
          front:
            subnet: 10.88.1.0/24
            mtu: 1400
            mtu: 1500
        """,
     "stack.yaml:6:5: networks.front: duplicate key 'mtu' (first defined at line 5, column 5)"),
    ("yaml-syntax", """\
        name: demo
        networks:
          front: {subnet: 10.88.1.0/24
        """,
     "stack.yaml:4:1: invalid YAML: expected ',' or '}', but got '<stream end>' (while parsing a flow mapping started "
     "at line 3, column 10)"),
    ("yaml-tab", 'name: demo\nnetworks:\n\tfront: {}\n',
     "stack.yaml:3:1: invalid YAML: found character '\\t' that cannot start any token (while scanning for the next "
     "token): indent with spaces, not tabs"),
    ("empty-file", '',
     'stack.yaml:1:1: empty file: expected a stack (name, networks, containers)'),
    ("top-level-list", """\
        - name: demo
        """,
     'stack.yaml:1:1: expected a mapping (name, networks, containers) at the top level, got a list'),
    ("not-utf8", b'name: demo\nnetworks: \xff\n',
     'stack.yaml:2:11: not UTF-8 text: invalid byte 0xff'),
    ("control-character", 'name: demo\x07\n',
     'stack.yaml:1:11: invalid YAML: control character U+0007 is not allowed'),
    ("unsupported-tag", """\
        name: !env STACK
        """,
     'stack.yaml:1:7: name: unsupported YAML value (tag !env): use strings, numbers, booleans, lists and mappings'),
    ("alias-bomb", """\
        a: &a [x, x, x, x, x, x, x, x, x, x]
        b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
        c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
        d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
        e: [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
        """,
     'stack.yaml:3:4: aliases expand to more than 10000 nodes: refusing what looks like an alias bomb'),
    ("too-big", "name: demo\n" + "#" * (1024 * 1024) + "\n",
     'stack.yaml: file is larger than 1 MiB: a stack file is a few KiB of YAML'),
    ("key-not-a-string", """\
        name: demo
        networks:
          1.5: {subnet: 10.88.1.0/24}
        """,
     'stack.yaml:3:3: networks.\'1.5\': expected a string, got a number (1.5): quote it ("1.5")'),
    ("yaml-date", """\
        name: 2024-01-01
        """,
     'stack.yaml:1:7: name: expected a string, got a date (2024-01-01)'),    ("unknown-capability", """\
        name: demo
        containers:
          web:
            command: [/bin/true]
            cap_add: [NET_ADMN]
        """,
     "stack.yaml:5:15: containers.web.cap_add[0]: unknown capability 'NET_ADMN': use a name like NET_ADMIN, or ALL"),
    ("unsupported-security-opt", """\
        name: demo
        containers:
          web:
            command: [/bin/true]
            security_opt: [seccomp=unconfined]
        """,
     "stack.yaml:5:19: containers.web.security_opt: unsupported security_opt 'seccomp=unconfined': supported are "
     "no-new-privileges, no-new-privileges:true, no-new-privileges:false"),
    ("privileged-with-userns", """\
        name: demo
        containers:
          web:
            command: [/bin/true]
            privileged: true
            userns: auto
        """,
     "stack.yaml:6:13: containers.web.userns: userns: auto cannot be combined with privileged: true (a privileged "
     "container holds the host's capabilities, which a private user namespace takes away)"),
]


@pytest.mark.parametrize(("text", "expected"), [pytest.param(text, expected, id=case_id)
                                                for case_id, text, expected in BAD_INPUTS])
def test_bad_input_gives_exactly_this_error(tmp_path: Path, text: str | bytes, expected: str) -> None:
    assert error_lines(tmp_path, {"stack.yaml": text}, "stack.yaml") == [expected]


def test_every_error_of_every_file_is_reported_sorted(tmp_path: Path) -> None:
    files: dict[str, str | bytes] = {
        "a.yaml": """\
            name: a
            networks:
              front: {subnet: 10.88.1.5/24, mtu: 1}
            """,
        "b.yaml": "name: [b]\n",
        "c.yml": "name: c\nname: c\n",
        "notes.txt": "not a stack file",
        ".#a.yaml": b"\xff an editor's lock file",
    }
    assert error_lines(tmp_path, files) == [
        "a.yaml:3:19: networks.front.subnet: subnet 10.88.1.5/24 has host bits set: did you mean 10.88.1.0/24?",
        "a.yaml:3:38: networks.front.mtu: must be at least 68, got 1",
        "b.yaml:1:7: name: expected a string, got a list",
        "c.yml:2:1: duplicate key 'name' (first defined at line 1, column 1)",
    ]


@pytest.mark.parametrize(("files", "target", "expected"), [
    pytest.param({}, "missing.yaml", "missing.yaml: cannot read the file: No such file or directory",
                 id="missing-file"),
    pytest.param({"README.md": "# no stacks here"}, ".", ".: no stack files (*.yaml, *.yml) in this directory",
                 id="directory-without-stacks"),
])
def test_unusable_path(tmp_path: Path, files: dict[str, str], target: str, expected: str) -> None:
    assert error_lines(tmp_path, files, target) == [expected]


def test_special_files_are_refused_without_reading_them(tmp_path: Path) -> None:
    """A FIFO would block a reader forever; a directory named like a stack file is a mistake."""
    os.mkfifo(tmp_path / "fifo.yaml")
    (tmp_path / "sub.yml").mkdir()
    assert error_lines(tmp_path, {}) == ["fifo.yaml: not a regular file", "sub.yml: not a regular file"]


def test_internal_parts_of_pydantic_paths_are_dropped() -> None:
    """Union members add their type ('list[str]') to pydantic's path; the file has no such level."""
    error = ErrorDetails(type="string_type", loc=("containers", "web", "command", "list[str]", 0),
                         msg="Input should be a valid string", input=5)
    explained = explain(error, {"containers": {"web": {"command": [5]}}})
    assert (explained.loc, explained.message) == (("containers", "web", "command", 0),
                                                  'expected a string, got an integer (5): quote it ("5")')
