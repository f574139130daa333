#include "adapters/memory/rate_limiter.hpp"

#include <algorithm>
#include <cmath>
#include <functional>

namespace ps {

InMemoryRateLimiter::InMemoryRateLimiter(size_t max_buckets)
    : max_per_shard_(std::max<size_t>(1, max_buckets / kShards)) {}

namespace {
// Refill accumulates fractions of a token in floating point (0.3 + 0.6 + 0.1 < 1.0). A bucket
// a rounding error short of a whole token counts as holding it; otherwise a caller that
// honours Retry-After can be refused again at exactly the promised time.
constexpr double kTokenEpsilon = 1e-9;

// Seconds reported in headers are clamped to [0, kMaxReportedS] before the double -> int64
// conversion (an out-of-range conversion is undefined behaviour; NaN maps to the maximum).
constexpr int64_t kMaxReportedS = 1'000'000'000;  // ~31 years
int64_t clamp_to(double v, int64_t hi) {
  if (v != v || v >= double(hi)) return hi;  // double(hi) may round up: then v < 2^63 below
  if (!(v > 0)) return 0;
  return int64_t(v);
}
int64_t clamp_seconds(double s) { return clamp_to(s, kMaxReportedS); }

double refilled(double tokens, int64_t last_ms, int64_t now_ms, double rate, int64_t burst) {
  int64_t elapsed = std::max<int64_t>(0, now_ms - last_ms);
  return std::min(double(burst), tokens + double(elapsed) * rate / 1000.0);
}
}  // namespace

Result<RateLimiter::Decision> InMemoryRateLimiter::take(const std::string& key, double rate_per_s,
                                                        int64_t burst, int64_t now_ms) {
  if (!(rate_per_s > 0) || !std::isfinite(rate_per_s) || burst < 1)
    return Error::invalid("rate_limit_invalid", "rate must be finite and > 0, and burst >= 1");
  Shard& s = shards_[std::hash<std::string>{}(key) % kShards];
  std::lock_guard lk(s.mu);
  auto it = s.map.find(key);
  if (it == s.map.end()) {
    if (s.map.size() >= max_per_shard_) {
      for (auto j = s.map.begin(); j != s.map.end();) {
        const Bucket& b = j->second;
        if (refilled(b.tokens, b.last_ms, now_ms, b.rate_per_s, b.burst) >= double(b.burst)) j = s.map.erase(j);
        else ++j;
      }
      while (s.map.size() >= max_per_shard_) s.map.erase(s.map.begin());
    }
    it = s.map.emplace(key, Bucket{double(burst), now_ms, rate_per_s, burst}).first;
  }
  Bucket& b = it->second;
  // A changed configuration applies from now on; tokens never exceed the new burst.
  b.tokens = refilled(b.tokens, b.last_ms, now_ms, b.rate_per_s, b.burst);
  b.rate_per_s = rate_per_s;
  b.burst = burst;
  b.tokens = std::min(b.tokens, double(burst));
  b.last_ms = std::max(b.last_ms, now_ms);

  Decision d;
  d.limit = burst;
  if (b.tokens + kTokenEpsilon >= 1.0) {
    b.tokens = std::max(0.0, b.tokens - 1.0);
    d.allowed = true;
  } else {
    d.allowed = false;
    d.retry_after_s = std::max<int64_t>(1, clamp_seconds(std::ceil((1.0 - b.tokens) / rate_per_s)));
  }
  d.remaining = clamp_to(std::floor(b.tokens + kTokenEpsilon), burst);
  d.reset_s = clamp_seconds(std::ceil(std::max(0.0, double(burst) - b.tokens - kTokenEpsilon) / rate_per_s));
  return d;
}

}  // namespace ps
