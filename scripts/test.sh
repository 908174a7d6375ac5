#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run every check: the layering contract, then the test suite.
# Must run as root: the tests drive the real kernel inside throwaway namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/lint-imports
set +e
.venv/bin/python -m pytest -q "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
    echo "error: pytest collected no tests" >&2
    exit 1
fi
exit "$status"
