#!/usr/bin/env bash
# The whole test run: what CI runs, and what the README tells you to run.
# Formatting, lints, then every unit, in-process and process-harness test
# (the harness starts real `hstack` processes, so the binary is built first).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export CARGO_TERM_COLOR=never
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
scripts/deny.sh
cargo build --locked -p hstack
# (the log lives outside target/: CARGO_TARGET_DIR may point elsewhere)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --all-targets --locked -- --test-threads 2 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole run (cargo prints one per test binary).
awk '/^test result:/ { p += $4; f += $6 } END { printf "all tests: %d passed, %d failed\n", p, f; if (p == 0 || f > 0) exit 1 }' "$log"
exit "$status"
