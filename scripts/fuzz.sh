#!/usr/bin/env bash
# libFuzzer harnesses (tests/fuzz, docs/TESTING.md "Fuzzing"): builds them with clang,
# ASan and UBSan into build/fuzz and runs them on their seed corpora.
#   scripts/fuzz.sh --smoke            every harness 30 s (what scripts/test.sh runs)
#   scripts/fuzz.sh --long             every harness 600 s (the labelled long run)
#   scripts/fuzz.sh --time S           every harness S seconds
#   scripts/fuzz.sh --only NAME ...    just that harness (repeatable; with any mode)
#   scripts/fuzz.sh --run NAME FILE... run NAME once on each FILE (reproduce a crash)
#   scripts/fuzz.sh --build            build only
#   scripts/fuzz.sh --seeds            rewrite the generated binary seeds in tests/fuzz/corpus
# Harnesses run two at a time (PAYSTREAM_FUZZ_JOBS). New corpus entries go to
# build/fuzz/corpus/<name> (the checked-in seeds in tests/fuzz/corpus are read only);
# a crash leaves build/fuzz/artifacts/<name>/crash-* and fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD=$ROOT/build/fuzz
HARNESSES=(fuzz_http_api fuzz_validation fuzz_event_payload fuzz_engine_record fuzz_kafka_codec fuzz_http_url)
JOBS=${PAYSTREAM_FUZZ_JOBS:-2}

mode=smoke seconds=30 only=() run_name="" run_files=()
while (($#)); do
  case $1 in
    --smoke) mode=fuzz seconds=30 ;;
    --long) mode=fuzz seconds=600 ;;
    --time) mode=fuzz seconds=$2; shift ;;
    --only) only+=("$2"); shift ;;
    --build) mode=build ;;
    --seeds) mode=seeds ;;
    --run) mode=run run_name=$2; shift 2; run_files=("$@"); break ;;
    *) echo "fuzz.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
[[ $mode == smoke ]] && mode=fuzz
((${#only[@]})) && HARNESSES=("${only[@]}")

# -O1 and line tables only: quicker to compile than -O2 -g, enough for symbolized reports.
# ccache: paths relative to the checkout and the build directory left out of the hash, so a
# fresh clone elsewhere on the machine reuses the objects (its DW_AT_comp_dir is then off).
export CCACHE_BASEDIR=$ROOT CCACHE_NOHASHDIR=1
if [[ ! -f $BUILD/build.ninja ]]; then
  CXX=${PAYSTREAM_FUZZ_CXX:-clang++} cmake -S "$ROOT" -B "$BUILD" -G Ninja \
    -DCMAKE_BUILD_TYPE=Fuzz -DCMAKE_CXX_FLAGS_FUZZ="-O1 -gline-tables-only" \
    -DPAYSTREAM_FUZZ=ON -DPAYSTREAM_TESTS=OFF -DPAYSTREAM_BENCHMARKS=OFF \
    -DCMAKE_CXX_COMPILER_LAUNCHER="$(command -v ccache || true)" >/dev/null
fi
targets=("${HARNESSES[@]}")
[[ $mode == run ]] && targets=("$run_name")
[[ $mode == seeds ]] && targets=(fuzz_make_seeds)
nice -n 10 cmake --build "$BUILD" -j "${PAYSTREAM_FUZZ_BUILD_JOBS:-2}" --target "${targets[@]}"
[[ $mode == build ]] && exit 0
if [[ $mode == seeds ]]; then
  ASAN_OPTIONS=detect_leaks=0 "$BUILD/tests/fuzz/fuzz_make_seeds" "$ROOT/tests/fuzz/corpus"
  exit 0
fi

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

if [[ $mode == run ]]; then
  exec "$BUILD/tests/fuzz/$run_name" -runs=1 "${run_files[@]}"
fi

run_one() {
  local name=$1 log=$BUILD/logs/$1.log
  mkdir -p "$BUILD/corpus/$name" "$BUILD/artifacts/$name" "$BUILD/logs"
  local dict=() ; [[ -f $ROOT/tests/fuzz/$name.dict ]] && dict=(-dict="$ROOT/tests/fuzz/$name.dict")
  if nice -n 10 "$BUILD/tests/fuzz/$name" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
      -max_len=8192 -print_final_stats=1 "${dict[@]}" -artifact_prefix="$BUILD/artifacts/$name/" \
      "$BUILD/corpus/$name" "$ROOT/tests/fuzz/corpus/$name" >"$log" 2>&1; then
    echo "fuzz.sh: $name ok: $(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}') runs in ${seconds}s"
  else
    echo "fuzz.sh: $name FAILED (log: $log, artifacts: $BUILD/artifacts/$name/); its end:" >&2
    tail -n 40 "$log" >&2
    return 1
  fi
}

echo "fuzz.sh: ${#HARNESSES[@]} harnesses, ${seconds}s each, $JOBS at a time" >&2
pids=() names=() status=0
for h in "${HARNESSES[@]}"; do
  run_one "$h" & pids+=($!) names+=("$h")
  if ((${#pids[@]} >= JOBS)); then
    wait "${pids[0]}" || status=1
    pids=("${pids[@]:1}") names=("${names[@]:1}")
  fi
done
for p in "${pids[@]}"; do wait "$p" || status=1; done
exit $status
