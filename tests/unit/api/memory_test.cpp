#include <gtest/gtest.h>

#include "adapters/memory/idempotency_cache.hpp"
#include "adapters/memory/rate_limiter.hpp"

#include <cmath>
#include <limits>
#include <vector>

using namespace ps;
using namespace std::chrono_literals;

namespace {
IdempotencyRecord rec(const std::string& m, const std::string& k, const std::string& fp) {
  return IdempotencyRecord{m, k, fp, 202, "{\"id\":\"" + k + "\"}", "pay_" + k, 0};
}
}  // namespace

TEST(InMemoryIdempotencyCache, BeginFinishAbandon) {
  InMemoryIdempotencyCache c(1000ms);
  auto b = c.begin("m", "k", "fp1", 0);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->state, IdempotencyCache::State::started);
  b = c.begin("m", "k", "fp2", 1);
  EXPECT_EQ(b->state, IdempotencyCache::State::in_flight);
  EXPECT_EQ(b->fingerprint, "fp1");
  EXPECT_EQ(c.begin("m2", "k", "fp1", 1)->state, IdempotencyCache::State::started);  // per merchant
  c.finish(rec("m", "k", "fp1"), 2);
  b = c.begin("m", "k", "fp1", 3);
  EXPECT_EQ(b->state, IdempotencyCache::State::done);
  ASSERT_TRUE(b->record.has_value());
  EXPECT_EQ(b->record->response_body, "{\"id\":\"k\"}");
  c.abandon("m", "k");  // done entries are not abandoned
  EXPECT_EQ(c.begin("m", "k", "fp1", 4)->state, IdempotencyCache::State::done);
  c.abandon("m2", "k");
  EXPECT_EQ(c.begin("m2", "k", "fpx", 5)->state, IdempotencyCache::State::started);
}

TEST(InMemoryIdempotencyCache, ExpiresAfterTtlAndInFlightTtl) {
  InMemoryIdempotencyCache c(1000ms, 1000, 100ms);
  c.finish(rec("m", "done", "fp"), 0);
  EXPECT_EQ(c.begin("m", "done", "fp", 999)->state, IdempotencyCache::State::done);
  EXPECT_EQ(c.begin("m", "done", "fp", 1000)->state, IdempotencyCache::State::started);
  ASSERT_EQ(c.begin("m", "stuck", "fp", 0)->state, IdempotencyCache::State::started);
  EXPECT_EQ(c.begin("m", "stuck", "fp", 50)->state, IdempotencyCache::State::in_flight);
  EXPECT_EQ(c.begin("m", "stuck", "fp", 100)->state, IdempotencyCache::State::started);
}

TEST(InMemoryIdempotencyCache, BoundedSize) {
  InMemoryIdempotencyCache c(std::chrono::hours(1), 64);
  for (int i = 0; i < 10000; ++i) c.finish(rec("m", "k" + std::to_string(i), "fp"), i);
  EXPECT_LE(c.size(), 64u);
  // Sweeping: expired entries are dropped.
  InMemoryIdempotencyCache d(10ms, 1000000);
  for (int i = 0; i < 100; ++i) c.finish(rec("m", "k" + std::to_string(i), "fp"), 0);
  for (int i = 0; i < 100; ++i) d.finish(rec("m", "k" + std::to_string(i), "fp"), 0);
  EXPECT_EQ(d.size(), 100u);
  for (int i = 0; i < 1000; ++i) (void)d.begin("x", "y" + std::to_string(i), "fp", 100000);
  EXPECT_EQ(d.size(), 1000u);  // every shard swept its expired entries
}

TEST(InMemoryRateLimiter, TokenBucketDecisions) {
  InMemoryRateLimiter rl;
  auto d = rl.take("k", 2.0, 3, 0);
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE(d->allowed);
  EXPECT_EQ(d->limit, 3);
  EXPECT_EQ(d->remaining, 2);
  EXPECT_EQ(d->reset_s, 1);  // 1 token missing at 2/s
  EXPECT_TRUE(rl.take("k", 2.0, 3, 0)->allowed);
  EXPECT_TRUE(rl.take("k", 2.0, 3, 0)->allowed);
  d = rl.take("k", 2.0, 3, 0);
  EXPECT_FALSE(d->allowed);
  EXPECT_EQ(d->remaining, 0);
  EXPECT_EQ(d->retry_after_s, 1);
  EXPECT_EQ(d->reset_s, 2);  // 3 tokens at 2/s = 1.5 s -> 2
  EXPECT_TRUE(rl.take("other", 2.0, 3, 0)->allowed);
  EXPECT_FALSE(rl.take("k", 2.0, 3, 499)->allowed);
  EXPECT_TRUE(rl.take("k", 2.0, 3, 500)->allowed);  // one token after 0.5 s
  // Slow rate: retry-after rounds up.
  InMemoryRateLimiter slow;
  EXPECT_TRUE(slow.take("s", 0.1, 1, 0)->allowed);
  d = slow.take("s", 0.1, 1, 0);
  EXPECT_FALSE(d->allowed);
  EXPECT_EQ(d->retry_after_s, 10);
  EXPECT_FALSE(slow.take("s", 0, 1, 0).ok());
}

