#!/usr/bin/env bash
# Drive a running tasklane through its own OpenAPI document with schemathesis (from PyPI,
# installed into fuzz/.venv on first use), and fail on any 5xx, timeout or crash.
# Usage: fuzz/api.sh [SECONDS] [path to the tasklane binary]
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-60}"
binary="${2:-../target/debug/tasklane}"
SCHEMATHESIS=schemathesis==4.32.5
stamp=".venv/.installed-${SCHEMATHESIS}"
if [ ! -f "$stamp" ]; then
    rm -rf .venv
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check "$SCHEMATHESIS"
    touch "$stamp"
fi
if [ ! -x "$binary" ]; then
    (cd .. && cargo build --locked -q -p tasklane)
fi
rm -rf .api-data
mkdir -p .api-data
# An admin token from the start: otherwise the first token the fuzzer makes through
# POST /v1/tokens turns authentication on and every later call is a 401.
token=$("$binary" tokens create fuzz --scope admin --data-dir .api-data/store)
"$binary" serve --listen 127.0.0.1:0 --data-dir .api-data/store --log-level warn >.api-data/stdout 2>.api-data/stderr &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    grep -q 'listening on' .api-data/stdout 2>/dev/null && break
    sleep 0.1
done
base=$(sed -n 's/^tasklane listening on //p' .api-data/stdout | head -1)
if [ -z "$base" ]; then
    echo "tasklane did not start:" >&2
    cat .api-data/stderr >&2
    exit 1
fi
echo "== schemathesis against $base for ${seconds}s"
# Event streams never end by design; everything else must answer within 65 s (a long poll
# waits at most 60).
.venv/bin/schemathesis run "$base/v1/openapi.json" \
    --header "Authorization: Bearer $token" \
    --checks not_a_server_error \
    --max-time "$seconds" \
    --request-timeout 65 \
    --exclude-path-regex '/events$' \
    --no-color
if ! kill -0 "$pid" 2>/dev/null; then
    echo "tasklane exited during the run:" >&2
    cat .api-data/stderr >&2
    exit 1
fi
python3 -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + '/healthz', timeout=5)" "$base" || { echo "tasklane stopped answering /healthz" >&2; exit 1; }
if grep -qi 'panicked' .api-data/stderr; then
    echo "tasklane panicked during the run:" >&2
    grep -i -A3 'panicked' .api-data/stderr >&2
    exit 1
fi
echo "api fuzz: no server error, timeout or crash in ${seconds}s"
