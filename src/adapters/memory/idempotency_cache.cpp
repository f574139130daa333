#include "adapters/memory/idempotency_cache.hpp"

#include <functional>

namespace ps {
namespace {
std::string compose(const std::string& merchant_id, const std::string& key) {
  std::string k;
  k.reserve(merchant_id.size() + key.size() + 1);
  k += merchant_id;
  k += '\x1f';
  k += key;
  return k;
}
constexpr int64_t kSweepEveryMs = 10'000;
}  // namespace

InMemoryIdempotencyCache::InMemoryIdempotencyCache(std::chrono::milliseconds ttl, size_t max_entries,
                                                   std::chrono::milliseconds in_flight_ttl)
    : ttl_ms_(ttl.count()),
      in_flight_ttl_ms_(std::min<int64_t>(in_flight_ttl.count(), ttl.count())),
      max_per_shard_(std::max<size_t>(1, max_entries / kShards)) {}

InMemoryIdempotencyCache::Shard& InMemoryIdempotencyCache::shard_for(const std::string& k) {
  return shards_[std::hash<std::string>{}(k) % kShards];
}

void InMemoryIdempotencyCache::make_room(Shard& s, int64_t now_ms) {
  if (now_ms >= s.next_sweep_ms || s.map.size() >= max_per_shard_) {
    for (auto it = s.map.begin(); it != s.map.end();) {
      if (it->second.expires_ms <= now_ms) it = s.map.erase(it);
      else ++it;
    }
    s.next_sweep_ms = now_ms + kSweepEveryMs;
  }
  // Still full: evict finished entries first, then anything (non-authoritative cache).
  for (auto it = s.map.begin(); s.map.size() >= max_per_shard_ && it != s.map.end();) {
    if (it->second.state == State::done) it = s.map.erase(it);
    else ++it;
  }
  while (s.map.size() >= max_per_shard_) s.map.erase(s.map.begin());
}

Result<IdempotencyCache::Begin> InMemoryIdempotencyCache::begin(const std::string& merchant_id,
                                                                const std::string& key,
                                                                const std::string& fingerprint,
                                                                int64_t now_ms) {
  std::string k = compose(merchant_id, key);
  Shard& s = shard_for(k);
  std::lock_guard lk(s.mu);
  auto it = s.map.find(k);
  if (it != s.map.end() && it->second.expires_ms > now_ms) {
    Begin b;
    b.state = it->second.state;
    b.fingerprint = it->second.fingerprint;
    b.record = it->second.record;
    return b;
  }
  if (it != s.map.end()) s.map.erase(it);
  make_room(s, now_ms);
  Entry e;
  e.state = State::in_flight;
  e.fingerprint = fingerprint;
  e.expires_ms = now_ms + in_flight_ttl_ms_;
  s.map.emplace(std::move(k), std::move(e));
  Begin b;
  b.state = State::started;
  b.fingerprint = fingerprint;
  return b;
}

void InMemoryIdempotencyCache::finish(const IdempotencyRecord& record, int64_t now_ms) {
  std::string k = compose(record.merchant_id, record.key);
  Shard& s = shard_for(k);
  std::lock_guard lk(s.mu);
  auto it = s.map.find(k);
  if (it == s.map.end()) {
    make_room(s, now_ms);
    it = s.map.emplace(std::move(k), Entry{}).first;
  }
  it->second.state = State::done;
  it->second.fingerprint = record.fingerprint;
  it->second.record = record;
  it->second.expires_ms = now_ms + ttl_ms_;
}

void InMemoryIdempotencyCache::abandon(const std::string& merchant_id, const std::string& key) {
  std::string k = compose(merchant_id, key);
  Shard& s = shard_for(k);
  std::lock_guard lk(s.mu);
  auto it = s.map.find(k);
  if (it != s.map.end() && it->second.state == State::in_flight) s.map.erase(it);
}

size_t InMemoryIdempotencyCache::size() const {
  size_t n = 0;
  for (const auto& s : shards_) {
    std::lock_guard lk(s.mu);
    n += s.map.size();
  }
  return n;
}

}  // namespace ps
