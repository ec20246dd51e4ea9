#!/usr/bin/env bash
# hstack's main job, on a fresh machine: build hstack, start a local cluster
# (3 coordination members, a namenode, 6 datanodes and 6 node managers in two
# racks, a resource manager; all on loopback), write a sample corpus of
# Zipf-distributed words into the file system (128 MiB; SIZE=1g for more),
# count its words with MapReduce, and print the top words, the job's counters
# (locality included), its time and where the status pages are. The cluster
# stops at the end unless KEEP=1. HSTACK_PROFILE=release builds optimized
# (slower to build, several times faster to run).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
profile=${HSTACK_PROFILE:-debug}
if [ "$profile" = release ]; then
  cargo build --locked --release -p hstack
else
  cargo build --locked -p hstack
fi
hs=$PWD/target/$profile/hstack
dir=${HSTACK_CLUSTER:-$PWD/local-cluster}
size=${SIZE:-128m}
if [ "${KEEP:-0}" != 1 ]; then
  trap '$hs local down --dir "$dir" >/dev/null 2>&1 || true' EXIT
fi
$hs local down --dir "$dir" >/dev/null 2>&1 || true
rm -rf "$dir"
$hs local up --dir "$dir"
export HSTACK_CLUSTER="$dir"
echo
echo "--- a sample corpus: $size of Zipf-distributed words, written by a map-only job"
tmp=$(mktemp -d)
$hs mr run randomtext --quiet --size "$size" /user/demo/corpus > "$tmp/gen.txt"
head -1 "$tmp/gen.txt"
$hs dfs du -s -h /user/demo/corpus
echo
echo "--- wordcount over it: maps where the blocks are, a combiner, 2 reduces"
# (at most one map per CPU at once: on one machine more only share the caches)
$hs mr run wordcount --reduces 2 -D "mapreduce.job.running.map.limit=$(nproc)" \
  /user/demo/corpus /user/demo/wordcount
echo
echo "--- the 15 most frequent words"
$hs dfs cat '/user/demo/wordcount/part-*' | sort -t "$(printf '\t')" -k2,2nr > "$tmp/counts.txt"
head -15 "$tmp/counts.txt"
echo "($(wc -l < "$tmp/counts.txt") distinct words)"
rm -rf "$tmp"
echo
echo "--- status pages"
python3 - "$dir/cluster.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))["daemons"]
for role, name in [("namenode", "namenode"), ("resourcemanager", "resource manager")]:
    for x in d:
        if x["role"] == role:
            print(f"{name:18} http://{x['addrs']['http']}/")
nms = [x["addrs"]["http"] for x in d if x["role"] == "nodemanager"]
print(f"{'node managers':18} " + "  ".join(f"http://{a}/" for a in nms))
PY
echo "(every daemon also serves /metrics, /healthz and /readyz there)"
if [ "${KEEP:-0}" = 1 ]; then
  echo "the cluster keeps running: export HSTACK_CLUSTER=$dir; $hs local down when done"
fi
