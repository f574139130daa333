# Sourced by the distributed bench scripts (distributed.sh, stage_drain.sh, dist_local.sh):
# one run of the distributed shape on this machine against the local stack, isolated by a
# run name (topic prefix, PostgreSQL schema, Redis prefix), cleaned up on exit.
#   dist_setup NAME       stack up (idempotent), RUN=NAME<epoch>, exports, DIR, a trap that
#                         stops every role and drops the run's schema (KEEP_DATA=1 keeps DIR),
#                         migrate, topics, the acquirer simulator on $SIM_PORT
#   dist_worker STAGE LISTEN   one worker process (metrics on LISTEN)
#   dist_gateways PORT    two gateways sharing PORT (SO_REUSEPORT); waits for /readyz and
#                         for the consumer groups to join
# Uses $B (the binary) and appends every pid to the array `pids`.
dist_setup() {
  deploy/local/stack up >/dev/null
  set -a; . <(deploy/local/stack env); set +a
  RUN=$1$(date +%s)
  export PAYSTREAM_TOPIC_PREFIX=$RUN. PAYSTREAM_POSTGRES_SCHEMA=$RUN PAYSTREAM_REDIS_PREFIX=$RUN:
  export PAYSTREAM_ADMIN_KEY=adm_${RUN}_local_bench_key PAYSTREAM_LOG_LEVEL=warn
  DIR=$(mktemp -d "/tmp/ps-bench-$1-XXXX")
  pids=()
  trap dist_cleanup EXIT
  $B migrate >/dev/null
  $B topics create --partitions 3 --replication-factor 1 >/dev/null
  $B acquirer-sim --listen 127.0.0.1:$SIM_PORT --data-dir "$DIR/sim" 2>"$DIR/sim.log" & pids+=($!)
}

dist_cleanup() {
  kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true
  psql "$PAYSTREAM_POSTGRES_URL" -X -q -c "DROP SCHEMA IF EXISTS $RUN CASCADE" >/dev/null 2>&1 || true
  [ "${KEEP_DATA:-0}" = 1 ] || rm -rf "$DIR"
}

dist_worker() {
  local extra=(--velocity-max-per-source 1000000000 --velocity-max-per-merchant 1000000000)
  [ "$1" = processor ] && extra+=(--acquirer-url "http://127.0.0.1:$SIM_PORT")
  $B worker --stage "$1" --metrics-listen "$2" --instance-id "$RUN-$1" "${extra[@]}" 2>"$DIR/$1.log" & pids+=($!)
}

dist_gateways() {
  local i
  for i in 1 2; do $B gateway --listen 127.0.0.1:$1 --reuse-port 2>"$DIR/gw$i.log" & pids+=($!); done
  for _ in $(seq 1 150); do curl -sf 127.0.0.1:$1/readyz >/dev/null && break; sleep 0.2; done
  sleep 3  # consumer groups join
}
