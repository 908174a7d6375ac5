# The Debian packages reconcile drives and its tests call: sourced by scripts/setup.sh (this host)
# and scripts/vm/vm-image.sh (the modern-host test VM), so both have the same tools.
# shellcheck shell=bash disable=SC2034
APT_PACKAGES=(iproute2 iptables nftables conntrack util-linux mount catatonit busybox-static procps crun libseccomp2 keyutils
    python3 python3-nftables skopeo docker-registry zstd umoci apache2-utils socat libjemalloc2)
# python3 and keyutils: the tests run Debian's python3 and keyctl inside containers (escape corpus).
# nftables: nft, with which the tests read and plant rules the way an admin would.
# python3-nftables: libnftables' official Python binding, the nftables backend's way in
# (scripts/link-system-modules.sh links it into the venvs).
# skopeo pulls images; zstd unpacks zstd layers (Python has no zstd in its standard library);
# docker-registry serves the tests' images on loopback (its own service is not wanted: below).
# umoci builds the example's image offline: busybox-static in an OCI layout (below).
# apache2-utils: rotatelogs, each container's log writer (size rotation, as Docker's json-file).
# socat: the userland proxy of a port published on [::1] (kernel/proxy.py).
# libjemalloc2: the watch agent's malloc (kernel/memory.py: less of its heap left resident).
