// Configuration of `paystream serve`: every option has its unit in its name, a default
// that works with no configuration at all, a flag, and an environment variable
// PAYSTREAM_<NAME> (flags win). Bounded values are validated at start-up.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "common/result.hpp"
#include "domain/http_url.hpp"

namespace CLI { class App; }

namespace ps::app {

struct ServeConfig {
  // HTTP intake
  std::string listen = "127.0.0.1:8080";   // HOST:PORT; port 0 picks a free one (logged)
  std::string data_dir = "./paystream-data";
  int http_threads = 2;
  bool reuse_port = false;
  int64_t body_limit_bytes = 64 * 1024;
  int64_t header_limit_bytes = 16 * 1024;
  int64_t request_timeout_ms = 10000;
  int64_t idle_timeout_ms = 60000;
  int64_t max_connections = 0;              // 0: the open-files limit minus a reserve
  int64_t max_connections_per_address = 0;  // 0: half of max_connections
  int64_t shutdown_timeout_ms = 10000;
  // API
  int64_t max_amount_minor = 99'999'999'999;
  double rate_limit_per_s = 1000;
  int64_t rate_limit_burst = 2000;
  int64_t idempotency_ttl_s = 24 * 3600;
  int64_t max_wait_ms = 30000;
  // Store
  bool fsync = true;
  int64_t store_max_batch = 512;
  int64_t store_max_queue = 8192;  // queued payments before 503 store_overloaded (load shedding)
  // "log" (default): the log-first engine (data-dir/engine-log, stages on its in-memory
  // bus, the store a projection: adapters/embedded/log_engine.hpp); "sqlite": the store
  // is log and state (the previous engine, kept while the log engine settles in).
  std::string engine = "log";
  // Intake admission (serve): records the settling stages have yet to consume, and the
  // age of the oldest, before new payments get 503 store_overloaded. 0 = off.
  int64_t max_backlog_records = 4000;
  int64_t max_backlog_age_ms = 0;
  // Fraud
  std::vector<std::string> fraud_blocklist = {"tok_fraud"};
  int64_t velocity_window_ms = 60000;
  int64_t velocity_max_per_source = 1000;
  int64_t velocity_max_per_merchant = 1'000'000;
  std::string risk_url;                      // empty: no external risk provider
  int64_t risk_timeout_ms = 300;
  int64_t risk_fallback_approve_below_minor = 10000;
  // Processor / acquirer simulator
  int64_t acquirer_timeout_ms = 2000;
  int64_t acquirer_max_attempts = 3;
  int64_t acquirer_latency_ms = 0;
  double acquirer_failure_rate = 0;
  uint64_t acquirer_seed = 42;
  int64_t processor_concurrency = 32;
  int64_t stage_batch_max = 256;  // records a stage takes per poll (one commit each)
  int64_t fee_bps = 0;
  int64_t fee_fixed_minor = 0;
  // Notifier
  std::vector<int64_t> webhook_retry_schedule_ms;  // empty: Standard Webhooks default (~3 days)
  int64_t webhook_timeout_ms = 5000;              // one attempt, DNS lookup included
  // Webhook targets (SPEC §3): only global addresses, plus these ranges (CIDRs, e.g.
  // 127.0.0.0/8,::1/128 for tests or 10.0.0.0/8 for a private deployment). Read by serve,
  // the gateway (endpoint creation) and the notifier worker (every attempt).
  std::vector<std::string> webhook_allow_cidrs;
  int64_t webhook_resolve_timeout_ms = 2000;       // DNS lookup of a URL at endpoint creation
  // Logs
  std::string log_level = "info";

  std::string host() const;
  uint16_t port() const;
  Result<void> validate() const;
  // The policy of webhook_allow_cidrs (validate() has checked them).
  AddressPolicy webhook_policy() const;
};

// Registers the serve flags (with PAYSTREAM_* environment fallbacks) on a CLI11 subcommand.
void add_serve_options(CLI::App& cmd, ServeConfig& cfg);
// The groups add_serve_options is made of, for the distributed roles.
void add_http_options(CLI::App& cmd, ServeConfig& cfg);   // listen, threads, limits, timeouts
void add_api_options(CLI::App& cmd, ServeConfig& cfg);    // amounts, rate limits, idempotency
void add_stage_options(CLI::App& cmd, ServeConfig& cfg);  // fraud, processor, ledger fees, webhooks
void add_log_options(CLI::App& cmd, ServeConfig& cfg);
void add_webhook_target_options(CLI::App& cmd, ServeConfig& cfg);  // serve, gateway, worker
// "--rate-limit-per-s" -> "PAYSTREAM_RATE_LIMIT_PER_S"
std::string env_name_for(const std::string& flag);

// Reads PAYSTREAM_ADMIN_KEY, or the key in <data_dir>/admin.key, or generates one there
// and logs its path: created with O_EXCL and mode 0600 under a temporary name, fsync'd,
// linked into place without replacing an existing key (a concurrent start reads the
// winner's), directory fsync'd. Throws on I/O failure (start-up only).
std::string load_or_create_admin_key(const std::string& data_dir);
// The admin key must be at least kMinAdminKeyLength (api.hpp) characters: a short key is
// guessable. Error::invalid("config_invalid", param "admin_key") otherwise.
Result<void> check_admin_key(const std::string& key);

}  // namespace ps::app
