"""The agent's metrics: counted with prometheus_client when served, not even imported when not
(the library brings http.server and OpenSSL: ~3.5 MiB of the agent's memory)."""

from __future__ import annotations

import subprocess
import sys

from reconcile.watch.metrics import Metrics

UNSERVED = """
import sys
from reconcile.watch.metrics import Metrics
metrics = Metrics(lambda: 0, served=False)
metrics.changes.labels("container", "create").inc()
metrics.reconcile_seconds.labels("ok").observe(0.1)
metrics.record_health("s", "c", "healthy", True)
metrics.forget_health("s", "c")
import reconcile.watch.agent, reconcile.watch.run
print(sorted(name for name in sys.modules if name.startswith(("prometheus_client", "ssl", "http."))))
"""


def test_unserved_metrics_import_no_client_library() -> None:
    done = subprocess.run([sys.executable, "-c", UNSERVED], capture_output=True, text=True, check=True)
    assert done.stdout == "[]\n"


def test_served_metrics_count_what_the_agent_records() -> None:
    from prometheus_client import generate_latest

    metrics = Metrics(lambda: 3, served=True)
    metrics.changes.labels("container", "create").inc()
    metrics.repairs.labels("endpoint").inc()
    metrics.reconcile_seconds.labels("ok").observe(0.02)
    metrics.record_health("s", "c", "healthy", True)
    assert metrics.registry is not None
    text = generate_latest(metrics.registry).decode()
    assert 'reconcile_changes_total{action="create",kind="container"} 1.0' in text
    assert 'reconcile_repairs_total{kind="endpoint"} 1.0' in text
    assert 'reconcile_duration_seconds_bucket{le="0.025",result="ok"} 1.0' in text
    assert 'reconcile_container_health{container="c",stack="s",status="healthy"} 1.0' in text
    assert "reconcile_queue_depth 3.0" in text
    metrics.clear_health("s", "c")  # stopped: no health, as status shows none; its probes' counts stay
    text = generate_latest(metrics.registry).decode()
    assert "reconcile_container_health{" not in text and 'reconcile_health_probes_total{container="c"' in text
    metrics.record_health("s", "c", "unhealthy", False)
    metrics.forget_health("s", "c")
    text = generate_latest(metrics.registry).decode()
    assert "reconcile_container_health{" not in text and "reconcile_health_probes_total{" not in text
