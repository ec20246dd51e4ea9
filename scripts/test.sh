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
cargo build --locked -p hstack
cargo test --workspace --locked -- --test-threads 2
