#include "adapters/memory/velocity_counter.hpp"

#include <algorithm>
#include <functional>

namespace ps {

InMemoryVelocityCounter::InMemoryVelocityCounter(VelocityCounterOptions opts) : opts_(opts) {}

void InMemoryVelocityCounter::sweep_locked(Stripe& s, int64_t now_ms) {
  for (auto it = s.keys.begin(); it != s.keys.end();) {
    const auto& w = it->second;
    if (w.hits.empty() || w.hits.back() <= now_ms - w.window_ms) it = s.keys.erase(it);
    else ++it;
  }
}

Result<int64_t> InMemoryVelocityCounter::hit(const std::string& key, int64_t now_ms, int64_t window_ms) {
  if (window_ms <= 0) return Error::invalid("window_invalid", "velocity window must be positive", "window_ms");
  Stripe& s = stripes_[std::hash<std::string>{}(key) % kStripes];
  const size_t per_stripe_max = std::max<size_t>(1, opts_.max_keys / kStripes);
  std::lock_guard lk(s.mu);
  auto it = s.keys.find(key);
  if (it == s.keys.end()) {
    if (s.keys.size() >= per_stripe_max) sweep_locked(s, now_ms);
    if (s.keys.size() >= per_stripe_max) return int64_t{1};
    it = s.keys.emplace(key, Window{}).first;
  }
  Window& w = it->second;
  w.window_ms = window_ms;
  // Insert keeping order (clocks of several processes may disagree slightly).
  w.hits.insert(std::upper_bound(w.hits.begin(), w.hits.end(), now_ms), now_ms);
  const int64_t cutoff = now_ms - window_ms;
  while (!w.hits.empty() && w.hits.front() <= cutoff) w.hits.pop_front();
  while (w.hits.size() > std::max<size_t>(1, opts_.max_per_key)) w.hits.pop_front();
  // Hits in (now - window, now]: later timestamps (from a skewed caller) are not counted.
  auto end = std::upper_bound(w.hits.begin(), w.hits.end(), now_ms);
  return static_cast<int64_t>(end - w.hits.begin());
}

size_t InMemoryVelocityCounter::key_count() const {
  size_t n = 0;
  for (const auto& s : stripes_) {
    std::lock_guard lk(s.mu);
    n += s.keys.size();
  }
  return n;
}

}  // namespace ps
