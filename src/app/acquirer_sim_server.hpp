// `paystream acquirer-sim`: the acquirer simulator (src/adapters/sim) as its own process,
// speaking the acquirer HTTP protocol (docs/ACQUIRER_SIMULATOR.md) to the processor role's
// HttpAcquirer. Its SQLite file (<data_dir>/acquirer-sim.db) is durable, so idempotency by
// payment (refund) id holds across restarts; GET /v1/charges/{id} and /v1/stats read it
// for reconciliation. Also serves /healthz, /readyz and /metrics.
// Shutdown on SIGTERM/SIGINT: stops accepting, lets in-flight calls finish (bounded by
// their timeouts), then exits 0. Logs {"msg":"listening","address":"host:port"} once bound.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "adapters/http/acquirer_http_service.hpp"

namespace ps::app {

struct AcquirerSimServeConfig {
  std::string listen = "127.0.0.1:8090";  // HOST:PORT; port 0 picks a free one (logged)
  std::string data_dir = "./acquirer-sim-data";
  int64_t latency_ms = 0;                 // added to every call
  double failure_rate = 0;                // 0..1, seeded retryable failures
  uint64_t seed = 42;
  int threads = 4;                        // HTTP I/O threads (calls run on a separate pool)
  std::string log_level = "info";
};

int run_acquirer_sim(const AcquirerSimServeConfig& cfg);

// The simulator's stored results, read from its SQLite file over a separate read
// connection (the tables are the simulator's documented schema). Throws
// std::runtime_error if the file cannot be opened (start-up only).
std::unique_ptr<AcquirerRecords> open_acquirer_sim_records(const std::string& db_path);

}  // namespace ps::app
