#!/usr/bin/env bash
# hstack beside ZooKeeper through ZooKeeper's protocol, one load generator
# (`hstack bench zk`, a lean jute client of ours) for both, in one run:
#   1. ZooKeeper 3.8 (Debian's package): 3 JVMs on loopback, forceSync on,
#      warmed up, then the matrix (write, read, create-delete at 1, 16 and
#      64 outstanding over up to 16 sessions);
#   2. its JVMs stopped, hstack: 3 coordination members (release build,
#      one runtime thread each, as `hstack local up` runs them), the same
#      matrix on their ZooKeeper ports, then on their gRPC ports
#      (`hstack bench coord`) for the protocol's own cost.
# Repeated RUNS times; prints every run and the medians as Markdown.
#   scripts/bench-zk.sh [DURATION_SECS] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
runs=${2:-3}
if [ -n "${HSTACK_BIN:-}" ]; then
  hs=$HSTACK_BIN
else
  scripts/setup.sh
  cargo build --release --locked -p hstack
  hs=$PWD/target/release/hstack
fi
[ -f /usr/share/java/zookeeper.jar ] || { echo "bench-zk: Debian's zookeeper is missing (scripts/setup.sh)" >&2; exit 2; }
if pgrep -f 'hstack (coord|namenode|datanode|resourcemanager|nodemanager)' >/dev/null ||
   pgrep -f QuorumPeerMain >/dev/null; then
  echo "bench-zk: other clusters are running; stop them first (a fair run has the machine to itself)" >&2
  exit 2
fi
dir=$(mktemp -d /tmp/hstack-bench-zk-XXXXXX)
pids=()
stop_all() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}
trap 'stop_all; rm -rf "$dir"' EXIT
results="$dir/results.jsonl"

matrix() { # SYSTEM BENCH-VERB ENDPOINT-FLAG ADDRS RUN
  for workload in write read create-delete; do
    for c in 1 16 64; do
      out=$($hs bench "$2" "$3" "$4" --workload "$workload" --concurrency "$c" --sessions 16 \
            --warmup-secs 2 --duration-secs "$secs" --json 2>/dev/null)
      # --json is pretty-printed: one compact line per result for the summary.
      python3 -c 'import json,sys; print(json.dumps({"system": sys.argv[1], "run": int(sys.argv[2]), "r": json.loads(sys.argv[3])}))' \
        "$1" "$5" "$out" >>"$results"
      python3 - "$out" "$1" >&2 <<'PY'
import json, sys
r = json.loads(sys.argv[1])
print(f"  {sys.argv[2]:<12} {r['workload']:<13} {r['concurrency']:>3}: {r['ops_per_sec']:>9,.0f} ops/s"
      f"  p50 {r['p50_us']/1000:.2f} ms  p99 {r['p99_us']/1000:.2f} ms  errors {r['errors']}")
PY
    done
  done
}

start_zookeeper() {
  local zk="$dir/zk"
  rm -rf "$zk"
  for i in 1 2 3; do
    mkdir -p "$zk/$i/data"
    echo "$i" >"$zk/$i/data/myid"
    cat >"$zk/$i/zoo.cfg" <<EOF
tickTime=2000
initLimit=10
syncLimit=5
dataDir=$zk/$i/data
clientPort=1218$i
clientPortAddress=127.0.0.1
maxClientCnxns=0
forceSync=yes
4lw.commands.whitelist=ruok,srvr,mntr
admin.enableServer=false
server.1=127.0.0.1:12881:13881
server.2=127.0.0.1:12882:13882
server.3=127.0.0.1:12883:13883
EOF
    java -Xmx1g -cp "/etc/zookeeper/conf:/usr/share/java/zookeeper.jar" \
      -Dzookeeper.root.logger=WARN,CONSOLE -Dzookeeper.console.threshold=WARN \
      org.apache.zookeeper.server.quorum.QuorumPeerMain "$zk/$i/zoo.cfg" >"$zk/$i.log" 2>&1 &
    pids+=($!)
  done
  for _ in $(seq 1 120); do
    modes=$(for i in 1 2 3; do python3 - "1218$i" <<'PY' 2>/dev/null || true
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1)
s.sendall(b"srvr")
print(s.recv(4096).decode())
PY
    done | grep -c "Mode: \(leader\|follower\)" || true)
    [ "$modes" = 3 ] && return 0
    sleep 0.5
  done
  echo "bench-zk: ZooKeeper did not form a quorum; logs in $zk" >&2
  exit 1
}

start_hstack() {
  local hd="$dir/hstack"
  rm -rf "$hd"
  mkdir -p "$hd"
  local im="1=127.0.0.1:12891:12291:18091,2=127.0.0.1:12892:12292:18092,3=127.0.0.1:12893:12293:18093"
  for i in 1 2 3; do
    $hs coord --id "$i" --data-dir "$hd/c$i" --client-addr "127.0.0.1:1229$i" --zk-addr "127.0.0.1:1228$i" \
      --raft-addr "127.0.0.1:1289$i" --http-addr "127.0.0.1:1809$i" --initial-members "$im" \
      --worker-threads 1 >"$hd/c$i.log" 2>&1 &
    pids+=($!)
  done
  for _ in $(seq 1 120); do
    if $hs zk --members 127.0.0.1:12291 members --json 2>/dev/null | python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)["leader"] else 1)' 2>/dev/null; then
      return 0
    fi
    sleep 0.5
  done
  echo "bench-zk: hstack did not elect a leader; logs in $hd" >&2
  exit 1
}

for run in $(seq 1 "$runs"); do
  echo "run $run/$runs: ZooKeeper" >&2
  start_zookeeper
  # The JVMs warm up (JIT) before anything is measured.
  $hs bench zk --servers 127.0.0.1:12181,127.0.0.1:12182,127.0.0.1:12183 --workload write \
    --concurrency 16 --warmup-secs 0 --duration-secs 20 --json >/dev/null 2>&1
  matrix zookeeper zk --servers 127.0.0.1:12181,127.0.0.1:12182,127.0.0.1:12183 "$run"
  stop_all
  echo "run $run/$runs: hstack" >&2
  start_hstack
  matrix hstack-zk zk --servers 127.0.0.1:12281,127.0.0.1:12282,127.0.0.1:12283 "$run"
  matrix hstack-grpc coord --members 127.0.0.1:12291,127.0.0.1:12292,127.0.0.1:12293 "$run"
  stop_all
done

python3 - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def cell(system, w, c):
    rs = [x["r"] for x in rows if x["system"] == system and x["r"]["workload"] == w and x["r"]["concurrency"] == c]
    ops = sorted(r["ops_per_sec"] for r in rs)
    p99 = statistics.median(r["p99_us"] for r in rs) / 1000
    return statistics.median(ops), ops[0], ops[-1], p99
print("| workload | outstanding | ZooKeeper ops/s (range; p99) | hstack via ZK protocol | hstack via gRPC | hstack-zk / ZooKeeper | hstack-zk / gRPC |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for w in ["write", "read", "create-delete"]:
    for c in [1, 16, 64]:
        z, h, g = cell("zookeeper", w, c), cell("hstack-zk", w, c), cell("hstack-grpc", w, c)
        f = lambda x: f"{x[0]:,.0f} ({x[1]:,.0f}–{x[2]:,.0f}; {x[3]:.2f} ms)"
        print(f"| {w} | {c} | {f(z)} | {f(h)} | {f(g)} | {h[0]/z[0]:.2f}× | {h[0]/g[0]:.2f} |")
PY
