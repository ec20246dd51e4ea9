#!/usr/bin/env bash
# A tour of hstack on a fresh machine: build, start a local cluster (a
# 3-member coordination ensemble, a namenode and 6 datanodes over two racks,
# a resource manager and a node manager beside each datanode, all on
# loopback), exercise it, kill nodes, stop it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --locked -p hstack
hs=target/debug/hstack
dir=${HSTACK_CLUSTER:-$PWD/local-cluster}
trap '$hs local down --dir "$dir" >/dev/null 2>&1 || true' EXIT
rm -rf "$dir"
$hs local up --dir "$dir"
export HSTACK_CLUSTER="$dir"
echo "--- members"
$hs zk members
echo "--- a few znodes"
$hs zk create /demo "hello from hstack"
$hs zk create -s /demo/job- "first"
$hs zk create -s /demo/job- "second"
$hs zk get -s /demo
$hs zk ls -R /
echo "--- a watch fires when another client changes the node"
$hs zk get -w /demo & watcher=$!
sleep 1
$hs zk set /demo "changed"
wait $watcher
echo "--- the leader dies; the ensemble elects another and keeps serving"
leader=$($hs zk members --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["leader"])')
pid=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print([x["pid"] for x in d["daemons"] if x["id"]==sys.argv[2]][0])' "$dir/cluster.json" "$leader")
kill -9 "$pid"
echo "killed leader $leader (pid $pid)"
# A write racing the election may be refused (retryable); try again, as a client would.
for attempt in 1 2 3 4 5 6 7 8 9 10; do
  if $hs zk set /demo "written after the leader died"; then break; fi
  echo "retrying ($attempt)"; sleep 0.5
done
$hs zk get /demo
$hs zk members
echo "--- the file system: directories, a multi-block file, replicas on two racks"
$hs dfs mkdir -p /user/demo
data=$(mktemp)
head -c $((3 * 1024 * 1024 + 12345)) /dev/urandom > "$data"
$hs dfs put --block-size 1048576 "$data" /user/demo/random.bin
$hs dfs ls -R /user
$hs dfs stat /user/demo/random.bin
$hs admin fsck /user --locations
echo "--- a datanode dies; reads go to another replica and the namenode copies its blocks elsewhere"
victim=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print([x["pid"] for x in d["daemons"] if x["id"]=="dn1"][0])' "$dir/cluster.json")
kill -9 "$victim"
$hs dfs get /user/demo/random.bin "$data.back"
cmp "$data" "$data.back" && echo "read back identical after dn1 was killed"
rm -f "$data" "$data.back"
$hs dfs setrep -w 2 /user/demo/random.bin
$hs admin report
echo "--- the scheduler: a distributed shell: 6 containers, each printing where it ran"
$hs node list
$hs app shell --containers 6 --memory 256m --command 'echo "hello from $CONTAINER_ID on $NM_HOST"'
app=$($hs app list --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
$hs app logs "$app" --file stdout
$hs queue list
echo "--- a short benchmark"
$hs bench coord --workload write --concurrency 16 --duration-secs 3 --warmup-secs 1
$hs local status
echo "demo finished: the cluster is stopped on exit"
