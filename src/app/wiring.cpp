#include "app/wiring.hpp"

#include <pthread.h>

#include <filesystem>

#include "common/files.hpp"
#include "common/log.hpp"
#include "common/metrics.hpp"

namespace ps::app {
using std::chrono::milliseconds;

void apply_log_level(const std::string& s) {
  log::Level l = log::Level::info;
  if (s == "debug") l = log::Level::debug;
  if (s == "warn") l = log::Level::warn;
  if (s == "error") l = log::Level::error;
  log::set_level(l);
}

sigset_t block_shutdown_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);
  return set;
}

std::string wait_for_shutdown(sigset_t& signals) {
  int sig = 0;
  sigwait(&signals, &sig);
  return sig == SIGTERM ? "SIGTERM" : "SIGINT";
}

Result<void> prepare_data_dir(const std::string& dir, const std::vector<std::string>& names) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return Error::internal("cannot create data dir " + dir + ": " + ec.message());
  auto tighten = [](const std::string& path, mode_t mode) {
    auto r = files::restrict_mode(path, mode);
    if (!r) log::warn("cannot restrict permissions", {{"path", path}, {"error", r.error().message}});
    else if (*r) log::warn("permissions restricted", {{"path", path}, {"mode", mode == 0700 ? "0700" : "0600"}});
  };
  tighten(dir, 0700);
  for (const auto& n : names) tighten((fs::path(dir) / n).string(), 0600);
  return ok();
}

FraudConfig fraud_config(const ServeConfig& cfg) {
  FraudConfig f;
  f.blocklist = {cfg.fraud_blocklist.begin(), cfg.fraud_blocklist.end()};
  f.velocity_window_ms = cfg.velocity_window_ms;
  f.max_per_source = cfg.velocity_max_per_source;
  f.max_per_merchant = cfg.velocity_max_per_merchant;
  f.risk_timeout = milliseconds(cfg.risk_timeout_ms);
  f.fallback_approve_below_minor = cfg.risk_fallback_approve_below_minor;
  return f;
}

ProcessorConfig processor_config(const ServeConfig& cfg) {
  ProcessorConfig p;
  p.acquirer_timeout = milliseconds(cfg.acquirer_timeout_ms);
  p.backoff.max_attempts = int(cfg.acquirer_max_attempts);
  p.concurrency = size_t(cfg.processor_concurrency);
  return p;
}

FeeConfig fee_config(const ServeConfig& cfg) {
  FeeConfig f;
  f.fee_bps = cfg.fee_bps;
  f.fee_fixed_minor = cfg.fee_fixed_minor;
  return f;
}

DispatcherOptions dispatcher_options(const ServeConfig& cfg) {
  DispatcherOptions d;
  if (!cfg.webhook_retry_schedule_ms.empty()) {
    d.retry_schedule.clear();
    for (auto ms : cfg.webhook_retry_schedule_ms) d.retry_schedule.push_back(milliseconds(ms));
  }
  d.attempt_timeout = milliseconds(cfg.webhook_timeout_ms);
  return d;
}

ApiConfig api_config(const ServeConfig& cfg, std::string admin_key) {
  ApiConfig a;
  a.admin_key = std::move(admin_key);
  a.max_amount_minor = cfg.max_amount_minor;
  a.default_rate_per_s = cfg.rate_limit_per_s;
  a.default_burst = cfg.rate_limit_burst;
  a.max_wait_ms = int(cfg.max_wait_ms);
  a.webhook_targets = cfg.webhook_policy();
  a.webhook_resolve_timeout_ms = cfg.webhook_resolve_timeout_ms;
  return a;
}

void log_webhook_targets(const ServeConfig& cfg) {
  const auto policy = cfg.webhook_policy();
  if (policy.allow_list().empty()) return;
  std::string list;
  for (const auto& c : policy.allow_list()) list += (list.empty() ? "" : ",") + c.to_string();
  log::warn("webhook URLs may reach these non-global ranges (--webhook-allow-cidrs)", {{"cidrs", list}});
}

HttpServerOptions http_options(const ServeConfig& cfg) {
  HttpServerOptions h;
  h.host = cfg.host();
  h.port = cfg.port();
  h.threads = cfg.http_threads;
  h.reuse_port = cfg.reuse_port;
  h.body_limit_bytes = size_t(cfg.body_limit_bytes);
  h.header_limit_bytes = size_t(cfg.header_limit_bytes);
  h.request_timeout_ms = int(cfg.request_timeout_ms);
  h.idle_timeout_ms = int(cfg.idle_timeout_ms);
  // Validated with the config (ServeConfig::validate), so it holds here.
  if (auto l = connection_limits(open_files_limit(), uint64_t(cfg.max_connections),
                                 uint64_t(cfg.max_connections_per_address))) {
    h.max_connections = l->max_connections;
    h.max_connections_per_address = l->max_connections_per_address;
  }
  return h;
}

HttpHandler ops_handler(const std::atomic<bool>& ready) {
  return [&ready](HttpRequest req, Respond respond) {
    HttpResponse r;
    r.content_type = "application/json";
    if (req.method != "GET") {
      r.status = 405;
      r.body = R"({"error":{"type":"invalid_request","code":"method_not_allowed","message":"GET only"}})";
    } else if (req.path == "/metrics") {
      r.content_type = "text/plain; version=0.0.4";
      r.body = metrics::registry().render();
    } else if (req.path == "/healthz") {
      r.body = R"({"status":"ok"})";
    } else if (req.path == "/readyz") {
      bool ok = ready.load();
      r.status = ok ? 200 : 503;
      r.body = ok ? R"({"status":"ready"})" : R"({"status":"not_ready"})";
    } else {
      r.status = 404;
      r.body = R"({"error":{"type":"not_found","code":"route_not_found","message":"no such route"}})";
    }
    respond(std::move(r));
  };
}

}  // namespace ps::app
