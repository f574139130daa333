#!/usr/bin/env bash
# Cross-check with a public tool: drives the same POST /v1/payments as `paystream bench`
# with wrk (Debian package `wrk`, closed loop: each connection waits for its answer) and
# bench/wrk_payments.lua (a unique Idempotency-Key per request), against a running server.
# It creates its own merchant (huge rate limit) with the admin key, so the achieved rate
# can be reproduced without paystream's own tool.
#   bench/wrk_cross_check.sh URL ADMIN_KEY [DURATION_S=30] [CONNECTIONS=256] [THREADS=2]
# Example (embedded shape):
#   PAYSTREAM_ADMIN_KEY=adm build/release/paystream serve --listen 127.0.0.1:18580 \
#     --data-dir "$(mktemp -d)" --velocity-max-per-source 1000000000 --log-level warn &
#   bench/wrk_cross_check.sh http://127.0.0.1:18580 adm 30 256
# wrk reports closed-loop latency (it suffers from coordinated omission): compare its
# Requests/sec with `paystream bench`'s achieved rate, not its percentiles.
set -euo pipefail
cd "$(dirname "$0")/.."
URL=${1:?url}; ADMIN=${2:?admin key}; DURATION=${3:-30}; CONNS=${4:-256}; THREADS=${5:-2}
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 2; }
KEY=$(curl -sf -X POST "$URL/v1/merchants" -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' \
  -d '{"name":"wrk cross-check","rate_limit":{"per_second":1000000,"burst":10000000}}' \
  | python3 -c 'import json,sys;print(json.load(sys.stdin)["api_key"])')
API_KEY=$KEY wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency -s bench/wrk_payments.lua "$URL"
