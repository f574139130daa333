// The outcome of a bench run and its two renderings: the JSON document (--out; schema in
// docs/BENCH_TOOL.md) and the human summary printed on stdout.
#pragma once
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "bench/bench_config.hpp"
#include "bench/reconcile.hpp"
#include "bench/worker_result.hpp"

namespace ps::bench {

struct RunOutcome {
  const ValidConfig* cfg = nullptr;
  std::string merchant_id;                 // when created with --admin-key
  WorkerResult merged;
  std::optional<ReconcileReport> reconciliation;  // absent with --no-reconcile or on error
  std::string reconcile_error;
  double generator_cpu_s = 0;              // workers (children): user + system
  double parent_cpu_s = 0;
  double wall_s = 0;
  std::optional<double> server_rss_max_mib;   // max over samples of Σ VmRSS of --watch-pid
  std::map<int64_t, double> server_rss_max_mib_by_pid;
  std::vector<std::string> failures;

  double offered_per_s() const;
  double achieved_per_s() const;
  double schedule_length_s() const;
  // (workers + parent CPU) / requests sent, in µs; 0 when nothing was sent.
  double generator_cpu_us_per_request() const;
};

std::string report_json(const RunOutcome& o);
std::string report_text(const RunOutcome& o);

}  // namespace ps::bench
