#!/usr/bin/env bash
# Install the official Cloud Tasks clients the compatibility tests drive, into ignored
# folders under compat/. Idempotent and safe to run from parallel tests (one lock per client).
# Usage: compat/setup.sh python|node
set -euo pipefail
cd "$(dirname "$0")"

PYTHON_PACKAGES=(google-cloud-tasks==2.26.0 "PyJWT[crypto]==2.10.1")
NODE_PACKAGES=(@google-cloud/tasks@6.3.0)

case "${1:-}" in
python)
    exec 9>python/.setup.lock
    flock 9
    stamp="python/.venv/.installed-$(printf '%s ' "${PYTHON_PACKAGES[@]}" | sha1sum | cut -c1-12)"
    if [ ! -f "$stamp" ]; then
        rm -rf python/.venv
        python3 -m venv python/.venv
        python/.venv/bin/pip install --quiet --disable-pip-version-check "${PYTHON_PACKAGES[@]}"
        touch "$stamp"
    fi
    ;;
node)
    exec 9>node/.setup.lock
    flock 9
    stamp="node/node_modules/.installed-$(printf '%s ' "${NODE_PACKAGES[@]}" | sha1sum | cut -c1-12)"
    if [ ! -f "$stamp" ]; then
        rm -rf node/node_modules
        (cd node && npm install --silent --no-audit --no-fund --no-save --no-package-lock "${NODE_PACKAGES[@]}")
        touch "$stamp"
    fi
    ;;
*)
    echo "usage: $0 python|node" >&2
    exit 2
    ;;
esac
