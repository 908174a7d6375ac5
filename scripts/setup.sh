#!/usr/bin/env bash
# Set up a fresh Debian 12 machine (run as root): the system tools reconcile drives, and the
# project with its test dependencies in ./.venv. Idempotent: a second run installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/apt-packages.sh  # APT_PACKAGES: also what the test VM is built with (scripts/vm)
# Moby's default seccomp profile, as Debian maintains it (its updates taken, below). Its package
# would pull in ~260 Go source packages, so only the profile is taken out of it.
SECCOMP_PACKAGE=golang-github-docker-docker-dev
SECCOMP_MEMBER=./usr/share/gocode/src/github.com/docker/docker/profiles/seccomp/default.json
SECCOMP_PROFILE=/usr/share/reconcile/seccomp/moby-default.json
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ! python3 -c 'import sys, ensurepip; assert sys.version_info >= (3, 11)' 2>/dev/null; then
    missing+=(python3 python3-venv)
fi
if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # Debian starts the registry's own service on install (port 5000 of every address): the
    # tests run theirs inside their namespaces, so one this script brought in is stopped.
    if [[ " ${missing[*]} " == *" docker-registry "* ]] && command -v systemctl >/dev/null \
            && systemctl is-enabled --quiet docker-registry 2>/dev/null; then
        systemctl disable --now docker-registry >/dev/null 2>&1 || true
    fi
fi

# Taken again whenever apt's lists know a newer version of the package than the one taken.
seccomp_version=$(apt-cache show --no-all-versions "$SECCOMP_PACKAGE" 2>/dev/null | sed -n 's/^Version: //p')
if [ ! -s "$SECCOMP_PROFILE" ] || { [ -n "$seccomp_version" ] \
        && [ "$(cat "$SECCOMP_PROFILE.version" 2>/dev/null)" != "$seccomp_version" ]; }; then
    workdir=$(mktemp -d)
    trap 'rm -rf "$workdir"' EXIT
    (cd "$workdir" && { apt-get download -qq "$SECCOMP_PACKAGE" 2>/dev/null \
        || { apt-get update -qq && apt-get download -qq "$SECCOMP_PACKAGE"; }; })
    dpkg-deb --fsys-tarfile "$workdir"/${SECCOMP_PACKAGE}_*.deb | tar -xO "$SECCOMP_MEMBER" > "$workdir/profile.json"
    install -D -m 0644 "$workdir/profile.json" "$SECCOMP_PROFILE"
    dpkg-deb -f "$workdir"/${SECCOMP_PACKAGE}_*.deb Version > "$SECCOMP_PROFILE.version"
fi

# The example stack's image, for hosts with no registry: an OCI layout of Debian's busybox-static.
EXAMPLE_IMAGE=/usr/share/reconcile/images/busybox
if [ ! -s "$EXAMPLE_IMAGE/index.json" ]; then
    build=$(mktemp -d)
    umoci init --layout "$build/layout"
    umoci new --image "$build/layout:latest"
    umoci unpack --image "$build/layout:latest" "$build/bundle" >/dev/null
    rootfs="$build/bundle/rootfs"
    mkdir -p "$rootfs/bin" "$rootfs/etc" "$rootfs/tmp" "$rootfs/proc" "$rootfs/sys" "$rootfs/dev"
    chmod 1777 "$rootfs/tmp"
    cp /bin/busybox "$rootfs/bin/busybox"
    for applet in $(/bin/busybox --list); do
        [ "$applet" = busybox ] || ln -s busybox "$rootfs/bin/$applet"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n' > "$rootfs/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' > "$rootfs/etc/group"
    umoci repack --image "$build/layout:latest" "$build/bundle" >/dev/null
    umoci config --image "$build/layout:latest" --config.env PATH=/bin --config.cmd sh >/dev/null
    umoci gc --layout "$build/layout"
    mkdir -p "$(dirname "$EXAMPLE_IMAGE")"
    rm -rf "$EXAMPLE_IMAGE"  # a copy without its index.json is half of one
    mv "$build/layout" "$EXAMPLE_IMAGE"
    rm -rf "$build"
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
# The project's modules byte-compiled now, as Python would on a first run, because some hosts set
# PYTHONDONTWRITEBYTECODE (ours do): there every run of the CLI would compile them from source
# again, ~0.2 s of each (0.70 -> 0.48 s for a `diff` of the example stack). A module edited
# later is compiled afresh in memory (its .pyc no longer matches), until this runs again.
.venv/bin/python -m compileall -q -j 0 reconcile specs controllers state kernel tests bench >/dev/null
scripts/link-system-modules.sh .venv
