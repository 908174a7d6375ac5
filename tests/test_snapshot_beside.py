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
from kernel import beside
from reconcile.engine import snapshot
from reconcile.engine.session import open_session
from reconcile.engine.settings import Settings

forks = []
fork = os.fork
def counted():
    forks.append(1)
    return fork()
os.fork = counted

made = beside.Beside.__init__
def only_from_the_child(self, work, here=None):
    made(self, work, here)
    def refused():
        raise AssertionError("a child gave no result")
    self._here = refused
beside.Beside.__init__ = only_from_the_child

def observed(session):
    before = len(forks)
    found = session.observe(usage_of=None)
    return found, len(forks) - before

with open_session(Settings.resolve(None, None), writable=False) as session:
    plain, plain_forks = observed(session)  # two sandboxes: fewer than FORK_FROM
    snapshot.FORK_FROM = 2
    forked, forked_forks = observed(session)
    held = threading.Event()
    thread = threading.Thread(target=held.wait)
    thread.start()
    try:
        threaded, threaded_forks = observed(session)
    finally:
        held.set()
        thread.join()
live = lambda snapshot: {key: usage.pids for key, usage in snapshot.cgroups.usage.items()}
same = lambda snapshot: replace(snapshot, cgroups=replace(snapshot.cgroups, usage={}))  # CPU time moves on
print(json.dumps({"forks": [plain_forks, forked_forks, threaded_forks],
                  "equal": [same(forked) == same(plain), same(threaded) == same(plain)],
                  "sandboxes": sorted(forked.sandboxes.sandboxes),
                  "pids": [live(plain), live(forked), live(threaded)]}))
"""


def test_the_children_observe_what_one_process_does(sandbox: Sandbox) -> None:
    path = sandbox.write("stack.yaml", STACK)
    sandbox.apply(path)
    for args in ([], [str(path)]):  # every stack's usage, or the file's stacks'
        shown = json.loads(sandbox.reconcile("status", "-o", "json", *args, check=True).stdout)
        assert [c["resources"]["usage"]["pids"] for c in shown["stacks"][0]["containers"]] == [2, 2]
    seen = json.loads(sandbox.run(sys.executable, "-c", OBSERVED_BOTH_WAYS).stdout)
    assert seen["forks"] == [0, 2, 0]  # the sandboxes' and the cgroups' children from two; none with a thread
    assert seen["equal"] == [True, True]
    assert seen["sandboxes"] == ["both/a", "both/b"]
    assert seen["pids"] == [{"both/a": 2, "both/b": 2}] * 3  # the init and sleep
