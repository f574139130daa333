#!/usr/bin/env bash
# Recovery after kill -9 with a large store: the log engine replays only the tail past
# the projection, so the time from a restart to ready should not grow with the history.
#   bench/recovery.sh PAYMENTS RATE [OUT_DIR]
# 1. `paystream serve` (release build, fsync on, fresh data dir); `paystream bench` at RATE
#    for PAYMENTS/RATE seconds (reconciled) fills the store;
# 2. a second bench at RATE for 30 s; 10 s into it the server is killed with SIGKILL and
#    started again at once on the same data dir;
# 3. prints the time from the new process's start to /readyz 200, the engine's "engine log
#    recovered" line (records read from the log, records re-projected, its ms), the rows
#    in the store and the data dir size. The second bench reconciles what it had
#    acknowledged, after the restart.
# OUT_DIR gets fill.json, kill.json (the bench reports) and recovery.json.
# Traffic goes to 127.0.0.0/8 only; every loop is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
PAYMENTS=${1:?payments}; RATE=${2:?rate}; OUT=${3:-}
B=${PAYSTREAM_BIN:-build/release/paystream}
[ -x "$B" ] || { cmake --preset release >/dev/null && cmake --build --preset release --target paystream; }
DIR=$(mktemp -d /tmp/ps-bench-recovery-XXXX)
PORT=${PORT:-18590}
ADMIN=adm_$(date +%s)_local_bench_key
[ -n "$OUT" ] && mkdir -p "$OUT"
serve() {   # $1: log level (info on the restart: the "engine log recovered" line)
  PAYSTREAM_ADMIN_KEY=$ADMIN $B serve --listen 127.0.0.1:$PORT --data-dir "$DIR" --fsync on \
    --velocity-max-per-merchant 1000000000 --log-level "$1" 2>>"$DIR/server.log" &
  SRV=$!
}
ready_ms() {   # waits (at most 120 s) for /readyz; prints ms since $1 (ns)
  for _ in $(seq 1 12000); do
    if curl -sf 127.0.0.1:$PORT/readyz >/dev/null 2>&1; then
      echo $(( ($(date +%s%N) - $1) / 1000000 ))
      return 0
    fi
    sleep 0.01
  done
  echo "recovery: not ready after 120 s" >&2
  return 1
}
SRV=
trap '[ -n "$SRV" ] && kill $SRV 2>/dev/null; wait 2>/dev/null || true' EXIT
serve warn
ready_ms "$(date +%s%N)" >/dev/null
echo "recovery: serve pid $SRV on 127.0.0.1:$PORT, data dir $DIR" >&2

DURATION=$(( (PAYMENTS + RATE - 1) / RATE ))
fill=(--url "http://127.0.0.1:$PORT" --admin-key "$ADMIN" --rate "$RATE" --duration-s "$DURATION"
      --connections 500 --watch-pid "$SRV")
[ -n "$OUT" ] && fill+=(--out "$OUT/fill.json")
set +e
$B bench "${fill[@]}"   # 503s under overload make it exit 1; its reconciliation is what counts
fill_rc=$?
set -e

kill_run=(--url "http://127.0.0.1:$PORT" --admin-key "$ADMIN" --rate "$RATE" --duration-s 30 --connections 500)
[ -n "$OUT" ] && kill_run+=(--out "$OUT/kill.json")
$B bench "${kill_run[@]}" &
BENCH=$!
sleep 10
kill -9 "$SRV"
wait "$SRV" 2>/dev/null || true
t0=$(date +%s%N)
serve info
ms=$(ready_ms "$t0")
set +e
wait "$BENCH"
rc=$?
set -e
recovered=$(grep '"engine log recovered"' "$DIR/server.log" | tail -1)
payments=$(sqlite3 "file:$DIR/paystream.db?mode=ro" "SELECT count(*) FROM payments")
size=$(du -sm "$DIR" | cut -f1)
log_size=$(du -sm "$DIR/engine-log" | cut -f1)
echo "recovery: ready ${ms} ms after the restart; ${payments} payments stored; data dir ${size} MiB (log ${log_size} MiB)"
echo "recovery: $recovered"
if [ -n "$OUT" ]; then
  python3 - "$OUT/recovery.json" "$ms" "$payments" "$size" "$log_size" "$recovered" <<'EOF'
import json, sys
out, ms, payments, size, log_size, line = sys.argv[1:]
rec = json.loads(line) if line else {}
json.dump({"restart_to_ready_ms": int(ms), "payments_stored": int(payments), "data_dir_mib": int(size),
           "engine_log_mib": int(log_size), "engine_log_recovered": rec}, open(out, "w"), indent=2)
EOF
fi
echo "recovery: fill bench exit $fill_rc, second bench exit $rc" >&2
[ "${KEEP_DATA:-0}" = 1 ] || rm -rf "$DIR"
exit $rc
