#!/usr/bin/env bash
# CPU seconds used per process group over a window: what saturates the machine during a
# benchmark. Groups: the Kafka JVM, PostgreSQL, Redis, each paystream role (by its
# command line), and everything else.
#   bench/cpu_split.sh SECONDS
set -euo pipefail
W=${1:-20}
tick=$(getconf CLK_TCK)
snap() {
  for d in /proc/[0-9]*; do
    [ -r "$d/stat" ] || continue
    local cmd; cmd=$(tr '\0' ' ' <"$d/cmdline" 2>/dev/null | cut -c1-200) || continue
    local st; st=$(cat "$d/stat" 2>/dev/null) || continue
    # fields after the ")" : utime is field 14, stime 15 of the whole line
    local rest=${st##*) }
    set -- $rest
    local t=$(( ${12} + ${13} ))
    local g=other
    case "$cmd" in
      *java*kafka*|*kafka.Kafka*) g=kafka ;;
      *postgres*) g=postgresql ;;
      *redis-server*) g=redis ;;
      *"paystream bench"*) g=bench-generator ;;
      *"paystream serve"*) g=paystream-serve ;;
      *"paystream gateway"*) g=paystream-gateways ;;
      *"--stage fraud"*) g=worker-fraud ;;
      *"--stage processor"*) g=worker-processor ;;
      *"--stage ledger"*) g=worker-ledger ;;
      *"--stage notifier"*) g=worker-notifier ;;
      *"paystream acquirer-sim"*) g=acquirer-sim ;;
    esac
    echo "${d#/proc/} $g $t"
  done
}
a=$(snap); sleep "$W"; b=$(snap)
join <(echo "$a" | sort -k1,1) <(echo "$b" | sort -k1,1) | awk -v tick="$tick" -v w="$W" '
  { d = $5 - $3; if (d > 0) cpu[$2] += d }
  END { for (g in cpu) { s = cpu[g] / tick; tot += s; printf "%-20s %7.1f s  %5.1f%% of one core\n", g, s, 100 * s / w }
        printf "%-20s %7.1f s  %5.1f%% of one core (machine: 200%%)\n", "total", tot, 100 * tot / w }' | sort -k2 -n -r
