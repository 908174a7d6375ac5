#!/usr/bin/env bash
# Run lint-imports + pytest inside a throwaway VM that is a "modern host": Debian's kernel 6.12 with
# loadable modules, cgroup v2 unified with every controller enabled in the root's
# cgroup.subtree_control, nftables, and the tools reconcile drives (scripts/apt-packages.sh). The
# checkout is shared into the guest over 9p at the same path, with a venv built for the guest's python.
# Usage, from anywhere: scripts/vm/vm-test.sh [pytest args]
#   No args: the whole suite, in batches of VM_BATCH test files, each in a VM of its own.
# Env: VM_CACHE (image cache), VM_ACCEL (kvm|tcg, default: kvm when usable), VM_MEM, VM_CPUS, VM_RUN
#      (a shell command instead of pytest), VM_TIMEOUT (seconds, per VM), VM_BATCH (default 6).
# An emulated guest's kernel can oops under TCG (an int3 in code another vCPU was patching, seen a
# few times per hour of tests): a VM that stops without a result is booted once more.
# Exit status: pytest's (the first failing batch's); 124 on timeout; 2 when the VM failed twice.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/../.." && pwd); cd "$SRC"
case $SRC in *[[:space:]]*) echo "vm-test: checkout path must not contain spaces" >&2; exit 2;; esac
VM_MEM=${VM_MEM:-4G} VM_CPUS=${VM_CPUS:-2} VM_TIMEOUT=${VM_TIMEOUT:-3600} VM_BATCH=${VM_BATCH:-6}
VM_HOST_PACKAGES=(qemu-system-x86 debootstrap e2fsprogs cpio xz-utils zstd)  # to build and boot the VM
missing=()
for pkg in "${VM_HOST_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
VM_CACHE=$("$HERE"/vm-image.sh)
exec 9<"$VM_CACHE" && flock -s 9  # in use: a newer image's build leaves this one be

# The guest's python is Debian 12's /usr/bin/python3, so the shared venv must be built from it.
if ! grep -qx 'home = /usr/bin' .venv-vm/pyvenv.cfg 2>/dev/null || [ ! -x .venv-vm/bin/pytest ]; then
    /usr/bin/python3 -m venv .venv-vm
    .venv-vm/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
fi
scripts/link-system-modules.sh .venv-vm  # resolved in the guest, which has the same packages

# KVM only when it can run a stock kernel: not under a PVM host (kvm_pvm needs PVM-enabled guests).
if [ -z "${VM_ACCEL:-}" ]; then
    if [ -w /dev/kvm ] && [ ! -d /sys/module/kvm_pvm ]; then VM_ACCEL=kvm; else VM_ACCEL=tcg; fi
fi
case $VM_ACCEL in kvm) ACCEL=(-accel kvm -cpu host);; *) ACCEL=(-accel tcg,thread=multi -cpu max);; esac

work=$(mktemp -d "$VM_CACHE/run.XXXXXX")
trap 'rm -rf "$work"' EXIT
# The venv goes in as an ext4 disk mounted over the share: imports from 9p under TCG are ~2x slower.
mkfs.ext4 -q -F -d .venv-vm "$work/venv.ext4" "$(( $(du -sm .venv-vm | cut -f1) * 3 / 2 + 64 ))M"
KERNEL=$VM_CACHE/vmlinux; [ -f "$KERNEL" ] || KERNEL=$VM_CACHE/vmlinuz

boot() {  # one VM running lint-imports + pytest "$@" (or VM_RUN); its exit status
    local ctl qrc
    ctl=$(mktemp -d "$work/ctl.XXXXXX")
    {
        echo '#!/bin/bash'
        printf 'cd %q || exit 2\n' "$SRC"
        if [ -n "${VM_RUN:-}" ]; then printf '%s\n' "$VM_RUN"; else
        echo '.venv-vm/bin/lint-imports || exit $?'
        printf '.venv-vm/bin/python -m pytest -q -p no:cacheprovider'; [ $# -gt 0 ] && printf ' %q' "$@"; echo
        echo 'rc=$?; [ $rc -eq 5 ] && { echo "error: pytest collected no tests" >&2; rc=1; }; exit $rc'
        fi
    } > "$ctl/cmd.sh"
    set +e
    timeout --foreground "$VM_TIMEOUT" qemu-system-x86_64 "${ACCEL[@]}" -m "$VM_MEM" -smp "$VM_CPUS" \
        -nodefaults -no-user-config -nographic -serial stdio -no-reboot \
        -kernel "$KERNEL" -initrd "$VM_CACHE/initrd.gz" \
        -append "console=ttyS0 panic=-1 quiet loglevel=1 vmroot=/dev/vda vmsrc=$SRC vmdisk=/dev/vdb:$SRC/.venv-vm" \
        -drive file="$VM_CACHE/rootfs.ext4",if=virtio,format=raw,snapshot=on \
        -drive file="$work/venv.ext4",if=virtio,format=raw,snapshot=on \
        -virtfs local,path="$ctl",mount_tag=ctl,security_model=none \
        -virtfs local,path="$SRC",mount_tag=src,security_model=none
    qrc=$?
    set -e
    [ $qrc -eq 124 ] && { echo "vm-test: timed out after ${VM_TIMEOUT}s" >&2; return 124; }
    [ -f "$ctl/rc" ] || { echo "vm-test: the VM stopped without a result (qemu status $qrc)" >&2; return 2; }
    return "$(cat "$ctl/rc")"
}

boot_twice_if_lost() {
    local rc=0
    boot "$@" || rc=$?
    if [ $rc -eq 2 ]; then
        echo "== vm-test: the VM stopped without a result; once more" >&2
        rc=0; boot "$@" || rc=$?
    fi
    return $rc
}

if [ $# -gt 0 ] || [ -n "${VM_RUN:-}" ]; then
    status=0; boot_twice_if_lost "$@" || status=$?
    exit $status
fi
files=(tests/test_*.py)
status=0
for ((i = 0; i < ${#files[@]}; i += VM_BATCH)); do
    echo "== vm-test: ${files[*]:i:VM_BATCH}"
    rc=0; boot_twice_if_lost -rfE "${files[@]:i:VM_BATCH}" || rc=$?
    [ $status -ne 0 ] || status=$rc
done
exit $status
