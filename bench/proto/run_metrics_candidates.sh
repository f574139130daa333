#!/usr/bin/env bash
# Builds bench/proto/metrics_candidates.cpp against the release build's core library and
# prometheus-cpp (Debian's prometheus-cpp-dev, installed here if missing; the product does
# not link it) and writes Google Benchmark's JSON (docs/DECISIONS.md, "Metrics library").
# Usage: bench/proto/run_metrics_candidates.sh [OUT_JSON]  (default docs/bench/results/proto-metrics.json)
set -euo pipefail
cd "$(dirname "$0")/../.."
out_json=${1:-docs/bench/results/proto-metrics.json}
dpkg-query -W -f='${Status}' prometheus-cpp-dev 2>/dev/null | grep -q "install ok installed" \
  || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus-cpp-dev; }
cmake --preset release >/dev/null
cmake --build --preset release --target ps_core >/dev/null
bin=build/release/metrics_candidates
g++ -std=c++20 -O2 -g -Isrc -DSPDLOG_FMT_EXTERNAL bench/proto/metrics_candidates.cpp -o "$bin" \
  build/release/libps_core.a -lprometheus-cpp-core -lbenchmark -lspdlog -lfmt -lboost_json -lcrypto -lpthread
"$bin" --benchmark_repetitions=3 --benchmark_report_aggregates_only=true \
  --benchmark_out="$out_json" --benchmark_out_format=json