TEST(InMemoryRateLimiter, BoundedBuckets) {
  InMemoryRateLimiter rl(64);
  for (int i = 0; i < 5000; ++i) EXPECT_TRUE(rl.take("k" + std::to_string(i), 1, 1, 0)->allowed);
}

TEST(InMemoryIdempotencyCache, ByteBudgetEvictsFinishedNeverInFlight) {
  const size_t budget = 32 * 1000;  // 1000 bytes per shard
  InMemoryIdempotencyCache c(std::chrono::hours(1), 1'000'000, std::chrono::minutes(5), budget);
  // In-flight entries (~90 B each) until the budget refuses one.
  std::vector<std::string> in_flight;
  bool refused = false;
  for (int i = 0; i < 2000 && !refused; ++i) {
    std::string k = "if" + std::to_string(i);
    auto b = c.begin("mer", k, std::string(64, 'f'), 0);
    if (!b.ok()) {
      refused = true;
      EXPECT_EQ(b.error().kind, ErrorKind::unavailable);
      EXPECT_EQ(b.error().code, "idempotency_cache_full");
      EXPECT_TRUE(b.error().retryable);
    } else {
      ASSERT_EQ(b->state, IdempotencyCache::State::started);
      in_flight.push_back(k);
    }
  }
  EXPECT_TRUE(refused);
  EXPECT_LE(c.bytes(), budget);
  // Finished entries with big bodies: they are evicted, the in-flight ones stay.
  for (int i = 0; i < 200; ++i) {
    IdempotencyRecord r{"mer", "big" + std::to_string(i), "fp", 202, std::string(300, 'b'), "pay", 0};
    c.finish(r, 1);
    EXPECT_LE(c.bytes(), budget);
  }
  for (const auto& k : in_flight) EXPECT_EQ(c.begin("mer", k, "other", 2)->state, IdempotencyCache::State::in_flight) << k;
  // Abandoning frees room: a begin that was refused now succeeds somewhere.
  for (const auto& k : in_flight) c.abandon("mer", k);
  EXPECT_EQ(c.bytes() <= budget, true);
  EXPECT_EQ(c.begin("mer", "after", std::string(64, 'f'), 3)->state, IdempotencyCache::State::started);
  // Expired/abandoned entries give their bytes back.
  size_t before = c.bytes();
  c.abandon("mer", "after");
  EXPECT_LT(c.bytes(), before);
}

TEST(InMemoryRateLimiter, ExtremeRatesAreClampedNotOverflowed) {
  InMemoryRateLimiter rl;
  auto d = rl.take("tiny", 1e-300, 5, 0);
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE(d->allowed);
  EXPECT_EQ(d->remaining, 4);
  EXPECT_EQ(d->reset_s, 1'000'000'000);  // clamped, not INT64_MIN
  auto one = rl.take("one", 1e-300, 1, 0);
  ASSERT_TRUE(one.ok());
  d = rl.take("one", 1e-300, 1, 0);
  ASSERT_TRUE(d.ok());
  EXPECT_FALSE(d->allowed);
  EXPECT_EQ(d->retry_after_s, 1'000'000'000);
  EXPECT_EQ(d->reset_s, 1'000'000'000);
  // A huge rate and a huge burst stay in range too.
  d = rl.take("huge", 1e300, std::numeric_limits<int64_t>::max(), 0);
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE(d->allowed);
  EXPECT_GE(d->remaining, 0);
  EXPECT_GE(d->reset_s, 0);
  EXPECT_FALSE(rl.take("inf", std::numeric_limits<double>::infinity(), 1, 0).ok());
  EXPECT_FALSE(rl.take("nan", std::nan(""), 1, 0).ok());
}
