// BenchConfig: the options of `paystream bench` (see docs/BENCH_TOOL.md) and their
// validation. validate_config() turns the raw options into a ValidConfig (steps resolved,
// processes and source addresses defaulted, URL parsed) or a usage error (exit 2).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "bench/schedule.hpp"
#include "common/result.hpp"

namespace ps::bench {

inline constexpr int kMaxProcesses = 64;
inline constexpr int64_t kMaxConnections = 60000;
inline constexpr int64_t kMaxConnectionsPerProcess = 15000;

struct BenchConfig {
  std::string url;
  std::string api_key;
  std::string admin_key;
  double rate_per_s = 0;          // with duration_s; or steps
  double duration_s = 0;
  std::string steps;              // "RATE:SECONDS,..."
  int64_t connections = 10;
  int processes = 0;              // 0: ceil(connections / 10000)
  std::vector<std::string> source_addresses;
  int64_t amount_minor = 1000;
  std::string currency = "EUR";
  double decline_share = 0.1;
  int64_t approve_sources = 10000;  // approving sources tok_approve_<i>, spread so fraud velocity rules stay quiet
  double retry_share = 0.02;
  double duplicate_share = 0.01;
  int64_t timeout_ms = 10000;
  double settle_timeout_s = 120;
  bool no_reconcile = false;
  int64_t verify_entries = 200;
  std::vector<int64_t> watch_pids;
  std::string out_path;
  uint64_t seed = 0;              // 0: from the clock
  double progress_interval_s = 1;
  int64_t connect_concurrency = 1000;
  std::string run_id;             // empty: generated
};

struct Target {
  std::string host;   // as given in the URL
  uint16_t port = 80;
};

struct ValidConfig {
  BenchConfig raw;
  Target target;
  std::vector<Step> steps;
  int processes = 1;
  std::vector<std::string> source_addresses;  // per worker (empty string: no bind)
  std::string run_id;
  uint64_t seed = 0;
};

Result<Target> parse_url(const std::string& url);
Result<ValidConfig> validate_config(const BenchConfig& c);

// Connections of worker k of p when n are split as evenly as possible.
int64_t connections_of_worker(int64_t n, int p, int k);

}  // namespace ps::bench
