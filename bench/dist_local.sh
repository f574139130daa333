#!/usr/bin/env bash
# Starts the distributed shape on this machine against the local stack and drives it with
# wrk (closed loop): two gateways sharing one port (SO_REUSEPORT), one process per worker
# stage, the acquirer simulator; then reconciles through PostgreSQL.
#   bench/dist_local.sh [DURATION_S] [CONNECTIONS]
# Needs: a release build (cmake --preset release && cmake --build --preset release),
# `deploy/local/stack up` running, wrk (apt-get install wrk). Traffic goes to 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-20}
CONNS=${2:-64}
B=${PAYSTREAM_BIN:-build/release/paystream}
set -a; . <(deploy/local/stack env); set +a
RUN=bench$(date +%s)
export PAYSTREAM_TOPIC_PREFIX=$RUN. PAYSTREAM_POSTGRES_SCHEMA=$RUN PAYSTREAM_REDIS_PREFIX=$RUN:
export PAYSTREAM_ADMIN_KEY=adm_${RUN}_local_bench_key PAYSTREAM_LOG_LEVEL=warn
DIR=$(mktemp -d /tmp/ps-bench-XXXX)
PORT=${PORT:-18480}
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT
$B migrate >/dev/null
$B topics create --partitions 3 --replication-factor 1 >/dev/null
$B acquirer-sim --listen 127.0.0.1:18490 --data-dir "$DIR/sim" 2>"$DIR/sim.log" & pids+=($!)
W="--velocity-max-per-source 1000000000 --velocity-max-per-merchant 1000000000"
$B worker --stage fraud --metrics-listen 127.0.0.1:0 --instance-id $RUN-f $W 2>"$DIR/fraud.log" & pids+=($!)
$B worker --stage processor --metrics-listen 127.0.0.1:0 --instance-id $RUN-p --acquirer-url http://127.0.0.1:18490 2>"$DIR/proc.log" & pids+=($!)
$B worker --stage ledger --metrics-listen 127.0.0.1:0 --instance-id $RUN-l 2>"$DIR/ledger.log" & pids+=($!)
$B worker --stage notifier --metrics-listen 127.0.0.1:0 --instance-id $RUN-n 2>"$DIR/notifier.log" & pids+=($!)
for i in 1 2; do
  $B gateway --listen 127.0.0.1:$PORT --reuse-port 2>"$DIR/gw$i.log" & pids+=($!)
done
for _ in $(seq 1 100); do curl -sf 127.0.0.1:$PORT/readyz >/dev/null && break; sleep 0.2; done
sleep 3  # consumer groups join
KEY=$(curl -sf -X POST 127.0.0.1:$PORT/v1/merchants -H "Authorization: Bearer $PAYSTREAM_ADMIN_KEY" \
  -H 'Content-Type: application/json' \
  -d '{"name":"bench","rate_limit":{"per_second":1000000,"burst":1000000}}' | python3 -c 'import json,sys;print(json.load(sys.stdin)["api_key"])')
API_KEY=$KEY wrk -t2 -c"$CONNS" -d"${DURATION}s" --latency -s bench/wrk_payments.lua "http://127.0.0.1:$PORT"
echo "--- reconciliation (waits until nothing is processing, at most 120 s)"
q() { psql "$PAYSTREAM_POSTGRES_URL" -X -q -A -t -c "SET search_path TO $RUN; $1"; }
T0=$(date +%s)
for _ in $(seq 1 240); do
  [ "$(q "SELECT count(*) FROM payments WHERE status = 'processing'")" = 0 ] && break; sleep 0.5
done
echo "drained $(( $(date +%s) - T0 )) s after wrk ended"
q "SELECT 'payments ' || count(*) || ', succeeded ' || count(*) FILTER (WHERE status='succeeded') || ', failed ' || count(*) FILTER (WHERE status='failed') || ', processing ' || count(*) FILTER (WHERE status='processing') || ', first→last settled ' || round((max(updated_ms) - min(created_ms)) / 1000.0, 1) || ' s' FROM payments"
q "SELECT 'settlements ' || count(*) || ', distinct payments ' || count(DISTINCT payment_id) FROM journal_entries WHERE kind = 'settlement'"
q "SELECT 'unbalanced entries ' || count(*) FROM (SELECT entry_id FROM postings GROUP BY entry_id, currency HAVING sum(amount_minor) <> 0) u"
q "SELECT 'end-to-end accepted→terminal p50 ' || percentile_cont(0.5) WITHIN GROUP (ORDER BY updated_ms - created_ms) || ' ms, p99 ' || percentile_cont(0.99) WITHIN GROUP (ORDER BY updated_ms - created_ms) || ' ms' FROM payments"
sqlite3 "$DIR/sim/acquirer-sim.db" "SELECT 'acquirer charges ' || count(*) || ', calls ' || sum(calls) FROM charges"
q "DROP SCHEMA $RUN CASCADE" >/dev/null
