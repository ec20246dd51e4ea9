#!/usr/bin/env bash
# The coordination benchmark matrix of docs/benchmarks.md: a 3-member
# ensemble on loopback (release build), `hstack bench coord` for each
# workload at 1, 16 and 64 outstanding requests (16 sessions at most),
# 2 s warm-up + 10 s measured. Prints a Markdown table.
#   scripts/bench-coord.sh [DURATION_SECS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
# HSTACK_BIN=PATH measures that binary instead of building this checkout
# (paired before/after runs: docs/benchmarks.md).
if [ -n "${HSTACK_BIN:-}" ]; then
  hs=$HSTACK_BIN
else
  scripts/setup.sh
  cargo build --release --locked -p hstack
  hs=$PWD/target/release/hstack
fi
dir=$(mktemp -d /tmp/hstack-bench-XXXXXX)
trap '$hs local down --dir "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
$hs local up --dir "$dir" >/dev/null
echo "| workload | outstanding | sessions | ops/s | p50 | p99 | errors |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
for workload in write read create-delete; do
  for c in 1 16 64; do
    out=$($hs bench coord --cluster "$dir" --workload "$workload" --concurrency "$c" --sessions 16 \
          --warmup-secs 2 --duration-secs "$secs" --json 2>/dev/null)
    python3 - "$out" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
print(f"| {r['workload']} | {r['concurrency']} | {r['sessions']} | {r['ops_per_sec']:,.0f} | "
      f"{r['p50_us']/1000:.2f} ms | {r['p99_us']/1000:.2f} ms | {r['errors']} |")
PY
  done
done
