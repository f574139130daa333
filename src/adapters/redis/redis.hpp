// Redis adapters (hiredis). This header is free of hiredis includes.
//
// Two logical targets (SPEC §5):
// * durable (maxmemory-policy noeviction): idempotency records, rate-limit buckets, fraud
//   velocity windows — RedisIdempotencyCache, RedisRateLimiter, RedisVelocityCounter;
// * cache (allkeys-lru): API-key sessions and payment status — RedisCachedMerchants,
//   RedisCachedPayments (decorators over the durable store's ports), with TTLs per kind.
// Every call has a timeout (RedisOptions::timeout_ms); a connection that failed is
// replaced on the next call. Each RedisClient also has a circuit breaker (SPEC §2.6): after
// breaker_failures consecutive I/O or timeout failures every call fails fast (unavailable
// "redis_circuit_open", retryable) for breaker_open_ms, then one trial call goes through
// (half-open) and its success closes it — so a black-holed Redis costs its callers one
// timeout per open interval, not one per call. Error replies (NOSCRIPT, OOM, ...) come from
// a working server: they count as successes. What happens when Redis fails (docs/DECISIONS.md):
// * idempotency begin(): error → "started" (the durable store's unique constraint
//   decides; a retry of a finished request is still replayed from the database);
// * rate limiter: error → allowed (fail open, counted in paystream_redis_errors_total);
// * velocity counter: error → the error (the fraud stage's own fallback applies);
// * caches: error → read-through to the wrapped store.
// Keys are prefixed with RedisOptions::key_prefix (tests use a unique prefix each).
// Metrics: paystream_cache_requests_total{namespace,result="hit"|"miss"},
//   paystream_redis_errors_total{target}, paystream_redis_evictions_total{target} (growth
//   of INFO stats evicted_keys, sampled by RedisEvictionsMonitor), paystream_redis_call_seconds{target},
//   paystream_circuit_state{dependency="redis-<name>"} (0 closed, 1 open, 2 half-open; as
//   src/stages/resilience.hpp). Calls refused by the open breaker count as errors too.
#pragma once
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/result.hpp"
#include "ports/fast_state.hpp"
#include "ports/stores.hpp"

