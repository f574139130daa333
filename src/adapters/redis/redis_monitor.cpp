// RedisEvictionsMonitor: a background thread that reads INFO stats from every target and
// exports evicted_keys as paystream_redis_evicted_keys{target}. On the noeviction target
// it stays 0 (a full instance refuses writes instead, counted as errors); on the LRU
// cache target it shows how hard the cache is being squeezed.
#include <condition_variable>
#include <mutex>
#include <thread>

#include "adapters/redis/redis.hpp"
#include "adapters/redis/redis_internal.hpp"
#include "common/metrics.hpp"

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

}  // namespace

struct RedisEvictionsMonitor::Impl {
  std::vector<RedisClient*> clients;
  std::chrono::milliseconds interval;
  std::mutex mu;
  std::condition_variable cv;
  bool stopping = false;
  std::thread thread;
};

RedisEvictionsMonitor::RedisEvictionsMonitor(std::vector<RedisClient*> clients, std::chrono::milliseconds interval)
    : impl_(std::make_unique<Impl>()) {
  impl_->clients = std::move(clients);
  impl_->interval = std::max(interval, std::chrono::milliseconds(10));
  impl_->thread = std::thread([this] {
    Impl& im = *impl_;
    std::unique_lock lk(im.mu);
    while (!im.stopping) {
      lk.unlock();
      refresh_once();
      lk.lock();
      im.cv.wait_for(lk, im.interval, [&] { return im.stopping; });
    }
  });
}

RedisEvictionsMonitor::~RedisEvictionsMonitor() {
  {
    std::lock_guard lk(impl_->mu);
    impl_->stopping = true;
  }
  impl_->cv.notify_all();
  if (impl_->thread.joinable()) impl_->thread.join();
}

void RedisEvictionsMonitor::refresh_once() {
  for (RedisClient* c : impl_->clients) {
    auto r = c->command({"INFO", "stats"});
    if (!r) {
      redis_detail::warn_throttled(monitor_warned, "redis INFO failed", c->options().name, r.error());
      continue;
    }
    if (auto v = info_field(r->str, "evicted_keys"))
      metrics::registry()
          .gauge("paystream_redis_evicted_keys", "Keys evicted by Redis (INFO stats evicted_keys)",
                 {{"target", c->options().name}})
          .set(*v);
  }
}

}  // namespace ps
