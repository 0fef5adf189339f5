#!/usr/bin/env bash
# The same drain workload on tasklane and its peers, one after another in one session,
# and the ratios between them (this machine is shared: only same-run ratios mean much).
# Usage: bench/peers/run.sh [jobs]     (default 100,000)
# Needs PostgreSQL (BENCH_DATABASE_URL, default the local test database) and Redis
# (BENCH_REDIS_URL, default redis://127.0.0.1:6379). Results go to bench/peers/results/.
set -euo pipefail
cd "$(dirname "$0")"
JOBS="${1:-100000}"
export BENCH_DATABASE_URL="${BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
export BENCH_REDIS_URL="${BENCH_REDIS_URL:-redis://127.0.0.1:6379}"
out="results/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"

echo "== installing and building"
./setup.sh
(cd ../.. && cargo build --release --quiet -p tasklane)

echo "== tasklane ($JOBS tasks: HTTP push on the embedded store and PostgreSQL, pull workers)"
../../target/release/tasklane bench --only push,pull --tasks "$JOBS" --database-url "$BENCH_DATABASE_URL" \
    --json "$out/tasklane.json" | tee "$out/tasklane.txt"
for peer in graphile-worker pg-boss bullmq; do
    echo "== $peer"
    node "node/$peer.mjs" "$JOBS" | tee "$out/$peer.json"
done
echo "== apalis"
apalis/target/release/apalis-peer "$JOBS" | tee "$out/apalis.json"

{
    echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB; $(uname -sr)"
    echo "node $(node --version); $(psql --version 2>/dev/null || echo 'psql ?'); $(redis-server --version 2>/dev/null | cut -d' ' -f1-3 || echo 'redis ?')"
    echo "tasklane $(cd ../.. && git rev-parse --short HEAD)"
} > "$out/environment.txt"
python3 report.py "$out" | tee "$out/report.txt"