namespace ps {

struct RedisOptions {
  std::string url;             // redis://host:port[/db]
  std::string name = "durable";// metric label: "durable" or "cache"
  std::string key_prefix;      // e.g. "ps:"; tests: unique per test
  int timeout_ms = 250;        // connect and per-command timeout
  size_t pool_size = 8;        // connections (one command in flight per connection)
  int breaker_failures = 5;    // consecutive I/O/timeout failures that open the breaker
  int breaker_open_ms = 2000;  // how long it stays open before a half-open trial
};

// A small pool of hiredis connections with per-call timeouts and reconnect.
class RedisClient {
 public:
  static Result<std::unique_ptr<RedisClient>> open(const RedisOptions& opts);
  ~RedisClient();
  const RedisOptions& options() const;
  // Runs one command (argv form). The reply flattened: strings/integers as strings, nil
  // as nullopt, arrays as their elements. Errors: unavailable (retryable) on I/O or
  // timeout or while the breaker is open ("redis_circuit_open"), internal on a Redis
  // error reply.
  struct Reply {
    enum class Type { nil, integer, string, status, array, error } type = Type::nil;
    int64_t integer = 0;
    std::string str;
    std::vector<Reply> elements;
  };
  Result<Reply> command(const std::vector<std::string>& argv);
  Result<void> ping();
  Result<void> flushall();  // tests and the FLUSHALL fault test
  struct Impl;
 private:
  explicit RedisClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// In-flight records are leases: a gateway killed mid-request leaves its key "in flight" in
// the shared Redis, so the lease (default 15 s, longer than any request's store and publish
// timeouts) bounds how long retries of that key see 409 before one may proceed — the
// database's unique constraint still decides what happens then.
class RedisIdempotencyCache final : public IdempotencyCache {
 public:
  RedisIdempotencyCache(RedisClient& redis, std::chrono::seconds ttl,
                        std::chrono::milliseconds in_flight_lease = std::chrono::seconds(15));
  Result<Begin> begin(const std::string& merchant_id, const std::string& key,
                      const std::string& fingerprint, int64_t now_ms) override;
  void finish(const IdempotencyRecord& record, int64_t now_ms) override;
  void abandon(const std::string& merchant_id, const std::string& key) override;
 private:
  RedisClient& redis_;
  std::chrono::seconds ttl_;
  std::chrono::milliseconds lease_;
};

// Token bucket in one Lua script (atomic across gateways).
class RedisRateLimiter final : public RateLimiter {
 public:
  explicit RedisRateLimiter(RedisClient& redis);
  Result<Decision> take(const std::string& bucket_key, double rate_per_s, int64_t burst,
                        int64_t now_ms) override;
 private:
  RedisClient& redis_;
};

// Sliding window in a sorted set, one Lua script per hit.
class RedisVelocityCounter final : public VelocityCounter {
 public:
  explicit RedisVelocityCounter(RedisClient& redis);
  Result<int64_t> hit(const std::string& key, int64_t now_ms, int64_t window_ms) override;
 private:
  RedisClient& redis_;
};

// API-key sessions (namespace "session"): key hash -> merchant, TTL session_ttl.
class RedisCachedMerchants final : public MerchantStore {
 public:
  RedisCachedMerchants(MerchantStore& inner, RedisClient& cache, std::chrono::seconds session_ttl);
  Result<void> create_merchant(const Merchant& m) override;          // store, then cache
  Result<std::optional<Merchant>> find_merchant_by_key_hash(const std::string& key_hash) override;
  Result<std::vector<Merchant>> all_merchants() override;             // also warms the cache
  // Store, then drop the cached sessions of the merchant's other keys.
  Result<std::optional<std::vector<Merchant>>> rotate_api_key(const std::string& merchant_id,
                                                                 const std::string& new_key_hash, int64_t now_ms,
                                                                 int64_t old_keys_expire_ms) override;
 private:
  MerchantStore& inner_;
  RedisClient& cache_;
  std::chrono::seconds ttl_;
};

// Payment status (namespace "payment"): get_payment served from the cache; put() is the
// write-through on status change (wire it to PgStore::set_payment_change_listener).
// Processing payments are cached with processing_ttl, terminal ones with terminal_ttl;
// only terminal entries are served (a processing entry counts as a miss and reads through),
// so a status change committed elsewhere is never hidden by the cache.
class RedisCachedPayments final : public PaymentQueries {
 public:
  RedisCachedPayments(PaymentQueries& inner, RedisClient& cache, std::chrono::seconds processing_ttl,
                      std::chrono::seconds terminal_ttl);
  void put(const std::vector<Payment>& changed);
  // Before /readyz: fills the cache with the newest terminal payments of each merchant (at
  // most per_merchant each, read through the store's newest-first index, max_total in all;
  // entries already there and newer are kept). Returns how many were written; a Redis
  // failure stops the warm-up (the cache is optional), a store failure is returned.
  Result<size_t> warm(const std::vector<std::string>& merchant_ids, size_t per_merchant, size_t max_total);
  Result<std::optional<Payment>> get_payment(const std::string& merchant_id,
                                             const std::string& payment_id) override;
  Result<std::vector<Payment>> list_payments(const std::string& merchant_id,
                                             std::optional<PaymentStatus> status,
                                             const Page& page) override;
  Result<std::optional<Refund>> get_refund(const std::string& merchant_id,
                                           const std::string& refund_id) override;
  Result<std::vector<Balance>> balances(const std::string& merchant_id) override;
  Result<std::vector<JournalEntry>> entries_for_payment(const std::string& merchant_id,
                                                        const std::string& payment_id) override;
 private:
  PaymentQueries& inner_;
  RedisClient& cache_;
  std::chrono::seconds processing_ttl_, terminal_ttl_;
};

// Samples INFO stats every interval and counts evicted keys per target.
class RedisEvictionsMonitor {
 public:
  RedisEvictionsMonitor(std::vector<RedisClient*> clients, std::chrono::milliseconds interval);
  ~RedisEvictionsMonitor();
  void refresh_once();
  struct Impl;
 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace ps
