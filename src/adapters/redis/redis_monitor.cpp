// RedisEvictionsMonitor: a background thread that reads INFO stats from every target and
// counts evictions as paystream_redis_evictions_total{target}. INFO's evicted_keys is
// cumulative since the Redis server started: the counter adds what it grew by since the
// last sample (from 0 at this process's first sample; after a Redis restart, when the
// value went down, the new value is what was evicted since), so rate() and increase()
// work across restarts of either side. On the noeviction target it stays 0 (a full
// instance refuses writes instead, counted as errors); on the LRU cache target it shows
// how hard the cache is being squeezed.
#include <mutex>
#include <optional>

#include "adapters/redis/redis.hpp"
#include "adapters/redis/redis_internal.hpp"
#include "common/metrics.hpp"
#include "common/periodic.hpp"

namespace ps {
namespace {

std::optional<double> info_field(const std::string& info, const std::string& name) {
  const std::string needle = name + ":";
  size_t pos = 0;
  while ((pos = info.find(needle, pos)) != std::string::npos) {
    if (pos == 0 || info[pos - 1] == '\n') {
      size_t end = info.find_first_of("\r\n", pos);
      std::string v = info.substr(pos + needle.size(), end == std::string::npos ? std::string::npos : end - pos - needle.size());
      char* stop = nullptr;
      double d = std::strtod(v.c_str(), &stop);
      if (!v.empty() && stop && *stop == '\0') return d;
      return std::nullopt;
    }
    pos += needle.size();
  }
  return std::nullopt;
}

std::atomic<int64_t> monitor_warned{0};

metrics::Counter& evictions_counter(const std::string& target) {
  return metrics::registry().counter("paystream_redis_evictions_total",
                                     "Keys Redis evicted (growth of INFO stats evicted_keys)", {{"target", target}});
}

}  // namespace

struct RedisEvictionsMonitor::Impl {
  std::vector<RedisClient*> clients;
  std::vector<std::optional<double>> last;  // evicted_keys at the previous sample, per client
  std::mutex sample_mu;  // refresh_once may be called by a test beside the thread
  std::unique_ptr<Periodic> thread;  // last: stopped first
};

RedisEvictionsMonitor::RedisEvictionsMonitor(std::vector<RedisClient*> clients, std::chrono::milliseconds interval)
    : impl_(std::make_unique<Impl>()) {
  impl_->clients = std::move(clients);
  impl_->last.resize(impl_->clients.size());
  for (RedisClient* c : impl_->clients) evictions_counter(c->options().name);  // the series exists at 0
  impl_->thread = std::make_unique<Periodic>(interval, [this] { refresh_once(); });
}

RedisEvictionsMonitor::~RedisEvictionsMonitor() { impl_->thread.reset(); }

void RedisEvictionsMonitor::refresh_once() {
  std::lock_guard l(impl_->sample_mu);
  for (size_t i = 0; i < impl_->clients.size(); ++i) {
    RedisClient* c = impl_->clients[i];
    auto r = c->command({"INFO", "stats"});
    if (!r) {
      redis_detail::warn_throttled(monitor_warned, "redis INFO failed", c->options().name, r.error());
      continue;
    }
    auto v = info_field(r->str, "evicted_keys");
    if (!v) continue;
    std::optional<double>& last = impl_->last[i];
    if (last) evictions_counter(c->options().name).inc(*v >= *last ? *v - *last : *v);
    last = *v;
  }
}

}  // namespace ps
