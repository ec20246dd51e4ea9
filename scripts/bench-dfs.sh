#!/usr/bin/env bash
# The file system benchmarks of docs/benchmarks.md, beside `dd` in the same
# run: a local cluster (release build; a namenode and 6 datanodes on
# loopback), then
#   dd write (1 GiB, fdatasync) and cold dd read of the same disk,
#   hstack bench dfs write (1 GiB, replication 3, 128 MiB blocks),
#   hstack bench dfs read, cold (page cache dropped: needs root) and warm,
#     each through the transfer ports (tcp) and from the replicas' files
#     (local: short-circuit reads), beside a cold dd read in the same run,
#   hstack bench namenode create|open|mkdir|delete (64 outstanding),
#   hstack bench namenode-memory (1,000,000 one-block files).
#   scripts/bench-dfs.sh [OPS]
set -euo pipefail
cd "$(dirname "$0")/.."
ops=${1:-50000}
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
echo "--- dd on the cluster's disk"
dd if=/dev/zero of="$dir/dd.test" bs=1M count=1024 conv=fdatasync 2>&1 | tail -1
sync; echo 3 > /proc/sys/vm/drop_caches || echo "(cannot drop caches: not root; the read below is warm)"
dd if="$dir/dd.test" of=/dev/null bs=1M 2>&1 | tail -1
rm -f "$dir/dd.test"
echo "--- hstack bench dfs"
$hs bench dfs write --cluster "$dir" --size 1g --replication 3 --block-size 128m
# Cold, each path after its own drop of the page cache, with dd's cold
# read of the same disk again in between for the comparison.
dd if=/dev/zero of="$dir/dd.test" bs=1M count=1024 conv=fdatasync status=none
sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
echo "dd cold read: $(dd if="$dir/dd.test" of=/dev/null bs=1M 2>&1 | tail -1)"
rm -f "$dir/dd.test"
$hs bench dfs read --cluster "$dir" --size 1g --path both --drop-caches || true
# Warm: the local read above left its replicas in the page cache.
$hs bench dfs read --cluster "$dir" --size 1g --path both
echo "--- hstack bench namenode ($ops ops each, 64 outstanding)"
for op in create open mkdir delete; do
  $hs bench namenode "$op" --cluster "$dir" --ops "$ops" --concurrency 64
done
echo "--- namenode memory"
$hs bench namenode-memory --files 1000000
