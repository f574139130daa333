#!/usr/bin/env bash
# Builds bench/proto/log_candidates.cpp against the release build's libraries and runs
# every acknowledgement-path candidate side by side (docs/DECISIONS.md). Needs
# librocksdb-dev (only this prototype does; the product does not link RocksDB).
# Usage: bench/proto/run_log_candidates.sh [THREADS] [SECONDS] [DIR]   (default 64 5 build/proto-data)
set -euo pipefail
cd "$(dirname "$0")/../.."
threads=${1:-64}; seconds=${2:-5}; dir=${3:-$PWD/build/proto-data}
dpkg-query -W -f='${Status}' librocksdb-dev 2>/dev/null | grep -q "install ok installed" \
  || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends librocksdb-dev; }
cmake --build --preset release --target ps_adapter_log >/dev/null
out=build/release/log_candidates
g++ -std=c++20 -O2 -g -Isrc -DSPDLOG_FMT_EXTERNAL bench/proto/log_candidates.cpp -o "$out" \
  build/release/libps_adapter_log.a build/release/libps_core.a \
  -lrocksdb -lsqlite3 -lspdlog -lfmt -lboost_json -lcrypto -lpthread
for c in segment sqlite rocksdb; do "$out" "$c" "$dir" "$threads" "$seconds"; done
"$out" project "$dir" 1 "$seconds"
"$out" project-lean "$dir" 1 "$seconds"
"$out" project-rocks "$dir" 1 "$seconds"
