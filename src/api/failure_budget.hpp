// FailureBudget: token buckets of failed API-key lookups, one per client address. A key in
// no cache costs a store read; a client that sends unknown keys spends its own bucket and,
// once it is empty, gets 429 without a lookup, while other clients keep theirs (one
// flooding client must not get every other client's cache misses refused). Tokens are
// spent only by failures; they come back at `rate` per second up to `burst`.
//
// Bounded: at most max_clients buckets. When full, buckets that are full again (idle
// clients) are dropped first; if none is, the map is cleared (clients then start full,
// which errs on the side of answering).
#pragma once
#include <algorithm>
#include <cstdint>
#include <iterator>
#include <mutex>
#include <string>
#include <unordered_map>

namespace ps {

class FailureBudget {
 public:
  FailureBudget(double rate_per_s, int64_t burst, size_t max_clients = 16384)
      : rate_(std::max(0.0, rate_per_s)), cap_(double(std::max<int64_t>(1, burst))), max_clients_(max_clients) {}

  // True if `client` may spend a lookup now (it has a token).
  bool allows(const std::string& client, int64_t now_ms) {
    std::lock_guard lk(mu_);
    auto it = buckets_.find(client);
    if (it == buckets_.end()) return true;  // never failed: full
    return refill(it->second, now_ms) + 1e-9 >= 1.0;
  }
  // A lookup of `client` found no merchant: one token spent.
  void spend(const std::string& client, int64_t now_ms) {
    std::lock_guard lk(mu_);
    auto it = buckets_.find(client);
    if (it == buckets_.end()) {
      if (buckets_.size() >= max_clients_) evict(now_ms);
      it = buckets_.emplace(client, Bucket{cap_, now_ms}).first;
    }
    Bucket& b = it->second;
    b.tokens = std::max(0.0, refill(b, now_ms) - 1.0);
  }
  size_t clients() const {
    std::lock_guard lk(mu_);
    return buckets_.size();
  }

 private:
  struct Bucket {
    double tokens;
    int64_t last_ms;
  };
  double refill(Bucket& b, int64_t now_ms) const {
    if (now_ms > b.last_ms) {
      b.tokens = std::min(cap_, b.tokens + double(now_ms - b.last_ms) * rate_ / 1000.0);
      b.last_ms = now_ms;
    }
    return b.tokens;
  }
  void evict(int64_t now_ms) {
    for (auto it = buckets_.begin(); it != buckets_.end();)
      it = refill(it->second, now_ms) >= cap_ ? buckets_.erase(it) : std::next(it);
    if (buckets_.size() >= max_clients_) buckets_.clear();
  }

  const double rate_, cap_;
  const size_t max_clients_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, Bucket> buckets_;
};

}  // namespace ps
