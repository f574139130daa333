#!/usr/bin/env bash
# Runs every benchmark scenario of docs/BENCHMARKS.md and writes the raw JSON reports to
# docs/bench/results/ (and the console output beside them as .log). About 10 minutes.
#   bench/run_all.sh [embedded|distributed|wrk|all]
# Needs a release build (built if missing); the distributed scenarios start the local
# stack (deploy/local/stack up) if it is not running. Every scenario is bounded in time.
set -uo pipefail
cd "$(dirname "$0")/.."
WHAT=${1:-all}
R=docs/bench/results
mkdir -p "$R"
run() {  # name script args...
  local name=$1; shift
  echo "=== $name: $*" >&2
  "$@" >"$R/$name.log" 2>&1
  echo "    exit $? -> $R/$name.json" >&2
  grep -E "rate  |latency|errors|reconcile|e2e  |RSS|result" "$R/$name.log" | sed 's/^/    /' >&2
}
if [ "$WHAT" = all ] || [ "$WHAT" = embedded ]; then
  # Sustained end to end for 60 s at the highest rate the pipeline keeps up with here.
  run embedded-sustained-3000 bench/embedded.sh 3000 60 2000 "$R/embedded-sustained-3000.json" -- --seed 1
  # The target scenario: 19,000 connections, 15,000 payments/s offered.
  run embedded-19k-conns-15000 bench/embedded.sh 15000 30 19000 "$R/embedded-19k-conns-15000.json" -- --seed 2
  # 19,000 connections at a rate the machine sustains.
  run embedded-19k-conns-2000 bench/embedded.sh 2000 30 19000 "$R/embedded-19k-conns-2000.json" -- --seed 3
fi
if [ "$WHAT" = all ] || [ "$WHAT" = distributed ]; then
  run distributed-sustained-500 bench/distributed.sh 500 60 1000 "$R/distributed-sustained-500.json" -- --seed 4
  # The target scenario: 20,000 connections, 4,000 payments/s offered.
  run distributed-20k-conns-4000 bench/distributed.sh 4000 30 20000 "$R/distributed-20k-conns-4000.json" -- --seed 5
  run distributed-20k-conns-400 bench/distributed.sh 400 30 20000 "$R/distributed-20k-conns-400.json" -- --seed 6
fi
if [ "$WHAT" = all ] || [ "$WHAT" = wrk ]; then
  # Cross-check of the embedded achieved rate with wrk (closed loop, 256 connections).
  B=${PAYSTREAM_BIN:-build/release/paystream}
  D=$(mktemp -d /tmp/ps-bench-wrk-XXXX)
  PAYSTREAM_ADMIN_KEY=adm_wrk_local_bench_key_0000 $B serve --listen 127.0.0.1:18590 --data-dir "$D" --fsync on \
    --velocity-max-per-source 1000000000 --velocity-max-per-merchant 1000000000 --log-level warn 2>"$D/server.log" &
  SRV=$!
  for _ in $(seq 1 100); do curl -sf 127.0.0.1:18590/readyz >/dev/null && break; sleep 0.1; done
  echo "=== embedded-wrk: bench/wrk_cross_check.sh http://127.0.0.1:18590 adm_wrk_local_bench_key_0000 30 256" >&2
  bench/wrk_cross_check.sh http://127.0.0.1:18590 adm_wrk_local_bench_key_0000 30 256 >"$R/embedded-wrk.log" 2>&1
  sleep 10
  echo "after the run: $(sqlite3 "$D/paystream.db" "SELECT status || ' ' || count(*) FROM payments GROUP BY status" | tr '\n' ' ')" >>"$R/embedded-wrk.log"
  kill $SRV; wait $SRV 2>/dev/null
  rm -rf "$D"
  sed 's/^/    /' "$R/embedded-wrk.log" | grep -E "Requests/sec|99%|50%|status|after" >&2
fi
