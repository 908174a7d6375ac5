#!/usr/bin/env bash
# Link Debian's Python bindings of system libraries into a venv, one module at a time, so the venv
# sees those modules and nothing else of the system's site-packages. python3-nftables is the
# official binding of libnftables (the nftables backend's library): it must match the installed
# library, and has no wheel. Usage: scripts/link-system-modules.sh VENV
set -euo pipefail
venv=$1
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for module in nftables; do
    ln -sfn "/usr/lib/python3/dist-packages/$module" "$site/$module"
done
