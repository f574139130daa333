#!/usr/bin/env bash
# Starts the embedded shape (`paystream serve`, release build, fsync on, fresh data dir)
# and drives it with `paystream bench` (open loop, reconciliation on), then stops it.
#   bench/embedded.sh RATE DURATION_S CONNECTIONS [OUT.json] [-- more bench flags]
# Examples (docs/BENCHMARKS.md):
#   bench/embedded.sh 200 5 50                          # a few seconds, a smoke run
#   bench/embedded.sh 6000 60 2000 docs/bench/results/embedded-throughput.json
#   bench/embedded.sh 15000 60 19000 docs/bench/results/embedded-19k-connections.json
# Server flags can be added with SERVE_FLAGS="...". Traffic goes to 127.0.0.0/8 only.
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${1:?rate}; DURATION=${2:?duration}; CONNS=${3:?connections}; OUT=${4:-}
shift $(( $# < 4 ? $# : 4 ))
[ "${1:-}" = "--" ] && shift
B=${PAYSTREAM_BIN:-build/release/paystream}
[ -x "$B" ] || { cmake --preset release >/dev/null && cmake --build --preset release --target paystream; }
DIR=$(mktemp -d /tmp/ps-bench-emb-XXXX)
PORT=${PORT:-18580}
ADMIN=adm_$(date +%s)_local_bench_key
# The server holds CONNS connections: its limit must allow them (the per-process
# open-files limit here is 20,000).
PAYSTREAM_ADMIN_KEY=$ADMIN $B serve --listen 127.0.0.1:$PORT --data-dir "$DIR" --fsync ${FSYNC:-on} \
  --velocity-max-per-merchant 1000000000 --log-level warn \
  ${SERVE_FLAGS:-} 2>"$DIR/server.log" &
SRV=$!
trap 'kill $SRV 2>/dev/null || true; wait $SRV 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -sf 127.0.0.1:$PORT/readyz >/dev/null && break; sleep 0.1; done
echo "embedded: serve pid $SRV on 127.0.0.1:$PORT, data dir $DIR" >&2
args=(--url "http://127.0.0.1:$PORT" --admin-key "$ADMIN" --rate "$RATE" --duration-s "$DURATION"
      --connections "$CONNS" --watch-pid "$SRV")
[ -n "$OUT" ] && args+=(--out "$OUT")
set +e
$B bench "${args[@]}" "$@"
rc=$?
set -e
echo "embedded: data dir size $(du -sh "$DIR" | cut -f1); bench exit $rc" >&2
[ "${KEEP_DATA:-0}" = 1 ] || rm -rf "$DIR"
exit $rc
