// Redis-specific behaviour of the durable-target adapters (the shared semantics are in
// tests/contract/fast_state_contract_test.cpp): data loss, sharing across processes,
// timeouts, reconnects, script cache loss, key TTLs, failure policies.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "redis/redis_test_util.hpp"

namespace ps::redis_test {
namespace {
using namespace std::chrono_literals;
using State = IdempotencyCache::State;
using Clock = std::chrono::steady_clock;

constexpr int64_t kT0 = 1'700'000'000'000;

int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Every key under the client's prefix (a test's adapters write a handful).
std::vector<std::string> keys_of(RedisClient& c) {
  auto r = c.command({"KEYS", c.options().key_prefix + "*"});
  EXPECT_TRUE(r.ok());
  std::vector<std::string> out;
  if (r) for (const auto& e : r->elements) out.push_back(e.str);
  return out;
}

IdempotencyRecord record(const std::string& m, const std::string& k, const std::string& fp) {
  return {m, k, fp, 202, R"({"id":"pay_1","status":"processing"})", "pay_1", kT0};
}

class RedisFastState : public ::testing::Test {
 protected:
  void SetUp() override {
    url_ = durable_url();
    ASSERT_FALSE(url_.empty());
    prefix_ = unique_prefix();
    client_ = open_client(url_, "durable", prefix_);
    ASSERT_TRUE(client_);
    ASSERT_TRUE(client_->ping().ok()) << "Redis at " << url_ << " does not answer";
  }
  void TearDown() override {
    if (client_) drop_prefix(*client_);
  }
  std::string url_, prefix_;
  std::unique_ptr<RedisClient> client_;
};

// Redis loses everything (FLUSHALL, or a restart without persistence): the cache forgets a
// finished key and begin() answers `started`. That is safe by design: the API then tries
// to store the payment, the durable store's unique (merchant, key) constraint refuses the
// duplicate, and the first response is replayed from IntakeStore::find_idempotency.
// Note: FLUSHALL wipes the whole shared server; other tests' adapters tolerate a lost key
// the same way, but a test asserting exact bucket counts at that instant could be disturbed.
TEST_F(RedisFastState, FlushAllForgetsFinishedKeysAndBeginStartsAgain) {
  RedisIdempotencyCache cache(*client_, 24h);
  ASSERT_EQ(cache.begin("mer_f", "k", "fp", kT0)->state, State::started);
  cache.finish(record("mer_f", "k", "fp"), kT0 + 1);
  ASSERT_EQ(cache.begin("mer_f", "k", "fp", kT0 + 2)->state, State::done);
  ASSERT_TRUE(client_->flushall().ok());
  auto after = cache.begin("mer_f", "k", "fp", kT0 + 3);
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->state, State::started);  // the durable store decides from here
  EXPECT_FALSE(after->record.has_value());
}

