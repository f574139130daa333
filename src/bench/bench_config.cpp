#include "bench/bench_config.hpp"

#include <chrono>
#include <cmath>
#include <random>

namespace ps::bench {
namespace {
Error usage(const std::string& param, const std::string& msg) { return Error::invalid("usage", msg, param); }

bool valid_key_chars(const std::string& s) {
  for (char ch : s)
    if (ch <= ' ' || ch > '~') return false;
  return !s.empty();
}
}  // namespace

Result<Target> parse_url(const std::string& url) {
  const std::string scheme = "http://";
  if (url.rfind(scheme, 0) != 0) return usage("url", "--url must start with http:// (got '" + url + "')");
  std::string rest = url.substr(scheme.size());
  if (auto slash = rest.find('/'); slash != std::string::npos) {
    if (rest.substr(slash) != "/") return usage("url", "--url must not carry a path (the API lives at /v1)");
    rest = rest.substr(0, slash);
  }
  Target t;
  auto colon = rest.rfind(':');
  if (colon == std::string::npos) {
    t.host = rest;
  } else {
    t.host = rest.substr(0, colon);
    std::string p = rest.substr(colon + 1);
    if (p.empty() || p.size() > 5 || p.find_first_not_of("0123456789") != std::string::npos)
      return usage("url", "--url has a bad port: '" + p + "'");
    long v = std::stol(p);
    if (v < 1 || v > 65535) return usage("url", "--url port must be 1..65535");
    t.port = uint16_t(v);
  }
  if (t.host.empty()) return usage("url", "--url has no host");
  return t;
}

int64_t connections_of_worker(int64_t n, int p, int k) { return n / p + (k < n % p ? 1 : 0); }

Result<ValidConfig> validate_config(const BenchConfig& c) {
  ValidConfig v;
  v.raw = c;
  if (c.url.empty()) return usage("url", "--url is required");
  auto t = parse_url(c.url);
  if (!t) return t.error();
  v.target = *t;
  if (c.api_key.empty() == c.admin_key.empty())
    return usage("api_key", "give exactly one of --api-key or --admin-key");
  if (!valid_key_chars(c.api_key.empty() ? c.admin_key : c.api_key))
    return usage("api_key", "the key must be printable ASCII without spaces");

  if (!c.steps.empty()) {
    if (c.rate_per_s != 0 || c.duration_s != 0)
      return usage("steps", "--steps replaces --rate and --duration-s; give one or the other");
    auto s = parse_steps(c.steps);
    if (!s) return s.error();
    v.steps = *s;
  } else {
    if (!(c.rate_per_s > 0) || c.rate_per_s > 10'000'000 || !std::isfinite(c.rate_per_s))
      return usage("rate", "--rate must be in (0, 1e7] (or use --steps)");
    if (!(c.duration_s > 0) || c.duration_s > 86400)
      return usage("duration_s", "--duration-s must be in (0, 86400]");
    v.steps = {{c.rate_per_s, c.duration_s}};
  }

  if (c.connections < 1 || c.connections > kMaxConnections)
    return usage("connections", "--connections must be 1.." + std::to_string(kMaxConnections));
  int p = c.processes;
  if (p == 0) p = int((c.connections + 9999) / 10000);
  if (p < 1 || p > kMaxProcesses) return usage("processes", "--processes must be 1..64");
  if (p > c.connections) return usage("processes", "--processes must not exceed --connections");
  if (connections_of_worker(c.connections, p, 0) > kMaxConnectionsPerProcess)
    return usage("processes", "at most 15000 connections per process (open-files limit); raise --processes");
  v.processes = p;

  if (!c.source_addresses.empty()) {
    for (int k = 0; k < p; ++k) v.source_addresses.push_back(c.source_addresses[size_t(k) % c.source_addresses.size()]);
  } else {
    bool loopback = t->host.rfind("127.", 0) == 0 || t->host == "localhost";
    bool spread = p > 1 || c.connections > 10000;
    for (int k = 0; k < p; ++k)
      v.source_addresses.push_back(loopback && spread ? "127.0.0." + std::to_string(2 + k) : "");
  }

  if (c.amount_minor < 1) return usage("amount", "--amount must be >= 1 (minor units)");
  if (c.currency.size() != 3) return usage("currency", "--currency must be a 3-letter ISO 4217 code");
  for (double s : {c.decline_share, c.retry_share, c.duplicate_share})
    if (!(s >= 0 && s <= 1)) return usage("share", "--decline-share, --retry-share and --duplicate-share must be 0..1");
  if (c.retry_share + c.duplicate_share > 1) return usage("share", "--retry-share + --duplicate-share must be <= 1");
  if (c.approve_sources < 1 || c.approve_sources > 1'000'000)
    return usage("approve_sources", "--approve-sources must be 1..1000000");
  if (c.timeout_ms < 1 || c.timeout_ms > 600000) return usage("timeout_ms", "--timeout-ms must be 1..600000");
  if (!(c.settle_timeout_s >= 0) || c.settle_timeout_s > 86400)
    return usage("settle_timeout_s", "--settle-timeout-s must be 0..86400");
  if (c.verify_entries < 1 || c.verify_entries > 1'000'000)
    return usage("verify_entries", "--verify-entries must be 1..1000000 (use --no-reconcile to skip the checks)");
  for (int64_t pid : c.watch_pids)
    if (pid < 1) return usage("watch_pid", "--watch-pid must be a process id");
  if (!(c.progress_interval_s >= 0) || c.progress_interval_s > 3600)
    return usage("progress_interval_s", "--progress-interval-s must be 0..3600");
  if (c.connect_concurrency < 1 || c.connect_concurrency > 100000)
    return usage("connect_concurrency", "--connect-concurrency must be 1..100000");

  v.seed = c.seed ? c.seed : uint64_t(std::chrono::steady_clock::now().time_since_epoch().count());
  if (!c.run_id.empty()) {
    if (c.run_id.size() > 40 || !valid_key_chars(c.run_id) || c.run_id.find('"') != std::string::npos ||
        c.run_id.find('\\') != std::string::npos)
      return usage("run_id", "--run-id must be 1..40 printable characters without quotes or backslashes");
    v.run_id = c.run_id;
  } else {
    std::mt19937_64 rng(v.seed ^ uint64_t(std::chrono::system_clock::now().time_since_epoch().count()));
    static const char* hex = "0123456789abcdef";
    v.run_id = "b";
    for (int i = 0; i < 12; ++i) v.run_id += hex[rng() % 16];
  }
  return v;
}

}  // namespace ps::bench
