// Fast, non-authoritative state: idempotency records (24 h), rate-limit buckets, fraud
// velocity windows. Losing all of it must never cause a duplicate charge or posting:
// the durable store decides. Embedded: in-process; distributed: Redis.
// Thread-safety: implementations are thread-safe.
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include "common/result.hpp"
#include "ports/stores.hpp"

namespace ps {

class IdempotencyCache {
 public:
  enum class State { started, in_flight, done };
  struct Begin {
    State state = State::started;  // started: the caller now owns the key until finish/abandon
    std::string fingerprint;       // in_flight/done: the fingerprint stored first
    std::optional<IdempotencyRecord> record;  // done: the response to replay
  };
  virtual ~IdempotencyCache() = default;
  virtual Result<Begin> begin(const std::string& merchant_id, const std::string& key,
                              const std::string& fingerprint, int64_t now_ms) = 0;
  virtual void finish(const IdempotencyRecord& record, int64_t now_ms) = 0;  // in_flight -> done
  virtual void abandon(const std::string& merchant_id, const std::string& key) = 0;
};

class RateLimiter {
 public:
  struct Decision {
    bool allowed = true;
    int64_t limit = 0;        // burst (RateLimit-Limit)
    int64_t remaining = 0;    // tokens left (RateLimit-Remaining)
    int64_t reset_s = 0;      // seconds until the bucket is full again (RateLimit-Reset)
    int64_t retry_after_s = 0;// when refused: seconds until one token (Retry-After)
  };
  virtual ~RateLimiter() = default;
  virtual Result<Decision> take(const std::string& bucket_key, double rate_per_s, int64_t burst,
                                int64_t now_ms) = 0;
};

// Sliding-window counter: records a hit and returns the number of hits for `key` in
// (now_ms - window_ms, now_ms], this one included.
class VelocityCounter {
 public:
  virtual ~VelocityCounter() = default;
  virtual Result<int64_t> hit(const std::string& key, int64_t now_ms, int64_t window_ms) = 0;
};

}  // namespace ps
