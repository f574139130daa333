#!/usr/bin/env bash
# Starts the distributed shape on this machine against the local stack and drives it with
# wrk (closed loop): two gateways sharing one port (SO_REUSEPORT), one process per worker
# stage, the acquirer simulator; then reconciles through PostgreSQL.
#   bench/dist_local.sh [DURATION_S] [CONNECTIONS]
# Needs: a release build (cmake --preset release && cmake --build --preset release),
# the local stack (started if needed), wrk (apt-get install wrk). Traffic goes to 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-20}
CONNS=${2:-64}
B=${PAYSTREAM_BIN:-build/release/paystream}
PORT=${PORT:-18480}
SIM_PORT=${SIM_PORT:-18490}
. bench/dist_roles.sh
dist_setup bench
for s in fraud processor ledger notifier; do dist_worker "$s" 127.0.0.1:0; done
dist_gateways "$PORT"
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
