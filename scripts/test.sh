#!/usr/bin/env bash
# Installs what is missing, builds everything in the debug preset (AddressSanitizer +
# UBSan), starts the local stack (Kafka, PostgreSQL, Redis on loopback: deploy/local/stack)
# and runs the whole suite: unit, contract, black-box end-to-end and crash tests.
# Pass ctest arguments to narrow it, e.g. scripts/test.sh -L unit  or  -LE crash
# A whole run (no arguments) then runs the 30-second fuzz smoke of every libFuzzer harness
# (scripts/fuzz.sh --smoke; clang, its own build in build/fuzz). PAYSTREAM_FUZZ_SMOKE=0
# leaves it out, =1 adds it to a narrowed run.
# The stack is stopped on exit (its data kept) unless PAYSTREAM_KEEP_STACK=1.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake --preset debug >/dev/null
cmake --build --preset debug

# The binary just built provisions the stack (schema, topics), not a stale release build.
export PAYSTREAM_BIN="${PAYSTREAM_BIN:-$PWD/build/debug/paystream}"
if [[ ${PAYSTREAM_KEEP_STACK:-0} != 1 ]]; then
  trap 'deploy/local/stack down || true' EXIT
fi
# Assigned first so a failing `up` stops the script (set -e does not see through eval "$(...)").
stack_env=$(deploy/local/stack up)
eval "$stack_env"
export PAYSTREAM_KAFKA_BROKERS PAYSTREAM_POSTGRES_URL PAYSTREAM_REDIS_URL PAYSTREAM_REDIS_CACHE_URL
# Every test creates its own prefixed topics; drop those of earlier runs so the broker does
# not slow down with thousands of partitions (skipped when the stack is shared: KEEP_STACK).
if [[ ${PAYSTREAM_KEEP_STACK:-0} != 1 ]]; then
  deploy/local/stack prune || echo "test.sh: pruning old test topics failed; continuing" >&2
fi

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
smoke=${PAYSTREAM_FUZZ_SMOKE:-$(( $# == 0 ))}
rc=0
ctest --preset debug -j2 "$@" || rc=$?
if [[ $smoke == 1 ]]; then
  scripts/fuzz.sh --smoke || rc=1
fi
exit $rc
