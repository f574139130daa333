#!/usr/bin/env bash
# Installs what is missing, builds everything in the debug preset (AddressSanitizer +
# UBSan) and runs the whole suite: unit, contract, black-box end-to-end and crash tests.
# Pass ctest arguments to narrow it, e.g. scripts/test.sh -L unit  or  -LE crash
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake --preset debug >/dev/null
cmake --build --preset debug
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
ctest --preset debug -j2 "$@"
