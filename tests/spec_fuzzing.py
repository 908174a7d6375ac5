"""The pieces the spec fuzzers build YAML from (no tests here)."""

from __future__ import annotations

from hypothesis import strategies as st

FIELD_NAMES = ["name", "networks", "containers", "subnet", "gateway", "bridge", "mtu", "internal",
               "command", "rootfs", "env", "workdir", "hostname", "user", "restart", "ip",
               "default_route", "ports", "host", "container", "protocol", "host_ip", "resources",
               "memory", "cpus", "pids", "cpuset", "volumes", "source", "target", "read_only",
               "depends_on", "stop_grace", "front", "web", "demo"]


SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20),
    st.sampled_from(["10.88.1.0/24", "10.88.1.10", "8080:80", "64Mi", "/srv/x:/x:ro", "0-3", "web",
                     "front", "rc-demo-front", "-1", "1.2.3.4:80:80/udp"]),
)


TOKENS = ["\n", "  ", " ", ": ", ":", "- ", "-", "[", "]", "{", "}", ", ", "&a ", "*a", "!foo ", "!!str ",
          "!!int ", "!!binary ", "'", '"', "#", "|", ">", "? ", "---\n", "...\n", "%YAML 1.1\n", "<<: ",
          "\t", "\\u0000", "\\ud800", "~", "yes", "0x1F", "1e999", ".nan", "2024-13-45", "10.88.1.0/24",
          "8080:80", "64Mi", "/srv:/x:ro", *FIELD_NAMES]
