#!/usr/bin/env bash
# Install the peers the drain comparison runs, into ignored folders under bench/peers/:
# graphile-worker, pg-boss and BullMQ from npm (Node 20), apalis from crates.io (its own
# small crate, outside the default workspace). Idempotent.
set -euo pipefail
cd "$(dirname "$0")"

# Pinned. graphile-worker 0.18 and pg-boss 11+ need Node 22; these are the newest for Node 20.
NODE_PACKAGES=(graphile-worker@0.17.3 pg-boss@10.4.2 bullmq@6.7.0 ioredis@5.8.2 pg@8.16.3)

stamp="node/node_modules/.installed-$(printf '%s ' "${NODE_PACKAGES[@]}" | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
    rm -rf node/node_modules
    (cd node && npm install --silent --no-audit --no-fund --no-save --no-package-lock "${NODE_PACKAGES[@]}")
    touch "$stamp"
fi
cargo build --release --quiet --manifest-path apalis/Cargo.toml
