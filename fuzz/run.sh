#!/usr/bin/env bash
# Fuzz tasklane's parsers with cargo-fuzz (nightly), each target for a fixed time, and
# fail on any crash. Usage: fuzz/run.sh [SECONDS_PER_TARGET] [TARGET…]
# CI runs a short budget; for a long hunt: fuzz/run.sh 3600 (or one target: fuzz/run.sh 36000 rest_json).
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-20}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(rest_json grpc_messages names_filters durations_timestamps)
fi
if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "the nightly toolchain is missing: rustup toolchain install nightly" >&2
    exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is missing; installing it"
    cargo install cargo-fuzz --locked
fi
# No sanitizer: the project forbids unsafe code, so panics and hangs are what there is to
# find, and an uninstrumented build takes a third of the time.
cargo +nightly fuzz build -s none
for t in "${targets[@]}"; do
    echo "== fuzz $t for ${seconds}s"
    mkdir -p "corpus/$t"
    cargo +nightly fuzz run -s none "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 2>&1 \
        | grep -E '^(Done|stat::number_of_executed_units|==|SUMMARY|ERROR|.*panicked)' || true
    # cargo-fuzz exits non-zero on a crash, but grep above hides the status: check for artifacts.
    if compgen -G "artifacts/$t/*" >/dev/null; then
        echo "fuzz target $t found a failing input: $(ls artifacts/$t)" >&2
        echo "reproduce with: cargo +nightly fuzz run -s none $t fuzz/artifacts/$t/<file>" >&2
        exit 1
    fi
done
echo "fuzz: ${#targets[@]} targets ran ${seconds}s each without a crash"
