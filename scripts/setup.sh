#!/usr/bin/env bash
# Installs what building hstack needs beyond a Rust toolchain: a C++
# compiler and libclang (RocksDB and its bindgen bindings). protoc comes
# vendored through Cargo. The ZooKeeper compatibility tests need Debian's
# `zookeeper` package (zkCli.sh, and the peer for `hstack bench zk`) and the
# Python client kazoo from PyPI. Safe to run again: it installs only what is
# missing.
set -euo pipefail

need=()
command -v g++ >/dev/null 2>&1 || need+=(g++)
command -v make >/dev/null 2>&1 || need+=(make)
# bindgen loads libclang (libclang.so, not libclang-cpp) at build time
if command -v dpkg >/dev/null 2>&1; then
  dpkg -s libclang-dev >/dev/null 2>&1 || need+=(libclang-dev)
elif ! ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1; then
  need+=(libclang-dev)
fi
if command -v dpkg >/dev/null 2>&1; then
  dpkg -s zookeeper >/dev/null 2>&1 || need+=(zookeeper)
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install a Rust toolchain (rustup) first" >&2
  exit 1
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ! python3 -c 'import kazoo' >/dev/null 2>&1; then
  echo "setup: installing kazoo (pip)"
  python3 -m pip install --quiet --disable-pip-version-check kazoo 2>/dev/null ||
    python3 -m pip install --quiet --disable-pip-version-check --user --break-system-packages kazoo
fi
