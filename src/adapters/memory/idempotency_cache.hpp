// In-process IdempotencyCache (embedded shape). Fast, non-authoritative: losing an entry
// never causes a duplicate because IntakeStore keeps (merchant, key) unique for ever: when
// the cache does not know a key, the store's accept answers created=false with the first
// record, which the API replays (or refuses as a mismatch).
// Thread-safety: thread-safe; 32 shards, each behind its own mutex.
// Bounds:
//  - done entries live `ttl`; in-flight entries live at most `in_flight_ttl` (a crashed
//    request cannot pin a key for ever);
//  - at most `max_entries` entries in total (expired entries are swept first, then the
//    oldest finished ones, then arbitrary ones);
//  - at most `max_bytes` of payload (composite key + fingerprint + the stored record's
//    strings, response body included; allocator overhead not counted). Each shard holds
//    max_bytes / 32. Over it, the oldest finished entries are evicted (never in-flight
//    ones); when in-flight entries alone leave no room, begin() answers the retryable
//    Error::unavailable "idempotency_cache_full" (the API answers 503).
#pragma once
#include <array>
#include <chrono>
#include <cstddef>
#include <list>
#include <mutex>
#include <string>
#include <unordered_map>

#include "ports/fast_state.hpp"

namespace ps {

class InMemoryIdempotencyCache final : public IdempotencyCache {
 public:
  static constexpr size_t kDefaultMaxBytes = size_t(256) << 20;  // 256 MiB

  explicit InMemoryIdempotencyCache(std::chrono::milliseconds ttl = std::chrono::hours(24),
                                    size_t max_entries = 1'000'000,
                                    std::chrono::milliseconds in_flight_ttl = std::chrono::minutes(5),
                                    size_t max_bytes = kDefaultMaxBytes);
  Result<Begin> begin(const std::string& merchant_id, const std::string& key,
                      const std::string& fingerprint, int64_t now_ms) override;
  void finish(const IdempotencyRecord& record, int64_t now_ms) override;
  void abandon(const std::string& merchant_id, const std::string& key) override;

  size_t size() const;   // entries currently held (expired ones included until swept)
  size_t bytes() const;  // payload bytes currently held (see Bounds above)

 private:
  static constexpr size_t kShards = 32;
  struct Entry {
    State state = State::in_flight;
    std::string fingerprint;
    std::optional<IdempotencyRecord> record;
    int64_t expires_ms = 0;
    size_t bytes = 0;
    bool in_done_order = false;
    std::list<const std::string*>::iterator done_pos;  // valid when in_done_order
  };
  using Map = std::unordered_map<std::string, Entry>;
  struct Shard {
    mutable std::mutex mu;
    Map map;
    std::list<const std::string*> done_order;  // finished entries, oldest first (keys owned by map)
    size_t bytes = 0;
    int64_t next_sweep_ms = 0;
  };
  Shard& shard_for(const std::string& k);
  void make_room(Shard& s, int64_t now_ms);                 // with s.mu held (entry count)
  bool fit_bytes(Shard& s, size_t incoming);                // with s.mu held; false: no room
  Map::iterator erase(Shard& s, Map::iterator it);          // with s.mu held; keeps the books
  static size_t entry_bytes(const std::string& k, const Entry& e);

  int64_t ttl_ms_;
  int64_t in_flight_ttl_ms_;
  size_t max_per_shard_;
  size_t max_bytes_per_shard_;
  std::array<Shard, kShards> shards_;
};

}  // namespace ps
