#!/usr/bin/env bash
# Build (once) the cached image of the modern-host test VM: a Debian 12 kernel from apt (6.12 LTS,
# never installed on this host), a debootstrap root filesystem with the tools reconcile drives
# (scripts/apt-packages.sh, as setup.sh installs here) and what setup.sh made in /usr/share/reconcile
# (the seccomp profile, the example's image), as an ext4 image, and a 2 MB busybox initramfs.
# Output in $VM_CACHE/<stamp> (default /var/cache/reconcile-vm): vmlinuz (+ vmlinux), initrd.gz,
# rootfs.ext4, KVER. The stamp hashes what goes in: a changed package list builds a new image.
# Needs root and apt: qemu-system-x86 debootstrap e2fsprogs cpio xz-utils zstd. Run scripts/setup.sh first.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/../apt-packages.sh"
SHARED=/usr/share/reconcile
[ -s "$SHARED/seccomp/moby-default.json" ] || { echo "vm-image: run scripts/setup.sh first ($SHARED)" >&2; exit 2; }
# Debian 12's newest kernel (6.12 LTS, from bookworm-security); VM_KERNEL_PKG=linux-image-amd64 gives 6.1
KPKG=${VM_KERNEL_PKG:-linux-image-6.12-amd64}
SUITE=bookworm
MIRROR=${VM_MIRROR:-$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null)}
# debootstrap picks no provider of a virtual package: skopeo's container-network-stack is named.
PKGS=$(IFS=,; echo "python3-venv,kmod,containernetworking-plugins,${APT_PACKAGES[*]}")
STAMP=$( { echo "$KPKG $PKGS"; cat "$HERE"/vm-image.sh "$HERE"/vm-init "$HERE"/build-initramfs.sh;
           find "$SHARED" -type f -print0 | sort -z | xargs -0 sha256sum; } | sha256sum | cut -c1-12)
VM_CACHE=${VM_CACHE:-/var/cache/reconcile-vm}/$STAMP
echo "$VM_CACHE"  # for vm-test.sh: the one line on stdout

mkdir -p "$VM_CACHE"; cd "$VM_CACHE"
[ -f rootfs.ext4 ] && [ -f initrd.gz ] && [ -f vmlinuz ] && exit 0
exec 3>&1 >&2  # progress on stderr
rm -rf build && mkdir -p build/k

# 1. kernel + modules, extracted (never installed on the host)
KDEB=$(apt-cache depends "$KPKG" | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
(cd build && apt-get download "${KDEB:-$KPKG}" >/dev/null)
dpkg-deb -x build/*.deb build/k
KVER=$(ls build/k/lib/modules)
cp build/k/boot/vmlinuz-"$KVER" vmlinuz.tmp
# the uncompressed ELF (PVH entry) boots ~1.5 s faster under TCG than the bzImage: no decompressor
python3 - build/k/boot/vmlinuz-"$KVER" vmlinux.zst <<'PY'
import sys; d = open(sys.argv[1], 'rb').read(); i = d.find(b'\x28\xb5\x2f\xfd')
if i > 0: open(sys.argv[2], 'wb').write(d[i:])
PY
[ -s vmlinux.zst ] && { zstd -qdc vmlinux.zst > vmlinux.tmp 2>/dev/null || true; }   # trailing bytes: rc 1
rm -f vmlinux.zst; [ "$(head -c4 vmlinux.tmp 2>/dev/null | od -An -tx1 | tr -d ' ')" = 7f454c46 ] || rm -f vmlinux.tmp

# 2. root filesystem
debootstrap --variant=minbase --include="$PKGS" "$SUITE" build/rootfs "$MIRROR" >build/debootstrap.log
mkdir -p build/rootfs/lib/modules && cp -a build/k/lib/modules/"$KVER" build/rootfs/lib/modules/
chroot build/rootfs depmod "$KVER"
install -m 755 "$HERE"/vm-init build/rootfs/sbin/vm-init
mkdir -p build/rootfs"$SHARED" && cp -a "$SHARED"/. build/rootfs"$SHARED"/
chroot build/rootfs apt-get clean
rm -rf build/rootfs/usr/share/{doc,man,locale,info}/* build/rootfs/var/lib/apt/lists/*

# 3. initramfs (busybox + the virtio/ext4/9p/overlay modules) and the ext4 image
"$HERE"/build-initramfs.sh build/rootfs "$KVER" initrd.gz.tmp >/dev/null
truncate -s 2G rootfs.ext4.tmp && mkfs.ext4 -q -F -L vmroot -d build/rootfs rootfs.ext4.tmp
echo "$KVER" > KVER
mv vmlinuz.tmp vmlinuz; [ -s vmlinux.tmp ] && mv vmlinux.tmp vmlinux; mv initrd.gz.tmp initrd.gz; mv rootfs.ext4.tmp rootfs.ext4
rm -rf build
# Images of older inputs, unless a vm-test still boots from one (it holds a shared lock on it):
# a run of the whole suite outlives a change of the package list.
find .. -mindepth 1 -maxdepth 1 -type d ! -name "$STAMP" -exec flock -n -x {} rm -rf {} \; 2>/dev/null || true
du -sh --apparent-size rootfs.ext4; du -sh "$VM_CACHE"