// A gateway killed mid-request never finishes nor abandons its key; the in-flight record is
// a lease, so retries (on any gateway) see 409 only until it runs out, then may proceed
// (the database's unique constraint decides the outcome).
TEST_F(RedisFastState, InFlightKeyOfACrashedGatewayIsALease) {
  RedisIdempotencyCache crashed(*client_, 24h, 15s);
  ASSERT_EQ(crashed.begin("mer_l", "k", "fp", kT0)->state, State::started);
  auto other = open_client(url_, "durable", prefix_);
  ASSERT_TRUE(other);
  RedisIdempotencyCache survivor(*other, 24h, 15s);
  EXPECT_EQ(survivor.begin("mer_l", "k", "fp", kT0 + 14'999)->state, State::in_flight);
  auto later = survivor.begin("mer_l", "k", "fp", kT0 + 15'001);
  ASSERT_TRUE(later.ok());
  EXPECT_EQ(later->state, State::started);
  // The new owner holds a fresh lease.
  EXPECT_EQ(crashed.begin("mer_l", "k", "fp", kT0 + 20'000)->state, State::in_flight);
}

TEST_F(RedisFastState, RateLimitIsSharedByTwoGateways) {
  // Two processes' clients (separate pools) on the same keys.
  auto other = open_client(url_, "durable", prefix_);
  ASSERT_TRUE(other);
  RedisRateLimiter a(*client_), b(*other);
  const int64_t burst = 10;
  int granted = 0;
  for (int i = 0; i < 30; ++i) {
    auto d = (i % 2 ? b : a).take("mer_shared", 0.001, burst, kT0);
    ASSERT_TRUE(d.ok());
    granted += d->allowed ? 1 : 0;
  }
  EXPECT_EQ(granted, burst);
  // Concurrently from both gateways: still exactly the burst.
  std::atomic<int> granted2{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < 8; ++t)
    ts.emplace_back([&, t] {
      for (int i = 0; i < 10; ++i)
        if (auto d = (t % 2 ? b : a).take("mer_shared_2", 0.001, 25, kT0); d.ok() && d->allowed) granted2++;
    });
  for (auto& t : ts) t.join();
  EXPECT_EQ(granted2.load(), 25);
}

TEST_F(RedisFastState, CallsTimeOutWhilePausedAndRecoverAfterwards) {
  const int timeout_ms = 100;
  auto fast = open_client(url_, "durable", prefix_, timeout_ms, 2);
  auto admin = open_client(url_, "admin", prefix_);
  ASSERT_TRUE(fast && admin);
  ASSERT_TRUE(fast->ping().ok());  // a pooled connection exists before the pause
  const double errors_before = errors_of("durable");

  ASSERT_TRUE(admin->command({"CLIENT", "PAUSE", "1200"}).ok());
  const auto t0 = Clock::now();
  auto r = fast->ping();
  const auto took = Clock::now() - t0;
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.error().retryable);
  EXPECT_EQ(r.error().code, "redis_timeout") << r.error().message;
  EXPECT_GE(took, std::chrono::milliseconds(timeout_ms - 20));
  EXPECT_LE(took, std::chrono::milliseconds(timeout_ms + 200));

  // The failure policies, while Redis does not answer:
  RedisRateLimiter rl(*fast);
  auto d = rl.take("mer_paused", 1.0, 5, kT0);
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE(d->allowed);  // fail open
  EXPECT_EQ(d->limit, 5);
  RedisIdempotencyCache idem(*fast, 24h);
  auto b = idem.begin("mer_paused", "k", "fp", kT0);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->state, State::started);  // the durable store decides
  RedisVelocityCounter vc(*fast);
  EXPECT_FALSE(vc.hit("card_paused", kT0, 1000).ok());  // the fraud stage's fallback applies
  EXPECT_GE(errors_of("durable") - errors_before, 4);

  // After the pause: answers again, on fresh connections.
  const auto give_up = Clock::now() + 5s;
  bool back = false;
  while (!back && Clock::now() < give_up) {
    back = fast->ping().ok();
    if (!back) std::this_thread::sleep_for(50ms);
  }
  EXPECT_TRUE(back);
  auto d2 = rl.take("mer_after", 1.0, 5, kT0);
  ASSERT_TRUE(d2.ok());
  EXPECT_EQ(d2->remaining, 4);
}

TEST_F(RedisFastState, ReconnectsAfterTheConnectionIsKilled) {
  auto one = open_client(url_, "durable", prefix_, 2000, 1);  // a single pooled connection
  auto admin = open_client(url_, "admin", prefix_);
  ASSERT_TRUE(one && admin);
  auto id = one->command({"CLIENT", "ID"});
  ASSERT_TRUE(id.ok());
  auto killed = admin->command({"CLIENT", "KILL", "ID", id->str});
  ASSERT_TRUE(killed.ok());
  ASSERT_EQ(killed->integer, 1);
  // The dead connection fails at most one call; the next one reconnects.
  auto first = one->command({"CLIENT", "ID"});
  if (!first.ok()) {
    EXPECT_TRUE(first.error().retryable) << first.error().message;
  }
  auto second = first.ok() ? std::move(first) : one->command({"CLIENT", "ID"});
  ASSERT_TRUE(second.ok()) << second.error().message;
  EXPECT_NE(second->str, id->str);
}

TEST_F(RedisFastState, ScriptsSurviveAScriptFlush) {
  RedisRateLimiter rl(*client_);
  ASSERT_TRUE(rl.take("mer_sf", 1.0, 3, kT0)->allowed);
  ASSERT_TRUE(client_->command({"SCRIPT", "FLUSH"}).ok());  // EVALSHA now answers NOSCRIPT
  auto d = rl.take("mer_sf", 1.0, 3, kT0);
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE(d->allowed);
  EXPECT_EQ(d->remaining, 1);  // the same bucket: the fallback ran the same script
}

TEST_F(RedisFastState, KeysCarryTtlsSoIdleStateExpires) {
  const int64_t now = wall_ms();
  {  // idempotency: in flight for the lease (default 15 s), done for the configured TTL
    RedisIdempotencyCache cache(*client_, 24h);
    ASSERT_EQ(cache.begin("mer_t", "k", "fp", now)->state, State::started);
    auto keys = keys_of(*client_);
    ASSERT_EQ(keys.size(), 1u);
    EXPECT_GT(pttl(*client_, keys[0]), 14'000);
    EXPECT_LE(pttl(*client_, keys[0]), 15'000);
    cache.finish(record("mer_t", "k", "fp"), now);
    EXPECT_GT(pttl(*client_, keys[0]), 86'000'000);
    EXPECT_LE(pttl(*client_, keys[0]), 86'400'000);
    drop_prefix(*client_);
  }
  {  // rate limit: until the bucket would be full again, plus a minute of slack
    RedisRateLimiter rl(*client_);
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(rl.take("mer_t", 1.0, 10, now)->allowed);
    auto keys = keys_of(*client_);
    ASSERT_EQ(keys.size(), 1u);
    EXPECT_GT(pttl(*client_, keys[0]), 60'000);
    EXPECT_LE(pttl(*client_, keys[0]), 63'000);
    drop_prefix(*client_);
  }
  {  // velocity: the window, plus a second of slack
    RedisVelocityCounter vc(*client_);
    ASSERT_EQ(vc.hit("card_t", now, 10'000).value(), 1);
    auto keys = keys_of(*client_);
    ASSERT_EQ(keys.size(), 1u);
    EXPECT_GT(pttl(*client_, keys[0]), 9'000);
    EXPECT_LE(pttl(*client_, keys[0]), 11'000);
  }
}

TEST_F(RedisFastState, UnreachableRedisFailsWithinTheTimeoutWithThePolicies) {
  // Nothing listens on port 1: connection refused, counted, and each port's policy applies.
  auto dead = open_client("redis://127.0.0.1:1", "durable_dead_test", prefix_, 200, 2);
  ASSERT_TRUE(dead);
  const auto t0 = Clock::now();
  auto p = dead->ping();
  EXPECT_LT(Clock::now() - t0, 500ms);
  ASSERT_FALSE(p.ok());
  EXPECT_TRUE(p.error().retryable);
  EXPECT_EQ(p.error().kind, ErrorKind::unavailable);
  RedisRateLimiter rl(*dead);
  EXPECT_TRUE(rl.take("k", 1.0, 1, kT0)->allowed);
  EXPECT_TRUE(rl.take("k", 1.0, 1, kT0)->allowed);  // an outage never refuses
  RedisIdempotencyCache idem(*dead, 24h);
  EXPECT_EQ(idem.begin("m", "k", "fp", kT0)->state, State::started);
  idem.finish(record("m", "k", "fp"), kT0);  // no throw, no hang
  idem.abandon("m", "k");
  EXPECT_FALSE(RedisVelocityCounter(*dead).hit("c", kT0, 1000).ok());
  EXPECT_EQ(errors_of("durable_dead_test"), 7);
}

TEST_F(RedisFastState, UrlsAreValidatedAndSelectTheDatabase) {
  for (const char* bad : {"http://127.0.0.1:6379", "redis://127.0.0.1:notaport", "redis://127.0.0.1:6379/x"}) {
    RedisOptions o;
    o.url = bad;
    EXPECT_FALSE(RedisClient::open(o).ok()) << bad;
  }
  // Database 3 of the same server: a key written there is not in database 0.
  std::string base = url_;
  if (auto slash = base.find('/', std::string("redis://").size()); slash != std::string::npos) base.resize(slash);
  auto db3 = open_client(base + "/3", "durable", prefix_);
  auto db0 = open_client(base + "/0", "durable", prefix_);
  ASSERT_TRUE(db3 && db0);
  ASSERT_TRUE(db3->command({"SET", prefix_ + "db", "3", "PX", "60000"}).ok());
  EXPECT_EQ(db3->command({"GET", prefix_ + "db"})->str, "3");
  EXPECT_EQ(db0->command({"GET", prefix_ + "db"})->type, RedisClient::Reply::Type::nil);
  drop_prefix(*db3);
}

}  // namespace
}  // namespace ps::redis_test
