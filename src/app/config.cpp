#include "app/config.hpp"

#include <CLI/CLI.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "adapters/http/http_server.hpp"
#include "api/api.hpp"
#include "common/files.hpp"
#include "common/log.hpp"
#include "domain/ids.hpp"

namespace ps::app {

std::string ServeConfig::host() const { return listen.substr(0, listen.rfind(':')); }
uint16_t ServeConfig::port() const {
  return uint16_t(std::stoul(listen.substr(listen.rfind(':') + 1)));
}

Result<void> ServeConfig::validate() const {
  auto bad = [](std::string param, std::string msg) { return Error::invalid("config_invalid", msg, param); };
  auto colon = listen.rfind(':');
  if (colon == std::string::npos || colon == 0) return bad("listen", "--listen must be HOST:PORT");
  const std::string port_s = listen.substr(colon + 1);
  if (port_s.empty() || port_s.size() > 5 || port_s.find_first_not_of("0123456789") != std::string::npos ||
      std::stoul(port_s) > 65535)
    return bad("listen", "--listen port must be 0..65535");
  if (http_threads < 1 || http_threads > 64) return bad("http_threads", "--http-threads must be 1..64");
  if (body_limit_bytes < 1024 || body_limit_bytes > 16 * 1024 * 1024) return bad("body_limit_bytes", "--body-limit-bytes must be 1 KiB..16 MiB");
  if (header_limit_bytes < 1024 || header_limit_bytes > 1024 * 1024) return bad("header_limit_bytes", "--header-limit-bytes must be 1 KiB..1 MiB");
  if (request_timeout_ms < 100) return bad("request_timeout_ms", "--request-timeout-ms must be >= 100");
  if (max_connections < 0) return bad("max_connections", "--max-connections must be >= 0 (0: the most the open-files limit allows)");
  if (max_connections_per_address < 0)
    return bad("max_connections_per_address", "--max-connections-per-address must be >= 0 (0: half of --max-connections)");
  if (auto l = connection_limits(open_files_limit(), uint64_t(max_connections), uint64_t(max_connections_per_address)); !l)
    return l.error();
  if (max_amount_minor < 1) return bad("max_amount_minor", "--max-amount-minor must be >= 1");
  if (rate_limit_per_s <= 0) return bad("rate_limit_per_s", "--rate-limit-per-s must be > 0");
  if (rate_limit_burst < 1) return bad("rate_limit_burst", "--rate-limit-burst must be >= 1");
  if (store_max_batch < 1 || store_max_batch > 100000) return bad("store_max_batch", "--store-max-batch must be 1..100000");
  if (store_max_queue < 1 || store_max_queue > 1000000) return bad("store_max_queue", "--store-max-queue must be 1..1000000");
  if (max_backlog_records < 0 || max_backlog_records > 10000000)
    return bad("max_backlog_records", "--max-backlog-records must be 0 (off) .. 10000000");
  if (max_backlog_age_ms < 0 || max_backlog_age_ms > 3600000)
    return bad("max_backlog_age_ms", "--max-backlog-age-ms must be 0 (off) .. 3600000");
  if (acquirer_timeout_ms < 1) return bad("acquirer_timeout_ms", "--acquirer-timeout-ms must be >= 1");
  if (acquirer_max_attempts < 1 || acquirer_max_attempts > 20) return bad("acquirer_max_attempts", "--acquirer-max-attempts must be 1..20");
  if (acquirer_failure_rate < 0 || acquirer_failure_rate > 1) return bad("acquirer_failure_rate", "--acquirer-failure-rate must be 0..1");
  if (processor_concurrency < 1 || processor_concurrency > 1024) return bad("processor_concurrency", "--processor-concurrency must be 1..1024");
  if (stage_batch_max < 1 || stage_batch_max > 10000) return bad("stage_batch_max", "--stage-batch-max must be 1..10000");
  if (fee_bps < 0 || fee_bps > 10000) return bad("fee_bps", "--fee-bps must be 0..10000");
  if (fee_fixed_minor < 0) return bad("fee_fixed_minor", "--fee-fixed-minor must be >= 0");
  if (webhook_retry_schedule_ms.size() > 64) return bad("webhook_retry_schedule_ms", "at most 64 retries");
  for (auto d : webhook_retry_schedule_ms)
    if (d < 1) return bad("webhook_retry_schedule_ms", "every retry delay must be >= 1 ms");
  if (webhook_timeout_ms < 1) return bad("webhook_timeout_ms", "--webhook-timeout-ms must be >= 1");
  if (auto c = parse_cidr_list(webhook_allow_cidrs); !c)
    return bad("webhook_allow_cidrs", "--webhook-allow-cidrs: " + c.error().message);
  if (webhook_resolve_timeout_ms < 1 || webhook_resolve_timeout_ms > 30000)
    return bad("webhook_resolve_timeout_ms", "--webhook-resolve-timeout-ms must be 1..30000");
  if (log_level != "debug" && log_level != "info" && log_level != "warn" && log_level != "error")
    return bad("log_level", "--log-level must be debug, info, warn or error");
  return ok();
}

AddressPolicy ServeConfig::webhook_policy() const {
  auto c = parse_cidr_list(webhook_allow_cidrs);
  return c ? AddressPolicy(std::move(c.value())) : AddressPolicy();
}

namespace {
// Registers `flag` with the environment variable PAYSTREAM_<FLAG> as fallback.
template <class T>
CLI::Option* opt(CLI::App& c, const std::string& flag, T& var, const std::string& help) {
  return c.add_option(flag, var, help)->envname(env_name_for(flag))->capture_default_str();
}
}  // namespace

std::string env_name_for(const std::string& flag) {
  std::string env = "PAYSTREAM_";
  for (char ch : flag.substr(2)) env += ch == '-' ? '_' : char(std::toupper(ch));
  return env;
}

void add_http_options(CLI::App& c, ServeConfig& s) {
  opt(c, "--listen", s.listen, "HOST:PORT to listen on (port 0 picks a free port)");
  opt(c, "--http-threads", s.http_threads, "HTTP I/O threads");
  c.add_flag("--reuse-port", s.reuse_port, "set SO_REUSEPORT so several processes share the port")->envname("PAYSTREAM_REUSE_PORT");
  opt(c, "--body-limit-bytes", s.body_limit_bytes, "largest request body (413 above)");
  opt(c, "--header-limit-bytes", s.header_limit_bytes, "largest request header block (431 above)");
  opt(c, "--request-timeout-ms", s.request_timeout_ms, "a request must arrive completely within this (408)");
  opt(c, "--idle-timeout-ms", s.idle_timeout_ms, "idle keep-alive connections close after this");
  opt(c, "--max-connections", s.max_connections,
      "open connections at most; 0 = the open-files limit minus 512 kept for files and outgoing connections");
  opt(c, "--max-connections-per-address", s.max_connections_per_address,
      "open connections from one client address at most; 0 = half of --max-connections");
  opt(c, "--shutdown-timeout-ms", s.shutdown_timeout_ms, "SIGTERM: longest wait for in-flight requests");
}

void add_api_options(CLI::App& c, ServeConfig& s) {
  opt(c, "--max-amount-minor", s.max_amount_minor, "largest payment amount in minor units");
  opt(c, "--rate-limit-per-s", s.rate_limit_per_s, "default token-bucket rate per API key");
  opt(c, "--rate-limit-burst", s.rate_limit_burst, "default token-bucket burst per API key");
  opt(c, "--idempotency-ttl-s", s.idempotency_ttl_s, "lifetime of the fast idempotency record");
  opt(c, "--max-wait-ms", s.max_wait_ms, "cap of Prefer: wait=<ms>");
}

void add_stage_options(CLI::App& c, ServeConfig& s) {
  opt(c, "--fraud-blocklist", s.fraud_blocklist, "blocked payment sources")->delimiter(',');
  opt(c, "--velocity-window-ms", s.velocity_window_ms, "fraud velocity sliding window");
  opt(c, "--velocity-max-per-source", s.velocity_max_per_source, "payments per source per window");
  opt(c, "--velocity-max-per-merchant", s.velocity_max_per_merchant, "payments per merchant per window");
  opt(c, "--risk-url", s.risk_url, "external risk provider URL (empty: none)");
  opt(c, "--risk-timeout-ms", s.risk_timeout_ms, "risk provider timeout");
  opt(c, "--risk-fallback-approve-below-minor", s.risk_fallback_approve_below_minor, "risk provider down: approve below this amount, decline above");
  opt(c, "--acquirer-timeout-ms", s.acquirer_timeout_ms, "timeout of one acquirer call");
  opt(c, "--acquirer-max-attempts", s.acquirer_max_attempts, "attempts per charge for retryable errors");
  opt(c, "--processor-concurrency", s.processor_concurrency, "concurrent acquirer calls");
  opt(c, "--stage-batch-max", s.stage_batch_max, "records a stage takes per poll and commits at once");
  opt(c, "--fee-bps", s.fee_bps, "platform fee in basis points");
  opt(c, "--fee-fixed-minor", s.fee_fixed_minor, "fixed platform fee in minor units");
  opt(c, "--webhook-retry-schedule-ms", s.webhook_retry_schedule_ms, "comma list of delays before each retry")->delimiter(',');
  opt(c, "--webhook-timeout-ms", s.webhook_timeout_ms, "timeout of one webhook attempt");
}

void add_webhook_target_options(CLI::App& c, ServeConfig& s) {
  opt(c, "--webhook-allow-cidrs", s.webhook_allow_cidrs,
      "comma list of CIDRs webhook URLs may reach besides global addresses (e.g. 127.0.0.0/8,::1/128 for tests)")
      ->delimiter(',');
  opt(c, "--webhook-resolve-timeout-ms", s.webhook_resolve_timeout_ms,
      "DNS lookup of a webhook URL's host when an endpoint is created");
}

void add_log_options(CLI::App& c, ServeConfig& s) {
  opt(c, "--log-level", s.log_level, "debug|info|warn|error");
}

void add_serve_options(CLI::App& c, ServeConfig& s) {
  add_http_options(c, s);
  opt(c, "--data-dir", s.data_dir, "directory of the SQLite databases and admin.key");
  add_api_options(c, s);
  c.add_option("--fsync", s.fsync, "on|off: fsync every group commit (off loses the last commits on power loss)")
      ->envname("PAYSTREAM_FSYNC")->transform(CLI::IsMember({"on", "off", "true", "false", "1", "0"}))
      ->capture_default_str();
  opt(c, "--store-max-batch", s.store_max_batch, "most writes in one group commit");
  opt(c, "--store-max-queue", s.store_max_queue,
      "writes waiting for the store before new payments get 503 store_overloaded + Retry-After (bounds queueing delay under overload)");
  c.add_option("--engine", s.engine,
               "log|sqlite: log = every write is one record in an append-only, group-committed segment log "
               "(fsync'd before it is answered), the stages exchange records in memory, and SQLite is "
               "projected off the request path; sqlite = the previous engine (SQLite is log and state). "
               "A data dir keeps the engine it was started with")
      ->envname("PAYSTREAM_ENGINE")->transform(CLI::IsMember({"sqlite", "log"}))
      ->capture_default_str();
  opt(c, "--max-backlog-records", s.max_backlog_records,
      "records the settling stages (fraud, processor, ledger) have yet to consume before new payments and "
      "refunds get 503 store_overloaded + Retry-After (bounds accepted -> terminal under overload); 0 = off");
  opt(c, "--max-backlog-age-ms", s.max_backlog_age_ms,
      "age of the oldest record a settling stage has yet to consume before new payments get 503 "
      "store_overloaded; 0 = off (one slow payment, e.g. an acquirer timeout, then stops intake)");
  add_stage_options(c, s);
  add_webhook_target_options(c, s);
  opt(c, "--acquirer-latency-ms", s.acquirer_latency_ms, "simulated acquirer latency");
  opt(c, "--acquirer-failure-rate", s.acquirer_failure_rate, "simulated transient failure rate 0..1");
  opt(c, "--acquirer-seed", s.acquirer_seed, "simulator random seed");
  add_log_options(c, s);
}

Result<void> check_admin_key(const std::string& key) {
  if (key.size() < kMinAdminKeyLength)
    return Error::invalid("config_invalid",
                          "the admin key (PAYSTREAM_ADMIN_KEY or admin.key) has " + std::to_string(key.size()) +
                              " characters; at least " + std::to_string(kMinAdminKeyLength) +
                              " are required (e.g. ak_$(openssl rand -hex 16))",
                          "admin_key");
  return ok();
}

std::string load_or_create_admin_key(const std::string& data_dir) {
  if (const char* env = std::getenv("PAYSTREAM_ADMIN_KEY"); env && *env) return env;
  namespace fs = std::filesystem;
  const fs::path path = fs::path(data_dir) / "admin.key";
  auto read_key = [&] {
    std::ifstream in(path);
    std::string key;
    std::getline(in, key);
    if (key.empty()) throw std::runtime_error("admin key file is empty: " + path.string());
    return key;
  };
  if (fs::exists(path)) return read_key();
  // Created complete, 0600 and fsync'd (with its directory) under a temporary name, then
  // published without replacing: two processes starting at once agree on one key.
  std::string key = random_token("ak_", 24);
  if (auto w = files::write_new_private(path.string(), key + "\n"); !w) {
    if (w.error().code == "file_exists") return read_key();   // another process won
    throw std::runtime_error("cannot write the admin key: " + w.error().message);
  }
  log::warn("admin key generated", {{"path", fs::absolute(path).string()}});
  return key;
}

}  // namespace ps::app
