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
deploy/local/stack up >/dev/null  # idempotent: starts what is not running
set -a; . <(deploy/local/stack env); set +a
RUN=bench$(date +%s)
export PAYSTREAM_TOPIC_PREFIX=$RUN. PAYSTREAM_POSTGRES_SCHEMA=$RUN PAYSTREAM_REDIS_PREFIX=$RUN:
export PAYSTREAM_ADMIN_KEY=adm_${RUN}_local_bench_key PAYSTREAM_LOG_LEVEL=warn
DIR=$(mktemp -d /tmp/ps-bench-dist-XXXX)
PORT=${PORT:-18680}
SIM_PORT=${SIM_PORT:-18690}
pids=()
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true
  psql "$PAYSTREAM_POSTGRES_URL" -X -q -c "DROP SCHEMA IF EXISTS $RUN CASCADE" >/dev/null 2>&1 || true
  [ "${KEEP_DATA:-0}" = 1 ] || rm -rf "$DIR"
}
trap cleanup EXIT
$B migrate >/dev/null
$B topics create --partitions 3 --replication-factor 1 >/dev/null
$B acquirer-sim --listen 127.0.0.1:$SIM_PORT --data-dir "$DIR/sim" 2>"$DIR/sim.log" & pids+=($!)
W="--velocity-max-per-source 1000000000 --velocity-max-per-merchant 1000000000"
$B worker --stage fraud --metrics-listen 127.0.0.1:0 --instance-id $RUN-f $W 2>"$DIR/fraud.log" & pids+=($!)
$B worker --stage processor --metrics-listen 127.0.0.1:0 --instance-id $RUN-p \
  --acquirer-url http://127.0.0.1:$SIM_PORT 2>"$DIR/proc.log" & pids+=($!)
$B worker --stage ledger --metrics-listen 127.0.0.1:0 --instance-id $RUN-l 2>"$DIR/ledger.log" & pids+=($!)
$B worker --stage notifier --metrics-listen 127.0.0.1:0 --instance-id $RUN-n 2>"$DIR/notifier.log" & pids+=($!)
gws=()
for i in 1 2; do
  $B gateway --listen 127.0.0.1:$PORT --reuse-port 2>"$DIR/gw$i.log" & pids+=($!); gws+=($!)
done
for _ in $(seq 1 150); do curl -sf 127.0.0.1:$PORT/readyz >/dev/null && break; sleep 0.2; done
sleep 3  # consumer groups join
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
