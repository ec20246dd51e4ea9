#!/usr/bin/env bash
# Debian's zkCli.sh (ZooKeeper 3.8's Java client, unchanged) against hstack.
# usage: zkcli.sh HOST:PORT[,HOST:PORT…]
# One session runs the commands below from stdin; each expected line must
# appear in its output, in order. Prints "zkcli: all checks passed" or the
# first line it did not find, with the whole transcript.
set -euo pipefail
servers=$1
zkcli=${ZKCLI:-/usr/share/zookeeper/bin/zkCli.sh}
if [ ! -x "$zkcli" ]; then
  echo "zkcli: $zkcli not found (scripts/setup.sh installs Debian's zookeeper)" >&2
  exit 2
fi
out=$(mktemp)
trap 'rm -f "$out"' EXIT

# The member the session lands on serves all of it; `sync` first makes a
# member that just joined catch up.
commands=$(cat <<'EOF'
sync /
create /zkcli hello
get /zkcli
set /zkcli world
get -s /zkcli
create /zkcli/child c
create -s /zkcli/seq- s
create -e /zkcli/eph e
ls /zkcli
ls -s /zkcli
stat /zkcli
getAcl /zkcli
getEphemerals /zkcli
getAllChildrenNumber /zkcli
addWatch -m PERSISTENT /zkcli/child
set /zkcli/child c1
set /zkcli/child c2
whoami
addauth digest ops:secret
setAcl /zkcli/child auth::cdrwa
getAcl /zkcli/child
config
delete /zkcli/eph
delete /zkcli/nothere
create /zkcli hello
deleteall /zkcli
stat /zkcli
quit
EOF
)
printf '%s\n' "$commands" | timeout 60 "$zkcli" -server "$servers" >"$out" 2>&1 || true

expect=(
  "Created /zkcli"
  "hello"
  "world"
  "dataVersion = 1"
  "dataLength = 5"
  "Created /zkcli/child"
  "Created /zkcli/seq-0000000001"
  "Created /zkcli/eph"
  "[child, eph, seq-0000000001]"
  "numChildren = 3"
  "'world,'anyone"
  ": cdrwa"
  "[/zkcli/eph]"
  "3"
  "WatchedEvent state:SyncConnected type:NodeDataChanged path:/zkcli/child"
  "WatchedEvent state:SyncConnected type:NodeDataChanged path:/zkcli/child"
  "ip: 127.0.0.1"
  "'digest,'ops:"
  "server.1="
  "version="
  "Node does not exist: /zkcli/nothere"
  "Node already exists: /zkcli"
  "Node does not exist: /zkcli"
)
pos=1
for line in "${expect[@]}"; do
  # Search from the line after the previous match, so order counts.
  found=$(tail -n +"$pos" "$out" | grep -n -F -- "$line" | head -1 | cut -d: -f1 || true)
  if [ -z "$found" ]; then
    echo "zkcli: expected \"$line\" (after line $pos) in:" >&2
    cat "$out" >&2
    exit 1
  fi
  pos=$((pos + found))
done
if grep -q "ConnectionLoss\|SessionExpired" "$out"; then
  echo "zkcli: the session broke:" >&2
  cat "$out" >&2
  exit 1
fi
echo "zkcli: all checks passed"
