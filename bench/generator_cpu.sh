#!/usr/bin/env bash
# The load generator's own CPU per request (docs/BENCHMARKS.md, "Load generator
# efficiency"): drives bench/cheap_responder.cpp (answers almost for free, 127.0.0.1 only)
# with `paystream bench --no-reconcile` and writes JSON + logs.
#   bench/generator_cpu.sh OUT_PREFIX [RATE DURATION_S CONNECTIONS]...
# Examples:
#   bench/generator_cpu.sh docs/bench/results/generator-cheap 20000 10 2000
#   PAYSTREAM_BIN=/tmp/old/paystream bench/generator_cpu.sh /tmp/old 20000 10 2000 15000 10 19000
# Each triple is one run, written to OUT_PREFIX-RATE-CONNECTIONSconns.{json,log}.
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX=${1:?out prefix}; shift
[ $# -ge 3 ] || set -- 20000 10 2000
B=${PAYSTREAM_BIN:-build/release/paystream}
PORT=${PORT:-18790}
RESP=$(mktemp /tmp/cheap_responder-XXXX)
g++ -O2 -std=c++20 -o "$RESP" bench/cheap_responder.cpp
"$RESP" 127.0.0.1 "$PORT" &
SRV=$!
trap 'kill $SRV 2>/dev/null || true; wait $SRV 2>/dev/null || true; rm -f "$RESP"' EXIT
sleep 0.3
while [ $# -ge 3 ]; do
  RATE=$1; DUR=$2; CONNS=$3; shift 3
  OUT="$PREFIX-$RATE-${CONNS}conns"
  set +e
  "$B" bench --url "http://127.0.0.1:$PORT" --api-key sk_any --no-reconcile --rate "$RATE" \
    --duration-s "$DUR" --connections "$CONNS" --seed 7 --out "$OUT.json" >"$OUT.log" 2>&1
  rc=$?
  set -e
  echo "$OUT: exit $rc, $(grep -o '[0-9.]* µs per request' "$OUT.log" || echo '?')" >&2
done
