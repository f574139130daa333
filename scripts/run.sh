#!/usr/bin/env bash
# Installs what is missing, builds the release binary and starts `paystream serve`
# (embedded shape: one process; its log and SQLite in the data dir). Extra arguments go to `paystream serve`,
# e.g. scripts/run.sh --listen 127.0.0.1:0 --data-dir /tmp/ps
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release --target paystream
exec build/release/paystream serve "$@"
