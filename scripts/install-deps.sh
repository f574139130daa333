#!/usr/bin/env bash
# Installs what paystream needs to build and test, from Debian's packages (and pytest
# from PyPI if the python3 on PATH lacks it). Fast no-op when everything is present.
set -euo pipefail

PACKAGES=(
  g++ cmake ninja-build pkg-config
  libboost1.81-dev libboost-json1.81-dev
  libsqlite3-dev sqlite3 libssl-dev
  libfmt-dev libspdlog-dev libcli11-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  python3 curl
  prometheus
  librdkafka-dev libpq-dev libhiredis-dev
  postgresql-15 postgresql-client-15 redis-server redis-tools
  openjdk-17-jre-headless maven
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if ! python3 -c 'import pytest' 2>/dev/null; then
  echo "install-deps: installing pytest" >&2
  python3 -m pip install -q pytest 2>/dev/null \
    || python3 -m pip install -q --break-system-packages pytest
fi
