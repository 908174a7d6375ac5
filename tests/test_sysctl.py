"""kernel.sysctl's reads against the real kernel: a file kept open reads what was written since,
a file whose interface was made again reads the new one, each thread reads its own network
namespace's file, no more than KEPT files stay open, and `read_each` reads what the files say,
keeping none open."""

from __future__ import annotations

import json

from tests.sandbox import Sandbox

SCRIPT = """
import json, os, subprocess, threading
from kernel import netns, sysctl

def fds():
    return len(os.listdir("/proc/self/fd"))

def localnet(name):
    return sysctl.read("net", "ipv4", "conf", name, "route_localnet")

out = {}
sysctl.write("0", "net", "ipv4", "conf", "default", "route_localnet")  # a new namespace has the host's
subprocess.run(["ip", "link", "add", "tbr0", "type", "bridge"], check=True)
out["first"] = localnet("tbr0")
sysctl.write("1", "net", "ipv4", "conf", "tbr0", "route_localnet")
out["written"] = localnet("tbr0")
subprocess.run("ip link del tbr0 && ip link add tbr0 type bridge", shell=True, check=True)
out["made_again"] = localnet("tbr0")
subprocess.run(["ip", "link", "del", "tbr0"], check=True)
try:
    localnet("tbr0")
    out["gone"] = "read"
except FileNotFoundError:
    out["gone"] = "FileNotFoundError"

netns.add(["rc-t_c"])
netns.write_sysctl("rc-t_c", "1", "net", "ipv4", "ip_forward")
sysctl.write("0", "net", "ipv4", "ip_forward")
out["here"] = sysctl.read("net", "ipv4", "ip_forward")
inside = []
def read_inside():
    netns._setns(netns.path_of("rc-t_c"))
    inside.append(sysctl.read("net", "ipv4", "ip_forward"))
worker = threading.Thread(target=read_inside)
worker.start()
worker.join()
out["inside"] = inside
out["here_again"] = sysctl.read("net", "ipv4", "ip_forward")

subprocess.run(["ip", "-batch", "-"], check=True, text=True,
               input="".join(f"link add tb{i} type bridge\\n" for i in range(3 * sysctl.KEPT)))
before, kept_before = fds(), len(sysctl._kept)
out["many"] = sorted({localnet(f"tb{i}") for i in range(3 * sysctl.KEPT)})
out["opened"] = fds() - before
out["more_kept"] = sysctl.KEPT - kept_before

sysctl.write("1", "net", "ipv4", "conf", "tb1", "route_localnet")  # not every answer the same
before = fds()
each = sysctl.read_each(("net", "ipv4", "conf"), "route_localnet")
out["each_opened"] = fds() - before
out["each"] = each == {name: localnet(name) for name in os.listdir("/proc/sys/net/ipv4/conf")}
out["each_names"] = [(name, each[name]) for name in ("tb0", "tb1")]
print(json.dumps(out))
"""


def test_kept_reads_follow_the_kernel(sandbox: Sandbox) -> None:
    out = json.loads(sandbox.python(SCRIPT).stdout)
    assert (out["first"], out["written"], out["made_again"], out["gone"]) == ("0", "1", "0", "FileNotFoundError")
    assert (out["here"], out["inside"], out["here_again"]) == ("0", ["1"], "0")
    assert out["many"] == ["0"]
    assert out["opened"] == out["more_kept"] > 0
    assert (out["each"], out["each_opened"], out["each_names"]) == (True, 0, [["tb0", "0"], ["tb1", "1"]])
