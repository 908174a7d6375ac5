"""Restart policies and the crash-loop backoff (pure: times are arguments)."""

from __future__ import annotations

from reconcile.watch.restarts import Backoff, CrashLoop, Exit

BACKOFF = Backoff(initial=10, cap=40, stable=60)


def test_policies_no_and_on_failure_with_success_keep_it_down() -> None:
    loop = CrashLoop(BACKOFF)
    assert loop.restart_at(Exit("s/a", "no", 0, 1), now=100) is None
    assert loop.restart_at(Exit("s/a", "on-failure", 0, 0), now=100) is None
    assert loop.restart_at(Exit("s/a", "on-failure", 0, 3), now=100) == 100
    assert loop.restart_at(Exit("s/b", "on-failure", 0, None), now=100) == 100  # killed: a failure


def test_a_crash_loop_doubles_the_delay_up_to_the_cap_and_a_stable_run_resets_it() -> None:
    loop = CrashLoop(BACKOFF)
    now, started = 1000.0, 995.0
    delays = []
    for _ in range(5):
        at = loop.restart_at(Exit("s/web", "always", started, 1), now)
        assert at is not None
        delays.append(at - now)
        started = at + 1  # restarted, died a second later
        now = at + 1
    assert delays == [0, 10, 20, 40, 40]
    at = loop.restart_at(Exit("s/web", "always", now, 1), now + BACKOFF.stable)
    assert at == now + BACKOFF.stable  # ran long enough: forgiven, restarted at once


def test_the_same_exit_asked_again_gets_the_same_answer() -> None:
    loop = CrashLoop(BACKOFF)
    loop.restart_at(Exit("s/web", "always", 0, 1), now=1)
    first = loop.restart_at(Exit("s/web", "always", 2, 1), now=3)
    assert first == 13
    assert loop.restart_at(Exit("s/web", "always", 2, 1), now=8) == first


def test_a_stack_forgotten_starts_over() -> None:
    loop = CrashLoop(BACKOFF)
    loop.restart_at(Exit("s/web", "always", 0, 1), now=1)
    assert loop.restart_at(Exit("s/web", "always", 2, 1), now=3) == 13
    loop.forget_stack("s")
    assert loop.restart_at(Exit("s/web", "always", 4, 1), now=5) == 5


def test_containers_forgotten_start_over_and_the_others_keep_their_backoff() -> None:
    loop = CrashLoop(BACKOFF)
    for name in ("s/web", "s/api"):
        loop.restart_at(Exit(name, "always", 0, 1), now=1)
        assert loop.restart_at(Exit(name, "always", 2, 1), now=3) == 13
    loop.forget(["s/web"])
    assert loop.restart_at(Exit("s/web", "always", 4, 1), now=5) == 5
    assert loop.restart_at(Exit("s/api", "always", 14, 1), now=15) == 35  # doubled: not forgotten


def test_a_crash_noticed_late_is_judged_by_when_it_exited() -> None:
    loop = CrashLoop(BACKOFF)
    loop.restart_at(Exit("s/web", "always", 0, 1, exited_at=1), now=1)
    late = loop.restart_at(Exit("s/web", "always", 2, 1, exited_at=3), now=500)  # agent was busy
    assert late == 510  # ran one second: backoff, although 498 s passed before anyone looked
