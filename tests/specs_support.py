"""Shared by the specs tests (no tests here): write stack files and load them as a user would,
with paths relative to the working directory so error lines read `stack.yaml:3:5: ...`."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest

from specs.errors import SpecErrors
from specs.loader import StackFile, load_path
from specs.model import Stack


def write_files(directory: Path, files: Mapping[str, str | bytes]) -> None:
    """Text is dedented, so cases can be written indented in a table."""
    for name, content in files.items():
        target = directory / name
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(textwrap.dedent(content))


@contextmanager
def working_directory(directory: Path) -> Iterator[None]:
    previous = os.getcwd()
    os.chdir(directory)
    try:
        yield
    finally:
        os.chdir(previous)


def load_text(directory: Path, content: str | bytes, name: str = "stack.yaml") -> list[StackFile]:
    write_files(directory, {name: content})
    with working_directory(directory):
        return load_path(name)


def error_lines(directory: Path, files: Mapping[str, str | bytes], target: str = ".") -> list[str]:
    """The error lines `reconcile validate target` prints for these files."""
    write_files(directory, files)
    with working_directory(directory), pytest.raises(SpecErrors) as caught:
        load_path(target)
    return [str(error) for error in caught.value.errors]


def stack(name: str, **networks: dict[str, object]) -> Stack:
    """A stack of these networks alone, validated as the loader would."""
    return Stack.model_validate({"name": name, "networks": networks})


FULL_EXAMPLE = """\
    name: demo
    networks:
      front:
        subnet: 10.88.1.0/24
        gateway: 10.88.1.1
        bridge: rc-demo-front
        mtu: 1500
        internal: false
      back:
        subnet: 10.88.2.0/24
        internal: true
    containers:
      web:
        command: ["/bin/busybox", "httpd", "-f", "-p", "80"]
        rootfs: /srv/rootfs/busybox
        env: {GREETING: hello}
        workdir: /
        hostname: web
        restart: always
        networks:
          front: {ip: 10.88.1.10}
          back: {}
        default_route: front
        ports:
          - "8080:80"
          - {host: 8443, container: 443, protocol: tcp, host_ip: 127.0.0.1}
        resources:
          memory: 64Mi
          cpus: 0.5
          pids: 100
          cpuset: "0"
        volumes: ["/srv/data:/data:ro"]
        tmpfs: ["/run", "/data/cache:size=64m,mode=1777", {target: /tools, size: 8Mi, mode: "750", exec: true}]
        shm_size: 128Mi
        depends_on: [db]
      db:
        command: /usr/bin/postgres -D /var/lib/postgres
        networks: [back]
    """
