// Fast-state contract (ports/fast_state.hpp): IdempotencyCache, RateLimiter and
// VelocityCounter. Every suite runs over a factory, so another adapter (Redis) is added by
// appending one factory to the INSTANTIATE line of each suite. All times are injected
// (now_ms); nothing here sleeps. Instantiated for the in-memory adapters and for Redis
// (a real server: PAYSTREAM_REDIS_URL, the noeviction instance; each test gets its own
// key prefix, so tests may share the server).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "adapters/memory/idempotency_cache.hpp"
#include "adapters/memory/rate_limiter.hpp"
#include "adapters/memory/velocity_counter.hpp"
#include "adapters/redis/redis.hpp"
#include "domain/ids.hpp"
#include "ports/fast_state.hpp"

namespace ps::contract {
namespace {
using namespace std::chrono_literals;
using State = IdempotencyCache::State;

constexpr int64_t kT0 = 1'700'000'000'000;  // a realistic epoch-ms start
constexpr int kThreads = 16;

// Starts `n` threads that run `body(i)` as close to simultaneously as possible.
void race(int n, const std::function<void(int)>& body) {
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> ts;
  ts.reserve(size_t(n));
  for (int i = 0; i < n; ++i)
    ts.emplace_back([&, i] {
      ready.fetch_add(1);
      while (!go.load()) std::this_thread::yield();
      body(i);
    });
  while (ready.load() < n) std::this_thread::yield();
  go.store(true);
  for (auto& t : ts) t.join();
}

// A Redis client for one test: its own key prefix on the shared server. A missing
// PAYSTREAM_REDIS_URL fails the test (thrown from SetUp), it never skips it.
std::unique_ptr<RedisClient> redis_for_test() {
  const char* url = std::getenv("PAYSTREAM_REDIS_URL");
  if (!url || !*url)
    throw std::runtime_error("PAYSTREAM_REDIS_URL is not set (scripts/test.sh starts Redis and exports it)");
  RedisOptions o;
  o.url = url;
  o.key_prefix = "pstest:" + random_token("", 8) + ":";
  o.timeout_ms = 5000;  // sanitizer builds on a shared machine: never a spurious timeout
  o.pool_size = size_t(kThreads);
  auto c = RedisClient::open(o);
  if (!c) throw std::runtime_error("Redis client: " + c.error().message);
  if (auto p = c.value()->ping(); !p) throw std::runtime_error("Redis at " + o.url + ": " + p.error().message);
  return std::move(c.value());
}

// An adapter together with the client it borrows (the port object owns both).
// Its keys are deleted at the end (some would otherwise live for days: slow buckets).
template <class Port, class Adapter>
struct WithRedis : Port {
  template <class... A>
  explicit WithRedis(A&&... a) : client(redis_for_test()), adapter(*client, std::forward<A>(a)...) {}
  ~WithRedis() override {
    std::string cursor = "0";
    do {
      auto r = client->command({"SCAN", cursor, "MATCH", client->options().key_prefix + "*", "COUNT", "1000"});
      if (!r || r->elements.size() != 2) break;
      cursor = r->elements[0].str;
      for (const auto& k : r->elements[1].elements) (void)client->command({"DEL", k.str});
    } while (cursor != "0");
  }
  std::unique_ptr<RedisClient> client;
  Adapter adapter;
};
struct RedisIdempotency final : WithRedis<IdempotencyCache, RedisIdempotencyCache> {
  using WithRedis::WithRedis;
  Result<Begin> begin(const std::string& m, const std::string& k, const std::string& fp, int64_t now) override {
    return adapter.begin(m, k, fp, now);
  }
  void finish(const IdempotencyRecord& r, int64_t now) override { adapter.finish(r, now); }
  void abandon(const std::string& m, const std::string& k) override { adapter.abandon(m, k); }
};
struct RedisLimiter final : WithRedis<RateLimiter, RedisRateLimiter> {
  using WithRedis::WithRedis;
  Result<Decision> take(const std::string& k, double rate, int64_t burst, int64_t now) override {
    return adapter.take(k, rate, burst, now);
  }
};
struct RedisVelocity final : WithRedis<VelocityCounter, RedisVelocityCounter> {
  using WithRedis::WithRedis;
  Result<int64_t> hit(const std::string& k, int64_t now, int64_t window) override { return adapter.hit(k, now, window); }
};

// ======================================================================================
// IdempotencyCache
// ======================================================================================

struct IdempotencyCacheFactory {
  std::string name;
  // A fresh, empty cache whose finished entries (and any entry at all) live at most `ttl`.
  std::function<std::unique_ptr<IdempotencyCache>(std::chrono::milliseconds ttl)> make;
};
// Names the adapter in test listings (instead of a byte dump of the factory).
inline void PrintTo(const IdempotencyCacheFactory& f, std::ostream* os) { *os << f.name; }

IdempotencyRecord record_for(const std::string& merchant, const std::string& key, const std::string& fp,
                             int64_t created_ms) {
  IdempotencyRecord r;
  r.merchant_id = merchant;
  r.key = key;
  r.fingerprint = fp;
  r.http_status = 202;
  r.response_body = R"({"id":"pay_)" + key + R"(","status":"processing"})";
  r.resource_id = "pay_" + key;
  r.created_ms = created_ms;
  return r;
}

class IdempotencyCacheContract : public ::testing::TestWithParam<IdempotencyCacheFactory> {
 protected:
  void SetUp() override { cache_ = GetParam().make(ttl_); }
  IdempotencyCache::Begin begin(const std::string& m, const std::string& k, const std::string& fp, int64_t now) {
    auto r = cache_->begin(m, k, fp, now);
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
    return r.ok() ? r.value() : IdempotencyCache::Begin{};
  }
  const std::chrono::milliseconds ttl_ = 60'000ms;
  std::unique_ptr<IdempotencyCache> cache_;
};

TEST_P(IdempotencyCacheContract, BeginThenInFlightThenDoneReplaysTheRecord) {
  auto first = begin("mer_a", "k1", "fp_1", kT0);
  EXPECT_EQ(first.state, State::started);
  EXPECT_FALSE(first.record.has_value());

  auto second = begin("mer_a", "k1", "fp_1", kT0 + 5);
  EXPECT_EQ(second.state, State::in_flight);
  EXPECT_EQ(second.fingerprint, "fp_1");
  EXPECT_FALSE(second.record.has_value());

  const IdempotencyRecord rec = record_for("mer_a", "k1", "fp_1", kT0 + 10);
  cache_->finish(rec, kT0 + 10);

  auto third = begin("mer_a", "k1", "fp_1", kT0 + 20);
  EXPECT_EQ(third.state, State::done);
  EXPECT_EQ(third.fingerprint, "fp_1");
  ASSERT_TRUE(third.record.has_value());
  EXPECT_EQ(third.record->merchant_id, rec.merchant_id);
  EXPECT_EQ(third.record->key, rec.key);
  EXPECT_EQ(third.record->fingerprint, rec.fingerprint);
  EXPECT_EQ(third.record->http_status, rec.http_status);
  EXPECT_EQ(third.record->response_body, rec.response_body);
  EXPECT_EQ(third.record->resource_id, rec.resource_id);
  EXPECT_EQ(third.record->created_ms, rec.created_ms);

  // Replays are stable: asking again changes nothing.
  auto fourth = begin("mer_a", "k1", "fp_1", kT0 + 30);
  EXPECT_EQ(fourth.state, State::done);
  ASSERT_TRUE(fourth.record.has_value());
  EXPECT_EQ(fourth.record->response_body, rec.response_body);
}

TEST_P(IdempotencyCacheContract, MismatchedFingerprintSeesTheFirstOne) {
  ASSERT_EQ(begin("mer_a", "k2", "fp_first", kT0).state, State::started);
  auto clash = begin("mer_a", "k2", "fp_other", kT0 + 1);
  EXPECT_EQ(clash.state, State::in_flight);
  EXPECT_EQ(clash.fingerprint, "fp_first");  // the caller detects the mismatch from this

  cache_->finish(record_for("mer_a", "k2", "fp_first", kT0 + 2), kT0 + 2);
  auto after = begin("mer_a", "k2", "fp_other", kT0 + 3);
  EXPECT_EQ(after.state, State::done);
  EXPECT_EQ(after.fingerprint, "fp_first");
  ASSERT_TRUE(after.record.has_value());
  EXPECT_EQ(after.record->fingerprint, "fp_first");
}

TEST_P(IdempotencyCacheContract, AbandonFreesAnInFlightKey) {
  ASSERT_EQ(begin("mer_a", "k3", "fp_1", kT0).state, State::started);
  cache_->abandon("mer_a", "k3");
  auto again = begin("mer_a", "k3", "fp_2", kT0 + 1);
  EXPECT_EQ(again.state, State::started);
  // The new owner now holds it, with its own fingerprint.
  auto other = begin("mer_a", "k3", "fp_1", kT0 + 2);
  EXPECT_EQ(other.state, State::in_flight);
  EXPECT_EQ(other.fingerprint, "fp_2");
  // Abandoning a key nobody holds is harmless.
  cache_->abandon("mer_a", "never_begun");
  EXPECT_EQ(begin("mer_a", "never_begun", "fp", kT0 + 3).state, State::started);
}

TEST_P(IdempotencyCacheContract, AbandonDoesNotForgetAFinishedKey) {
  ASSERT_EQ(begin("mer_a", "k4", "fp_1", kT0).state, State::started);
  cache_->finish(record_for("mer_a", "k4", "fp_1", kT0 + 1), kT0 + 1);
  cache_->abandon("mer_a", "k4");
  auto b = begin("mer_a", "k4", "fp_1", kT0 + 2);
  EXPECT_EQ(b.state, State::done);
  EXPECT_TRUE(b.record.has_value());
}

TEST_P(IdempotencyCacheContract, EntriesExpireAfterTheTtl) {
  const int64_t ttl_ms = ttl_.count();
  ASSERT_EQ(begin("mer_a", "k5", "fp_1", kT0).state, State::started);
  cache_->finish(record_for("mer_a", "k5", "fp_1", kT0 + 100), kT0 + 100);
  // Still there just before the TTL (counted from finish) runs out...
  EXPECT_EQ(begin("mer_a", "k5", "fp_1", kT0 + 100 + ttl_ms - 1).state, State::done);
  // ...and gone after it: a new request owns the key again.
  auto late = begin("mer_a", "k5", "fp_2", kT0 + 100 + ttl_ms + 1);
  EXPECT_EQ(late.state, State::started);
  EXPECT_FALSE(late.record.has_value());

  // An in-flight entry whose owner vanished (never finished nor abandoned) does not pin the
  // key for longer than the TTL either.
  ASSERT_EQ(begin("mer_a", "k6", "fp_1", kT0).state, State::started);
  EXPECT_EQ(begin("mer_a", "k6", "fp_1", kT0 + 1).state, State::in_flight);
  EXPECT_EQ(begin("mer_a", "k6", "fp_2", kT0 + ttl_ms + 1).state, State::started);
}

TEST_P(IdempotencyCacheContract, KeysOfDifferentMerchantsAreIndependent) {
  ASSERT_EQ(begin("mer_a", "shared", "fp_a", kT0).state, State::started);
  auto b = begin("mer_b", "shared", "fp_b", kT0 + 1);
  EXPECT_EQ(b.state, State::started);

  cache_->finish(record_for("mer_a", "shared", "fp_a", kT0 + 2), kT0 + 2);
  auto a_again = begin("mer_a", "shared", "fp_a", kT0 + 3);
  EXPECT_EQ(a_again.state, State::done);
  auto b_again = begin("mer_b", "shared", "fp_b", kT0 + 3);
  EXPECT_EQ(b_again.state, State::in_flight);
  EXPECT_EQ(b_again.fingerprint, "fp_b");

  cache_->abandon("mer_b", "shared");
  EXPECT_EQ(begin("mer_a", "shared", "fp_a", kT0 + 4).state, State::done);  // untouched by b's abandon

  // Keys are printable ASCII and may contain separator-like characters: (merchant, key)
  // pairs whose concatenations look alike must not share an entry.
  ASSERT_EQ(begin("mer_c", "x:y", "fp_1", kT0).state, State::started);
  EXPECT_EQ(begin("mer_c:x", "y", "fp_2", kT0).state, State::started);
  EXPECT_EQ(begin("mer_c", "x:y:", "fp_3", kT0).state, State::started);
  EXPECT_EQ(begin("mer_c", "x", "fp_4", kT0).state, State::started);
}

TEST_P(IdempotencyCacheContract, SixteenThreadsRacingBeginGetExactlyOneStarted) {
  for (int round = 0; round < 20; ++round) {
    const std::string key = "race_" + std::to_string(round);
    std::vector<IdempotencyCache::Begin> got(kThreads);
    std::vector<char> ok(kThreads, 0);  // not vector<bool>: threads write neighbouring elements
    race(kThreads, [&](int i) {
      auto r = cache_->begin("mer_race", key, "fp_" + std::to_string(i), kT0 + round);
      ok[size_t(i)] = r.ok();
      if (r.ok()) got[size_t(i)] = r.value();
    });
    int started = 0;
    int winner = -1;
    for (int i = 0; i < kThreads; ++i) {
      ASSERT_TRUE(ok[size_t(i)]) << "thread " << i;
      if (got[size_t(i)].state == State::started) {
        ++started;
        winner = i;
      }
    }
    ASSERT_EQ(started, 1) << "round " << round;
    for (int i = 0; i < kThreads; ++i) {
      if (i == winner) continue;
      EXPECT_EQ(got[size_t(i)].state, State::in_flight) << "round " << round << " thread " << i;
      EXPECT_EQ(got[size_t(i)].fingerprint, "fp_" + std::to_string(winner)) << "round " << round;
    }
  }
}

IdempotencyCacheFactory memory_idempotency_factory() {
  return {"memory", [](std::chrono::milliseconds ttl) -> std::unique_ptr<IdempotencyCache> {
            return std::make_unique<InMemoryIdempotencyCache>(ttl);
          }};
}

IdempotencyCacheFactory redis_idempotency_factory() {
  return {"redis", [](std::chrono::milliseconds ttl) -> std::unique_ptr<IdempotencyCache> {
            return std::make_unique<RedisIdempotency>(std::chrono::duration_cast<std::chrono::seconds>(ttl));
          }};
}

INSTANTIATE_TEST_SUITE_P(Adapters, IdempotencyCacheContract,
                         ::testing::Values(memory_idempotency_factory(), redis_idempotency_factory()),
                         [](const ::testing::TestParamInfo<IdempotencyCacheFactory>& i) { return i.param.name; });

// --- Memory budget -------------------------------------------------------------------
// An adapter with a byte budget keeps its payload under it by forgetting finished entries;
// a forgotten key must answer `started` (the caller then asks the durable store), never a
// replay of some other record.

struct BudgetedIdempotencyCacheFactory {
  std::string name;
  std::function<std::unique_ptr<IdempotencyCache>(std::chrono::milliseconds ttl, size_t max_bytes)> make;
  std::function<size_t(IdempotencyCache&)> bytes;  // payload bytes the adapter holds now
};
inline void PrintTo(const BudgetedIdempotencyCacheFactory& f, std::ostream* os) { *os << f.name; }

class IdempotencyCacheBudgetContract : public ::testing::TestWithParam<BudgetedIdempotencyCacheFactory> {};

TEST_P(IdempotencyCacheBudgetContract, InsertingBeyondTheBudgetStaysUnderItAndEvictedKeysStartAgain) {
  const size_t budget = 256 * 1024;
  auto cache = GetParam().make(60'000ms, budget);
  const std::string body_pad(1024, 'm');  // ~1 KiB bodies: 2000 of them are ~8x the budget
  const int n = 2000;
  for (int i = 0; i < n; ++i) {
    const std::string key = "bk_" + std::to_string(i);
    auto b = cache->begin("mer_budget", key, "fp_" + std::to_string(i), kT0 + i);
    ASSERT_TRUE(b.ok()) << i << ": " << b.error().message;
    ASSERT_EQ(b->state, State::started) << i;
    IdempotencyRecord rec = record_for("mer_budget", key, "fp_" + std::to_string(i), kT0 + i);
    rec.response_body += body_pad;
    cache->finish(rec, kT0 + i);
    ASSERT_LE(GetParam().bytes(*cache), budget) << "after " << i;
  }
  int started = 0, replayed = 0;
  for (int i = 0; i < n; ++i) {
    const std::string key = "bk_" + std::to_string(i);
    auto b = cache->begin("mer_budget", key, "fp_" + std::to_string(i), kT0 + n + i);
    ASSERT_TRUE(b.ok());
    if (b->state == State::started) {
      ++started;
      EXPECT_FALSE(b->record.has_value());
      cache->abandon("mer_budget", key);
    } else {
      ASSERT_EQ(b->state, State::done) << key;
      ++replayed;
      ASSERT_TRUE(b->record.has_value());
      EXPECT_EQ(b->record->key, key);  // its own record, never another key's
      EXPECT_EQ(b->fingerprint, "fp_" + std::to_string(i));
      EXPECT_EQ(b->record->response_body.size(), record_for("mer_budget", key, "", 0).response_body.size() + 1024);
    }
  }
  EXPECT_GT(started, n / 2);  // most were forgotten: 2000 KiB do not fit in 256 KiB
  EXPECT_GT(replayed, 0);     // but the cache still holds what fits
  EXPECT_LE(GetParam().bytes(*cache), budget);
  // The oldest finished entry went first.
  auto oldest = cache->begin("mer_budget", "bk_0", "fp_0", kT0 + 3 * n);
  ASSERT_TRUE(oldest.ok());
  EXPECT_EQ(oldest->state, State::started);
}

BudgetedIdempotencyCacheFactory memory_budgeted_idempotency_factory() {
  return {"memory",
          [](std::chrono::milliseconds ttl, size_t max_bytes) -> std::unique_ptr<IdempotencyCache> {
            return std::make_unique<InMemoryIdempotencyCache>(ttl, 1'000'000, ttl, max_bytes);
          },
          [](IdempotencyCache& c) { return static_cast<InMemoryIdempotencyCache&>(c).bytes(); }};
}

INSTANTIATE_TEST_SUITE_P(Adapters, IdempotencyCacheBudgetContract,
                         ::testing::Values(memory_budgeted_idempotency_factory()),
                         [](const ::testing::TestParamInfo<BudgetedIdempotencyCacheFactory>& i) {
                           return i.param.name;
                         });

// ======================================================================================
// RateLimiter
// ======================================================================================

struct RateLimiterFactory {
  std::string name;
  std::function<std::unique_ptr<RateLimiter>()> make;  // fresh: every bucket full
};
inline void PrintTo(const RateLimiterFactory& f, std::ostream* os) { *os << f.name; }

class RateLimiterContract : public ::testing::TestWithParam<RateLimiterFactory> {
 protected:
  void SetUp() override { rl_ = GetParam().make(); }
  RateLimiter::Decision take(const std::string& key, double rate, int64_t burst, int64_t now) {
    auto r = rl_->take(key, rate, burst, now);
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
    return r.ok() ? r.value() : RateLimiter::Decision{false, -1, -1, -1, -1};
  }
  std::unique_ptr<RateLimiter> rl_;
};

TEST_P(RateLimiterContract, BurstIsGrantedThenRefusedWithRetryAfter) {
  for (int64_t i = 0; i < 5; ++i) {
    auto d = take("mer_a:payments", 1.0, 5, kT0);
    ASSERT_TRUE(d.allowed) << "take " << i;
    EXPECT_EQ(d.limit, 5);
    EXPECT_EQ(d.remaining, 4 - i);
    EXPECT_EQ(d.retry_after_s, 0);
  }
  for (int i = 0; i < 3; ++i) {
    auto d = take("mer_a:payments", 1.0, 5, kT0);
    EXPECT_FALSE(d.allowed);
    EXPECT_EQ(d.limit, 5);
    EXPECT_EQ(d.remaining, 0);
    EXPECT_GE(d.retry_after_s, 1);
    EXPECT_LE(d.retry_after_s, 1);  // one token at 1/s is one second away
  }
}

TEST_P(RateLimiterContract, RefillsAtTheRateOverInjectedTime) {
  const std::string k = "mer_a:refill";
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(take(k, 2.0, 4, kT0).allowed);
  ASSERT_FALSE(take(k, 2.0, 4, kT0).allowed);
  // 2 tokens per second: one token takes 500 ms.
  EXPECT_FALSE(take(k, 2.0, 4, kT0 + 400).allowed);
  EXPECT_TRUE(take(k, 2.0, 4, kT0 + 500).allowed);
  EXPECT_FALSE(take(k, 2.0, 4, kT0 + 500).allowed);
  // A further second gives exactly two more.
  EXPECT_TRUE(take(k, 2.0, 4, kT0 + 1500).allowed);
  EXPECT_TRUE(take(k, 2.0, 4, kT0 + 1500).allowed);
  EXPECT_FALSE(take(k, 2.0, 4, kT0 + 1500).allowed);
  // A long idle period refills to burst, never beyond.
  int granted = 0;
  for (int i = 0; i < 10; ++i) granted += take(k, 2.0, 4, kT0 + 3'600'000).allowed ? 1 : 0;
  EXPECT_EQ(granted, 4);

  // Slow rate: Retry-After is honest — retrying after it succeeds, and not much earlier.
  const std::string slow = "mer_a:slow";
  ASSERT_TRUE(take(slow, 0.1, 1, kT0).allowed);
  auto refused = take(slow, 0.1, 1, kT0 + 3000);  // 0.3 of a token accumulated
  ASSERT_FALSE(refused.allowed);
  EXPECT_GE(refused.retry_after_s, 7);
  EXPECT_LE(refused.retry_after_s, 8);
  EXPECT_FALSE(take(slow, 0.1, 1, kT0 + 3000 + 6000).allowed);
  EXPECT_TRUE(take(slow, 0.1, 1, kT0 + 3000 + refused.retry_after_s * 1000).allowed);
}

// For many rates and probe patterns: a caller refused with Retry-After N, who keeps
// probing early (each probe refused), is granted at exactly now + N seconds. Fractional
// refill must not be lost to rounding across the probes.
TEST_P(RateLimiterContract, RetryAfterIsHonouredDespiteEarlyProbes) {
  int strict = 0;
  for (double rate : {0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 3.0}) {
    for (int64_t refused_at_ms : {1, 700, 1000, 2000, 2500}) {
      for (int64_t probe_ms : {100, 200, 250, 500, 1000}) {
        const std::string k = "honest:" + std::to_string(rate) + ":" + std::to_string(refused_at_ms) + ":" +
                              std::to_string(probe_ms);
        SCOPED_TRACE(k);
        ASSERT_TRUE(take(k, rate, 1, kT0).allowed);
        auto refused = take(k, rate, 1, kT0 + refused_at_ms);
        if (refused.allowed) continue;  // refilled already (fast rates)
        const int64_t due = kT0 + refused_at_ms + refused.retry_after_s * 1000;
        bool early_grant = false;  // a token may come before the (rounded-up) promise
        for (int64_t t = kT0 + refused_at_ms + probe_ms; t < due && !early_grant; t += probe_ms)
          early_grant = take(k, rate, 1, t).allowed;
        if (!early_grant) {
          EXPECT_TRUE(take(k, rate, 1, due).allowed) << "refused at the promised time " << due - kT0;
          ++strict;
        }
      }
    }
  }
  EXPECT_GT(strict, 60) << strict;  // most combinations reach the promised time without an early grant
}

TEST_P(RateLimiterContract, BucketsOfDifferentKeysAreIndependent) {
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(take("mer_a", 1.0, 3, kT0).allowed);
  EXPECT_FALSE(take("mer_a", 1.0, 3, kT0).allowed);
  auto b = take("mer_b", 1.0, 3, kT0);
  EXPECT_TRUE(b.allowed);
  EXPECT_EQ(b.remaining, 2);
  EXPECT_FALSE(take("mer_a", 1.0, 3, kT0).allowed);  // b's take gave a nothing back
  EXPECT_TRUE(take("mer_a:x", 1.0, 3, kT0).allowed);
  EXPECT_TRUE(take("mer_", 1.0, 3, kT0).allowed);
}

TEST_P(RateLimiterContract, LimitRemainingAndResetAreConsistent) {
  const std::string k = "mer_a:fields";
  const double rate = 2.0;
  const int64_t burst = 6;
  int64_t now = kT0;
  for (int step = 0; step < 20; ++step) {
    now += (step % 3) * 250;  // some steps refill a bit, some do not
    auto d = take(k, rate, burst, now);
    SCOPED_TRACE("step " + std::to_string(step));
    EXPECT_EQ(d.limit, burst);
    EXPECT_GE(d.remaining, 0);
    EXPECT_LT(d.remaining, burst);  // a take just happened or the bucket is empty
    EXPECT_GE(d.reset_s, 0);
    if (d.allowed) {
      EXPECT_EQ(d.retry_after_s, 0);
      EXPECT_GE(d.reset_s, 1);  // the bucket is below burst right after a take
    } else {
      EXPECT_EQ(d.remaining, 0);
      EXPECT_GE(d.retry_after_s, 1);
      EXPECT_LE(d.retry_after_s, d.reset_s);
    }
  }
  // `remaining` is exactly the number of further grants at the same instant.
  auto d = take(k, rate, burst, now + 60'000);
  ASSERT_TRUE(d.allowed);
  int64_t more = 0;
  while (take(k, rate, burst, now + 60'000).allowed) ++more;
  EXPECT_EQ(more, d.remaining);
  // After `reset_s` seconds the bucket is full again: burst grants in a row.
  auto empty = take(k, rate, burst, now + 60'000);
  ASSERT_FALSE(empty.allowed);
  const int64_t later = now + 60'000 + empty.reset_s * 1000;
  int64_t granted = 0;
  while (take(k, rate, burst, later).allowed) ++granted;
  EXPECT_EQ(granted, burst);
}

TEST_P(RateLimiterContract, SixteenThreadsNeverGetMoreThanBurst) {
  const int64_t burst = 50;
  std::atomic<int64_t> granted{0};
  std::atomic<int64_t> errors{0};
  race(kThreads, [&](int) {
    for (int j = 0; j < 20; ++j) {  // 320 attempts for 50 tokens
      auto r = rl_->take("mer_race", 0.001, burst, kT0);
      if (!r.ok()) errors.fetch_add(1);
      else if (r->allowed) granted.fetch_add(1);
    }
  });
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(granted.load(), burst);  // never more; and with no time passing, not fewer
}

TEST_P(RateLimiterContract, ExtremeRatesNeverOverflowTheReportedSeconds) {
  // 1e-300 tokens/s: the true reset is ~1e300 s; it must be reported as a large positive
  // number, not a wrapped negative one (double -> int64 overflow).
  auto d = take("mer_tiny", 1e-300, 2, kT0);
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.remaining, 1);
  EXPECT_GE(d.reset_s, 1'000'000);
  take("mer_tiny", 1e-300, 2, kT0);
  d = take("mer_tiny", 1e-300, 2, kT0 + 1);
  EXPECT_FALSE(d.allowed);
  EXPECT_GE(d.retry_after_s, 1'000'000);
  EXPECT_GE(d.reset_s, 1'000'000);
  EXPECT_EQ(d.remaining, 0);
  // The API's bounds ([0.001, 1e6] per second, burst up to 1e7) give exact answers.
  d = take("mer_slowest", 0.001, 1, kT0);
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.reset_s, 1000);
  d = take("mer_fastest", 1e6, 10'000'000, kT0);
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.remaining, 9'999'999);
  EXPECT_EQ(d.reset_s, 1);
}

RateLimiterFactory memory_rate_limiter_factory() {
  return {"memory", []() -> std::unique_ptr<RateLimiter> { return std::make_unique<InMemoryRateLimiter>(); }};
}

RateLimiterFactory redis_rate_limiter_factory() {
  return {"redis", []() -> std::unique_ptr<RateLimiter> { return std::make_unique<RedisLimiter>(); }};
}

INSTANTIATE_TEST_SUITE_P(Adapters, RateLimiterContract,
                         ::testing::Values(memory_rate_limiter_factory(), redis_rate_limiter_factory()),
                         [](const ::testing::TestParamInfo<RateLimiterFactory>& i) { return i.param.name; });

// ======================================================================================
// VelocityCounter
// ======================================================================================

struct VelocityCounterFactory {
  std::string name;
  std::function<std::unique_ptr<VelocityCounter>()> make;  // fresh: every window empty
};
inline void PrintTo(const VelocityCounterFactory& f, std::ostream* os) { *os << f.name; }

class VelocityCounterContract : public ::testing::TestWithParam<VelocityCounterFactory> {
 protected:
  void SetUp() override { vc_ = GetParam().make(); }
  int64_t hit(const std::string& key, int64_t now, int64_t window) {
    auto r = vc_->hit(key, now, window);
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
    return r.ok() ? r.value() : -1;
  }
  std::unique_ptr<VelocityCounter> vc_;
};

TEST_P(VelocityCounterContract, CountsHitsWithinTheWindow) {
  EXPECT_EQ(hit("card_1", kT0, 60'000), 1);
  EXPECT_EQ(hit("card_1", kT0 + 10, 60'000), 2);
  EXPECT_EQ(hit("card_1", kT0 + 20, 60'000), 3);
  EXPECT_EQ(hit("card_1", kT0 + 20, 60'000), 4);  // same instant counts too
  EXPECT_EQ(hit("card_1", kT0 + 59'999, 60'000), 5);
}

TEST_P(VelocityCounterContract, WindowSlides) {
  const int64_t w = 1000;
  EXPECT_EQ(hit("k", kT0, w), 1);
  EXPECT_EQ(hit("k", kT0 + 100, w), 2);
  EXPECT_EQ(hit("k", kT0 + 200, w), 3);
  // (now - window, now]: the hit at kT0 sits exactly on the open edge and is out.
  EXPECT_EQ(hit("k", kT0 + 1000, w), 3);
  EXPECT_EQ(hit("k", kT0 + 1150, w), 3);   // kT0+100 left; kT0+200, +1000, +1150 remain
  EXPECT_EQ(hit("k", kT0 + 2100, w), 2);   // window (1100, 2100]: +1150 and this one
  EXPECT_EQ(hit("k", kT0 + 10'000, w), 1); // everything else is long gone
}

TEST_P(VelocityCounterContract, KeysAreIndependent) {
  for (int i = 0; i < 5; ++i) EXPECT_EQ(hit("card_a", kT0 + i, 60'000), i + 1);
  EXPECT_EQ(hit("card_b", kT0 + 5, 60'000), 1);
  EXPECT_EQ(hit("card_a", kT0 + 6, 60'000), 6);
  EXPECT_EQ(hit("card_b", kT0 + 7, 60'000), 2);
  EXPECT_EQ(hit("card_", kT0 + 8, 60'000), 1);
}

TEST_P(VelocityCounterContract, ConcurrentHitsAreAllCounted) {
  race(kThreads, [&](int) {
    for (int j = 0; j < 50; ++j) (void)vc_->hit("card_race", kT0, 60'000);
  });
  EXPECT_EQ(hit("card_race", kT0 + 1, 60'000), kThreads * 50 + 1);
}

VelocityCounterFactory memory_velocity_factory() {
  return {"memory", []() -> std::unique_ptr<VelocityCounter> { return std::make_unique<InMemoryVelocityCounter>(); }};
}

VelocityCounterFactory redis_velocity_factory() {
  return {"redis", []() -> std::unique_ptr<VelocityCounter> { return std::make_unique<RedisVelocity>(); }};
}

INSTANTIATE_TEST_SUITE_P(Adapters, VelocityCounterContract,
                         ::testing::Values(memory_velocity_factory(), redis_velocity_factory()),
                         [](const ::testing::TestParamInfo<VelocityCounterFactory>& i) { return i.param.name; });

}  // namespace
}  // namespace ps::contract
