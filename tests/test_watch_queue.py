"""The agent's work queue: keys coalesce, an active key is never handed out twice, delays hold."""

from __future__ import annotations

import threading

from reconcile.watch.queue import RETRY_BASE, RETRY_CAP, WorkQueue


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_keys_added_many_times_come_out_once_in_order() -> None:
    queue: WorkQueue[str] = WorkQueue()
    for key in ["a", "b", "a", "c", "b"]:
        queue.add(key)
    assert queue.depth() == 3
    taken = [queue.get(timeout=0) for _ in range(3)]
    assert taken == ["a", "b", "c"]
    assert queue.get(timeout=0) is None


def test_a_key_added_while_active_comes_back_after_done_not_before() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("web")
    assert queue.get(timeout=0) == "web"
    queue.add("web")
    queue.add("web")
    assert queue.get(timeout=0) is None  # still being worked on
    queue.done("web")
    assert queue.get(timeout=0) == "web"
    queue.done("web")
    assert queue.depth() == 0


def test_a_delayed_key_waits_and_the_earliest_request_wins() -> None:
    clock = Clock()
    queue: WorkQueue[str] = WorkQueue(clock)
    queue.add("db", delay=10)
    assert queue.get(timeout=0) is None
    queue.add("db", delay=2)
    clock.now += 2
    assert queue.get(timeout=0) == "db"
    queue.done("db")
    queue.add("db", delay=5)
    queue.add("db", delay=20)  # a later request does not postpone the earlier one
    clock.now += 5
    assert queue.get(timeout=0) == "db"


def test_get_blocks_until_a_producer_adds_and_close_releases_waiters() -> None:
    queue: WorkQueue[str] = WorkQueue()
    got: list[str | None] = []
    consumer = threading.Thread(target=lambda: got.append(queue.get(timeout=5)))
    consumer.start()
    queue.add("net")
    consumer.join(5)
    assert got == ["net"]
    waiter = threading.Thread(target=lambda: got.append(queue.get()))
    waiter.start()
    queue.close()
    waiter.join(5)
    assert got == ["net", None] and not waiter.is_alive()
    queue.add("late")
    assert queue.depth() == 0


def test_keys_seen_by_a_later_observation_are_dropped_newer_ones_kept() -> None:
    clock = Clock()
    queue: WorkQueue[str] = WorkQueue(clock)
    queue.add("s/web")
    assert queue.get(timeout=0) == "s/web"
    queue.add("s/web")  # the event of our own write, while we work on the key
    queue.add("s/db")
    queue.add("t/web")
    clock.now += 1
    observed_at = clock.now  # the final observation of the reconcile
    clock.now += 1
    queue.add("s/db")  # drift made after that observation: must be reconciled
    assert queue.drop_stale(lambda key: key.startswith("s/"), observed_at) == {"s/web"}
    queue.done("s/web")
    assert sorted(k for k in iter(lambda: queue.get(timeout=0), None)) == ["s/db", "t/web"]


def test_due_keys_are_offered_in_order_and_stay_queued() -> None:
    clock = Clock()
    queue: WorkQueue[str] = WorkQueue(clock)
    queue.add("b")
    clock.now += 1
    queue.add("a")
    queue.add("later", delay=10)
    assert queue.due(limit=5) == ["b", "a"]
    assert queue.due(limit=1) == ["b"]
    assert queue.depth() == 3


def test_a_failing_key_waits_longer_each_time_until_it_succeeds_once() -> None:
    queue: WorkQueue[str] = WorkQueue()
    delays = [queue.backoff("web")[1] for _ in range(12)]
    assert delays[:4] == [RETRY_BASE, RETRY_BASE * 2, RETRY_BASE * 4, RETRY_BASE * 8]
    assert delays[-1] == RETRY_CAP and all(a <= b for a, b in zip(delays, delays[1:]))
    assert queue.backoff("db") == (1, RETRY_BASE)  # per key
    queue.forget("web")
    assert queue.backoff("web") == (1, RETRY_BASE)


def test_a_key_comes_out_with_the_first_reason_it_was_added_for_since_it_last_came_out() -> None:
    clock = Clock()
    queue: WorkQueue[str] = WorkQueue(clock)
    queue.add("web", reason="kernel: link deleted")
    queue.add("web", reason="resync")
    assert queue.reason("web") == "kernel: link deleted"  # a rider's, while it waits
    assert queue.get(timeout=0) == "web"
    assert queue.reason("web") == "kernel: link deleted"
    observed_at = clock.now
    clock.now += 1
    queue.add("web", reason="kernel: process exited")  # while the pass runs, after its observation
    assert queue.drop_stale(lambda key: True, observed_at) == set()  # newer than what the pass saw
    assert queue.reason("web") == "kernel: link deleted"  # the active run's own, until done
    queue.done("web")
    assert queue.get(timeout=0) == "web" and queue.reason("web") == "kernel: process exited"
    queue.done("web")
    queue.add("web", reason="kernel: rule deleted")
    clock.now += 1
    assert queue.drop_stale(lambda key: True, clock.now) == {"web"}  # seen by a later pass: gone with its reason
    queue.add("web")
    assert queue.get(timeout=0) == "web" and queue.reason("web") == ""


def test_a_key_added_for_what_no_observation_shows_is_not_dropped_as_stale() -> None:
    """The agent's image pulls: a pass that observed after the pull finished has not started
    the containers that waited for it (it left them out), so its drop_stale must not take the
    key the pull added."""
    clock = Clock()
    queue: WorkQueue[str] = WorkQueue(clock)
    queue.add("host", reason="image pulled", observable=False)
    queue.add("s/web", reason="kernel: link deleted")
    clock.now += 1
    assert queue.drop_stale(lambda key: True, clock.now) == {"s/web"}
    assert queue.get(timeout=0) == "host" and queue.reason("host") == "image pulled"
    queue.done("host")
    queue.add("host", reason="kernel: rule deleted")  # handed out since: droppable again
    clock.now += 1
    assert queue.drop_stale(lambda key: True, clock.now) == {"host"}
