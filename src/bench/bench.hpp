// `paystream bench`: the open-loop load generator of the public API (SPEC §8,
// docs/BENCH_TOOL.md). run_bench validates the options, prepares the merchant, forks the
// load workers (before any thread exists), shows progress, merges their results,
// reconciles through the API, prints the summary and writes the JSON.
// Exit code: 0 all good; 1 any request error or reconciliation failure (with a
// `bench: FAILED: ...` line on stderr); 2 usage error.
#pragma once
#include "bench/bench_config.hpp"

namespace ps::bench {

int run_bench(const BenchConfig& cfg);

}  // namespace ps::bench
