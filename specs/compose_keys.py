"""Compose keys reconcile cannot honour (errors: the stack would not run as the file says) and
keys that have no effect here (warnings: the stack runs as the file means it), with the word
the user gets. Keys the mapping converts are not listed here: they are its handlers."""

from __future__ import annotations

NOT_SUPPORTED = "is not supported by reconcile"

UNSUPPORTED_TOP_LEVEL: dict[str, str] = {
    "include": f"{NOT_SUPPORTED}: put every service in this file",
    "models": NOT_SUPPORTED,
}

NO_EFFECT_TOP_LEVEL: dict[str, str] = {
    "version": "is obsolete and ignored, as docker compose ignores it",
}

UNSUPPORTED_SERVICE: dict[str, str] = {
    "build": "building images is not supported: build and push the image, and name it in image:",
    "devices": NOT_SUPPORTED,
    "device_cgroup_rules": NOT_SUPPORTED,
    "gpus": NOT_SUPPORTED,
    "volumes_from": f"{NOT_SUPPORTED}: list the volumes on this service",
    "ipc": NOT_SUPPORTED,
    "pid": NOT_SUPPORTED,
    "uts": NOT_SUPPORTED,
    "userns_mode": f"{NOT_SUPPORTED} (reconcile's userns is host or auto)",
    "cgroup": NOT_SUPPORTED,
    "cgroup_parent": f"{NOT_SUPPORTED}: use --cgroup-parent",
    "runtime": NOT_SUPPORTED,
    "isolation": NOT_SUPPORTED,
    "group_add": NOT_SUPPORTED,
    "extends": f"{NOT_SUPPORTED}: write the service out in full (YAML anchors work)",
    "links": f"{NOT_SUPPORTED}: services on a shared network reach each other by service name",
    "external_links": NOT_SUPPORTED,
    "post_start": NOT_SUPPORTED,
    "pre_stop": NOT_SUPPORTED,
    "oom_kill_disable": NOT_SUPPORTED,
    "oom_score_adj": NOT_SUPPORTED,
    "memswap_limit": NOT_SUPPORTED,
    "mem_swappiness": NOT_SUPPORTED,
    "cpu_quota": f"{NOT_SUPPORTED}: limit with cpus",
    "cpu_period": f"{NOT_SUPPORTED}: limit with cpus",
    "cpu_rt_runtime": NOT_SUPPORTED,
    "cpu_rt_period": NOT_SUPPORTED,
    "cpu_count": f"{NOT_SUPPORTED}: limit with cpus",
    "cpu_percent": f"{NOT_SUPPORTED}: limit with cpus",
    "blkio_config": NOT_SUPPORTED,
    "storage_opt": NOT_SUPPORTED,
    "credential_spec": NOT_SUPPORTED,
    "use_api_socket": NOT_SUPPORTED,
    "provider": NOT_SUPPORTED,
    "models": NOT_SUPPORTED,
}

NO_EFFECT_SERVICE: dict[str, str] = {
    "expose": "has no effect here: containers on a shared network reach every port of each other, "
              "and only ports: publishes on the host",
    "labels": "has no effect here: reconcile keeps no labels",
    "label_file": "has no effect here: reconcile keeps no labels",
    "annotations": "has no effect here",
    "container_name": "has no effect here: the container is named STACK/SERVICE (the service's name as a key)",
    "tty": "has no effect here: no terminal is attached to containers",
    "stdin_open": "has no effect here: containers get no standard input",
    "attach": "has no effect here: read the output with reconcile logs",
    "develop": "has no effect here",
    "domainname": "has no effect here",
    "platform": "has no effect here: the image's variant for this host's platform is run",
    "mac_address": "has no effect here: a container's MAC derives from its address",
    "mem_reservation": "has no effect here: reservations are not enforced",
}

NO_EFFECT_DEPLOY: dict[str, str] = {
    key: "has no effect here: it is a Swarm setting"
    for key in ("mode", "placement", "labels", "update_config", "rollback_config", "endpoint_mode")
}

NO_EFFECT_NETWORK: dict[str, str] = {
    "name": "has no effect here: the bridge is named from the stack and the network key",
    "attachable": "has no effect here",
    "labels": "has no effect here: reconcile keeps no labels",
}

NO_EFFECT_VOLUME: dict[str, str] = {
    "name": "has no effect here: the volume is the directory <state-dir>/volumes/STACK/KEY",
    "labels": "has no effect here: reconcile keeps no labels",
}

NO_EFFECT_ATTACHMENT: dict[str, str] = {
    "mac_address": "has no effect here: a container's MAC derives from its address",
    "priority": "has no effect here",
    "gw_priority": "has no effect here: the default route is the first listed non-internal network",
    "interface_name": "has no effect here: interfaces are eth0, eth1, ... in the order listed",
}

UNSUPPORTED_ATTACHMENT: dict[str, str] = {
    "link_local_ips": NOT_SUPPORTED,
    "driver_opts": NOT_SUPPORTED,
}
