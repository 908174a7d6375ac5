#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run every check: the layering contract, ruff and mypy (configured
# in pyproject.toml), and the test suite on this host (two workers) and, alongside, the
# modern-host lane: kernel-facing tests again in a throwaway VM with cgroup v2 and its own
# kernel (scripts/vm/vm-test.sh; the whole suite there: scripts/vm/vm-test.sh alone). Must run as
# root: the tests drive the real kernel inside throwaway namespaces. Arguments go to pytest on
# this host and skip the VM lane, as does RECONCILE_VM_LANE=0.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/lint-imports
.venv/bin/ruff check controllers kernel state specs reconcile tests bench
.venv/bin/mypy  # the packages listed in pyproject.toml
# The modern-host lane: what differs on cgroup v2 and a 6.12 kernel with modules, once each, in
# an emulated VM (TCG here, ~15-25x slower; KVM where the host has it). Each kernel test costs
# 30-300 s there, so the lane takes one test per facet, not the whole files (the 166 tests of
# the nine files took 53 min beside the host's suite on 2026-12-07, and CI must end within 30;
# 92 tests with placement, exec's limits and nf_tables' notifications took 18.6 min): the v2
# driver on its files; limits (memory, cpus, pids) applied, changed and repaired; an OOM kill as
# `status` reads it; the escape corpus under the default confinement (cgroup escapes included);
# and the firewall on the guest's nf_tables, natively and through iptables-nft, with a lost
# table repaired. Everything else runs there on demand:
# scripts/vm/vm-test.sh FILES... (no arguments: the whole suite).
VM_LANE=(tests/test_cgroups_v2_paths.py
         tests/test_cgroups_e2e.py::test_limits_round_trip_in_place_and_drift
         tests/test_cgroups_e2e.py::test_memory_limit_oom_kills_and_status_says_so
         "tests/test_confinement.py::test_the_escape_corpus_fails_under_the_default_confinement[docker-default]"
         tests/test_firewall_nft_kernel.py::test_auto_picks_nftables_here
         tests/test_firewall_nft_kernel.py::test_rendered_text_is_what_nft_lists
         "tests/test_firewall_nft_kernel.py::test_round_trip_repairs_drift[nft delete table inet reconcile-expected5]"
         tests/test_firewall_kernel.py::test_rendered_text_is_what_iptables_save_prints)
vm_log=
if [ $# -eq 0 ] && [ "${RECONCILE_VM_LANE:-1}" != 0 ]; then
    vm_log=$(mktemp)
    trap 'rm -f "$vm_log"' EXIT
    VM_TIMEOUT=${VM_TIMEOUT:-1500} scripts/vm/vm-test.sh "${VM_LANE[@]}" >"$vm_log" 2>&1 &
    vm_pid=$!
fi
pytest_run() {  # pytest's exit status, "no tests collected" (5) made a failure
    local rc=0
    .venv/bin/python -m pytest -q "$@" || rc=$?
    if [ "$rc" -eq 5 ]; then echo "error: pytest collected no tests" >&2; rc=1; fi
    return "$rc"
}
status=0
if [ $# -gt 0 ]; then
    pytest_run "$@" || status=$?
else
    # A worker per core (tests that sandboxes do not isolate on one: tests/sandbox.py), then the
    # tests that need a process with one thread, which an xdist worker is not.
    pytest_run -n 2 --dist loadgroup -m "not single_threaded" || status=$?
    pytest_run -m single_threaded || { rc=$?; [ "$status" -ne 0 ] || status=$rc; }
fi
if [ -n "$vm_log" ]; then
    set +e
    wait "$vm_pid"
    vm_status=$?
    set -e
    echo "== modern-host lane (a VM: cgroup v2, kernel 6.12): ${VM_LANE[*]}"
    grep -v '^T \|^VM_INIT_UP\|Booting from ROM\|reboot: Power down' "$vm_log" || true
    [ "$status" -ne 0 ] || status=$vm_status
fi
exit "$status"
