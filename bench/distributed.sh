#!/usr/bin/env bash
# Starts the distributed shape on this machine against the local stack (Kafka, PostgreSQL,
# Redis from deploy/local/stack, started if needed): the acquirer simulator, one worker
# process per stage, two gateways sharing one port (SO_REUSEPORT, so 20,000 connections
# fit under the 20,000 open-files limit per process); drives it with `paystream bench`
# (open loop, reconciliation on); stops the roles and drops the run's schema and topics.
#   bench/distributed.sh RATE DURATION_S CONNECTIONS [OUT.json] [-- more bench flags]
# Examples (docs/BENCHMARKS.md):
#   bench/distributed.sh 500 60 1000 docs/bench/results/distributed-throughput.json
#   bench/distributed.sh 4000 30 20000 docs/bench/results/distributed-20k-connections.json
# Traffic goes to 127.0.0.0/8 only.
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${1:?rate}; DURATION=${2:?duration}; CONNS=${3:?connections}; OUT=${4:-}
shift $(( $# < 4 ? $# : 4 ))
[ "${1:-}" = "--" ] && shift
B=${PAYSTREAM_BIN:-build/release/paystream}
[ -x "$B" ] || { cmake --preset release >/dev/null && cmake --build --preset release --target paystream; }
PORT=${PORT:-18680}
SIM_PORT=${SIM_PORT:-18690}
. bench/dist_roles.sh
dist_setup bench
for s in fraud processor ledger notifier; do dist_worker "$s" 127.0.0.1:0; done
n_workers=${#pids[@]}
dist_gateways "$PORT"
gws=("${pids[@]:$n_workers}")
echo "distributed: run $RUN, gateways ${gws[*]} on 127.0.0.1:$PORT, logs in $DIR" >&2
args=(--url "http://127.0.0.1:$PORT" --admin-key "$PAYSTREAM_ADMIN_KEY" --rate "$RATE" --duration-s "$DURATION"
      --connections "$CONNS")
for p in "${pids[@]}"; do args+=(--watch-pid "$p"); done
[ -n "$OUT" ] && args+=(--out "$OUT")
set +e
$B bench "${args[@]}" "$@"
rc=$?
set -e
echo "distributed: bench exit $rc" >&2
exit $rc
