#include "adapters/memory/idempotency_cache.hpp"

#include <algorithm>
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
                                                   std::chrono::milliseconds in_flight_ttl, size_t max_bytes)
    : ttl_ms_(ttl.count()),
      in_flight_ttl_ms_(std::min<int64_t>(in_flight_ttl.count(), ttl.count())),
      max_per_shard_(std::max<size_t>(1, max_entries / kShards)),
      max_bytes_per_shard_(std::max<size_t>(1, max_bytes / kShards)) {}

InMemoryIdempotencyCache::Shard& InMemoryIdempotencyCache::shard_for(const std::string& k) {
  return shards_[std::hash<std::string>{}(k) % kShards];
}

size_t InMemoryIdempotencyCache::entry_bytes(const std::string& k, const Entry& e) {
  size_t n = k.size() + e.fingerprint.size();
  if (e.record)
    n += e.record->merchant_id.size() + e.record->key.size() + e.record->fingerprint.size() +
         e.record->response_body.size() + e.record->resource_id.size();
  return n;
}

InMemoryIdempotencyCache::Map::iterator InMemoryIdempotencyCache::erase(Shard& s, Map::iterator it) {
  if (it->second.in_done_order) s.done_order.erase(it->second.done_pos);
  s.bytes -= it->second.bytes;
  return s.map.erase(it);
}

void InMemoryIdempotencyCache::make_room(Shard& s, int64_t now_ms) {
  if (now_ms >= s.next_sweep_ms || s.map.size() >= max_per_shard_) {
    for (auto it = s.map.begin(); it != s.map.end();) {
      if (it->second.expires_ms <= now_ms) it = erase(s, it);
      else ++it;
    }
    s.next_sweep_ms = now_ms + kSweepEveryMs;
  }
  // Still full: evict the oldest finished entries first, then anything (non-authoritative).
  while (s.map.size() >= max_per_shard_ && !s.done_order.empty())
    erase(s, s.map.find(*s.done_order.front()));
  while (s.map.size() >= max_per_shard_) erase(s, s.map.begin());
}

bool InMemoryIdempotencyCache::fit_bytes(Shard& s, size_t incoming) {
  while (s.bytes + incoming > max_bytes_per_shard_ && !s.done_order.empty())
    erase(s, s.map.find(*s.done_order.front()));
  return s.bytes + incoming <= max_bytes_per_shard_;
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
  if (it != s.map.end()) erase(s, it);
  make_room(s, now_ms);
  Entry e;
  e.state = State::in_flight;
  e.fingerprint = fingerprint;
  e.expires_ms = now_ms + in_flight_ttl_ms_;
  e.bytes = entry_bytes(k, e);
  if (!fit_bytes(s, e.bytes))
    return Error::unavailable("idempotency_cache_full",
                              "too many requests in flight for the idempotency cache's memory budget");
  s.bytes += e.bytes;
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
  Entry& e = it->second;
  s.bytes -= e.bytes;
  if (e.in_done_order) s.done_order.erase(e.done_pos);
  e.state = State::done;
  e.fingerprint = record.fingerprint;
  e.record = record;
  e.expires_ms = now_ms + ttl_ms_;
  e.bytes = entry_bytes(it->first, e);
  e.done_pos = s.done_order.insert(s.done_order.end(), &it->first);
  e.in_done_order = true;
  s.bytes += e.bytes;
  // Over the byte budget: the oldest finished entries go (possibly this one, if in-flight
  // entries fill the shard); a forgotten key is answered from the durable store.
  fit_bytes(s, 0);
}

void InMemoryIdempotencyCache::abandon(const std::string& merchant_id, const std::string& key) {
  std::string k = compose(merchant_id, key);
  Shard& s = shard_for(k);
  std::lock_guard lk(s.mu);
  auto it = s.map.find(k);
  if (it != s.map.end() && it->second.state == State::in_flight) erase(s, it);
}

size_t InMemoryIdempotencyCache::size() const {
  size_t n = 0;
  for (const auto& s : shards_) {
    std::lock_guard lk(s.mu);
    n += s.map.size();
  }
  return n;
}

size_t InMemoryIdempotencyCache::bytes() const {
  size_t n = 0;
  for (const auto& s : shards_) {
    std::lock_guard lk(s.mu);
    n += s.bytes;
  }
  return n;
}

}  // namespace ps
