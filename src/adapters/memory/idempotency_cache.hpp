// In-process IdempotencyCache (embedded shape). Fast, non-authoritative: losing an entry
// never causes a duplicate because IntakeStore keeps (merchant, key) unique for ever.
// Thread-safety: thread-safe; 32 shards, each behind its own mutex.
// Bounds: done entries live `ttl`; in-flight entries live at most `in_flight_ttl` (a crashed
// request cannot pin a key for ever); at most `max_entries` entries in total (expired entries
// are swept first, then arbitrary entries are evicted — the durable store still decides).
#pragma once
#include <array>
#include <chrono>
#include <cstddef>
#include <mutex>
#include <string>
#include <unordered_map>

#include "ports/fast_state.hpp"

namespace ps {

class InMemoryIdempotencyCache final : public IdempotencyCache {
 public:
  explicit InMemoryIdempotencyCache(std::chrono::milliseconds ttl = std::chrono::hours(24),
                                    size_t max_entries = 1'000'000,
                                    std::chrono::milliseconds in_flight_ttl = std::chrono::minutes(5));
  Result<Begin> begin(const std::string& merchant_id, const std::string& key,
                      const std::string& fingerprint, int64_t now_ms) override;
  void finish(const IdempotencyRecord& record, int64_t now_ms) override;
  void abandon(const std::string& merchant_id, const std::string& key) override;

  size_t size() const;  // entries currently held (expired ones included until swept)

 private:
  static constexpr size_t kShards = 32;
  struct Entry {
    State state = State::in_flight;
    std::string fingerprint;
    std::optional<IdempotencyRecord> record;
    int64_t expires_ms = 0;
  };
  struct Shard {
    mutable std::mutex mu;
    std::unordered_map<std::string, Entry> map;
    int64_t next_sweep_ms = 0;
  };
  Shard& shard_for(const std::string& k);
  void make_room(Shard& s, int64_t now_ms);  // with s.mu held

  int64_t ttl_ms_;
  int64_t in_flight_ttl_ms_;
  size_t max_per_shard_;
  std::array<Shard, kShards> shards_;
};

}  // namespace ps
