// The options of `paystream bench` (docs/BENCH_TOOL.md); CLI11 stays in src/app.
#pragma once
#include <CLI/CLI.hpp>

#include "bench/bench_config.hpp"

namespace ps::app {

// Adds every bench option to `c`. Required-ness and ranges are checked by
// ps::bench::validate_config (exit code 2), not by CLI11.
void add_bench_options(CLI::App& c, ps::bench::BenchConfig& b);

}  // namespace ps::app
