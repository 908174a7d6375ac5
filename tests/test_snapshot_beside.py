"""A whole pass's observation made in forked children (kernel.beside) is the one made in turn."""

from __future__ import annotations

import json
import sys

from tests.sandbox import Sandbox

STACK = """\
name: both
networks:
  net: {subnet: 10.77.0.0/24, subnet6: "fd00:77::/64"}
containers:
  a:
    command: sleep 1000
    networks: [net]
    resources: {memory: 32Mi, cpus: 0.5, pids: 20}
  b:
    command: sleep 1000
    networks: [net]
    ports: ["18080:80"]
"""

OBSERVED_BOTH_WAYS = """\
import json, os, threading
from dataclasses import replace
from reconcile.engine import snapshot
from reconcile.engine.session import open_session
from reconcile.engine.settings import Settings

forks = []
fork = os.fork
def counted():
    forks.append(1)
    return fork()
os.fork = counted

with open_session(Settings.resolve(None, None), writable=False) as session:
    session.observe(usage=True)
    few, forks[:] = len(forks), []  # two sandboxes: fewer than FORK_FROM
    snapshot.FORK_FROM = 2
    beside = session.observe(usage=True)
    forked, forks[:] = len(forks), []
    held = threading.Event()
    thread = threading.Thread(target=held.wait)
    thread.start()
    try:
        in_turn = session.observe(usage=True)
    finally:
        held.set()
        thread.join()
live = lambda snapshot: {key: usage.pids for key, usage in snapshot.cgroups.usage.items()}
same = lambda snapshot: replace(snapshot, cgroups=replace(snapshot.cgroups, usage={}))  # CPU time moves on
print(json.dumps({"forks": [few, forked, len(forks)], "equal": same(beside) == same(in_turn),
                  "sandboxes": sorted(beside.sandboxes.sandboxes), "pids": [live(beside), live(in_turn)]}))
"""


def test_the_children_observe_what_one_process_does(sandbox: Sandbox) -> None:
    sandbox.apply(sandbox.write("stack.yaml", STACK))
    seen = json.loads(sandbox.run(sys.executable, "-c", OBSERVED_BOTH_WAYS).stdout)
    assert seen["forks"] == [0, 2, 0]  # the sandboxes' and the cgroups' children from two; none with a thread
    assert seen["equal"]
    assert seen["sandboxes"] == ["both/a", "both/b"]
    assert seen["pids"][0] == seen["pids"][1] == {"both/a": 2, "both/b": 2}  # the init and sleep
