#!/usr/bin/env bash
# Measures what ONE worker process of a stage settles per second (the per-pod rate that
# KEDA's lagThreshold is derived from, docs/KUBERNETES.md): starts the distributed shape
# against the local stack without that stage's worker, lets `paystream bench` build a
# backlog on the stage's topics, then starts exactly one worker of the stage and times how
# fast its consumer lag drains to 0 (from its own /metrics). The bench run then reconciles.
#   bench/stage_drain.sh STAGE RATE DURATION_S [OUT.json]
# STAGE: fraud | processor | ledger | notifier. Example (docs/BENCHMARKS.md):
#   bench/stage_drain.sh processor 400 30 docs/bench/results/drain-processor.json
# Traffic goes to 127.0.0.0/8 only.
set -euo pipefail
cd "$(dirname "$0")/.."
STAGE=${1:?stage}; RATE=${2:?rate}; DURATION=${3:?duration}; OUT=${4:-}
case $STAGE in fraud|processor|ledger|notifier) ;; *) echo "stage: fraud|processor|ledger|notifier" >&2; exit 2;; esac
B=${PAYSTREAM_BIN:-build/release/paystream}
[ -x "$B" ] || { cmake --preset release >/dev/null && cmake --build --preset release --target paystream; }
PORT=${PORT:-18780}; SIM_PORT=${SIM_PORT:-18790}; METRICS_PORT=${METRICS_PORT:-18791}
. bench/dist_roles.sh
dist_setup drain
for s in fraud processor ledger notifier; do [ "$s" = "$STAGE" ] || dist_worker "$s" 127.0.0.1:0; done
dist_gateways "$PORT"
echo "drain: run $RUN, building a backlog for $STAGE: $RATE/s for $DURATION s" >&2
args=(--url "http://127.0.0.1:$PORT" --admin-key "$PAYSTREAM_ADMIN_KEY" --rate "$RATE" --duration-s "$DURATION"
      --connections 200 --settle-timeout-s 900)
[ -n "$OUT" ] && args+=(--out "$OUT")
$B bench "${args[@]}" >"$DIR/bench.out" 2>"$DIR/bench.err" & bench_pid=$!
sleep "$DURATION"; sleep 5  # the send phase is over; upstream stages finish their part
dist_worker "$STAGE" 127.0.0.1:$METRICS_PORT
metric() {  # metric() NAME [LABEL_MATCH]: sum of its samples on the stage worker (0 if none yet)
  curl -sf "127.0.0.1:$METRICS_PORT/metrics" 2>/dev/null |
    awk -v m="$1" -v l="${2:-}" 'index($0, m) == 1 && (substr($0, length(m) + 1, 1) == "{" || substr($0, length(m) + 1, 1) == " ") && index($0, l) { s += $NF } END { printf "%.0f\n", s + 0 }'
}
for _ in $(seq 1 300); do curl -sf 127.0.0.1:$METRICS_PORT/readyz >/dev/null && break; sleep 0.1; done
# The drain: from the first record seen processed to the last one, ended once the lag is
# 0 and nothing was processed for 2 s (polled every 0.2 s; a stage whose group reports no
# lag, the notifier's, ends on the second condition alone).
first=""; n_first=0; peak_lag=0; n_prev=-1; last=""; n_last=0
while :; do
  now=$(date +%s.%N); n=$(metric paystream_stage_processed_total 'outcome="ok"'); lag=$(metric paystream_kafka_consumer_lag)
  (( lag > peak_lag )) && peak_lag=$lag
  if [ -z "$first" ] && (( n > 0 )); then first=$now; n_first=$n; fi
  if (( n != n_prev )); then last=$now; n_last=$n; n_prev=$n; fi
  if [ -n "$first" ] && (( lag == 0 )) && awk -v a="$last" -v b="$now" 'BEGIN { exit !(b - a >= 2) }'; then break; fi
  sleep 0.2
done
set +e; wait "$bench_pid"; rc=$?; set -e
rate=$(awk -v a="$n_first" -v b="$n_last" -v t0="$first" -v t1="$last" 'BEGIN { printf "%.0f", (t1 > t0 ? (b - a) / (t1 - t0) : 0) }')
summary=$(printf '{"stage":"%s","offered_per_s":%s,"duration_s":%s,"peak_lag_seen":%s,"records_drained":%s,"drain_s":%.2f,"records_per_s_one_worker":%s,"bench_exit":%s}' \
  "$STAGE" "$RATE" "$DURATION" "$peak_lag" "$((n_last - n_first))" "$(awk -v t0="$first" -v t1="$last" 'BEGIN{print t1-t0}')" "$rate" "$rc")
echo "$summary"
[ -n "$OUT" ] && echo "$summary" >"${OUT%.json}.drain.json"
tail -3 "$DIR/bench.err" >&2
exit $rc
