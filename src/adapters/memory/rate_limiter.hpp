// In-process token-bucket RateLimiter (embedded shape). One bucket per key, refilled at
// rate_per_s up to burst; each take() consumes one token.
// Thread-safety: thread-safe; 32 shards, each behind its own mutex.
// Bounds: at most `max_buckets` buckets; when full, buckets that have refilled completely
// (idle) are dropped — dropping a full bucket is loss-free — then arbitrary ones.
// Inputs: rate_per_s must be finite and > 0, burst >= 1 (else Error::invalid). Reported
// seconds (reset_s, retry_after_s) are clamped to [0, 1e9] before any double -> int64
// conversion, so extreme rates (1e-300/s) never overflow.
#pragma once
#include <array>
#include <cstddef>
#include <mutex>
#include <string>
#include <unordered_map>

#include "ports/fast_state.hpp"

namespace ps {

class InMemoryRateLimiter final : public RateLimiter {
 public:
  explicit InMemoryRateLimiter(size_t max_buckets = 1'000'000);
  Result<Decision> take(const std::string& bucket_key, double rate_per_s, int64_t burst,
                        int64_t now_ms) override;

 private:
  static constexpr size_t kShards = 32;
  struct Bucket {
    double tokens = 0;
    int64_t last_ms = 0;
    double rate_per_s = 0;
    int64_t burst = 0;
  };
  struct Shard {
    std::mutex mu;
    std::unordered_map<std::string, Bucket> map;
  };
  size_t max_per_shard_;
  std::array<Shard, kShards> shards_;
};

}  // namespace ps
