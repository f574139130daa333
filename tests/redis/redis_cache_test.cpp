// The cache-target decorators (sessions, payment status) on the allkeys-lru instance
// (PAYSTREAM_REDIS_CACHE_URL), and the evictions monitor.
#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <mutex>
#include <thread>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "redis/redis_test_util.hpp"

namespace ps::redis_test {
namespace {
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// The wrapped durable stores: in-memory, counting how often they are asked.
struct FakeMerchants final : MerchantStore {
  std::map<std::string, Merchant> by_hash;
  int finds = 0;
  Result<void> create_merchant(const Merchant& m) override {
    by_hash[m.api_key_hash] = m;
    return ok();
  }
  Result<std::optional<Merchant>> find_merchant_by_key_hash(const std::string& h) override {
    ++finds;
    auto it = by_hash.find(h);
    if (it == by_hash.end()) return std::optional<Merchant>();
    return std::optional<Merchant>(it->second);
  }
  Result<std::vector<Merchant>> all_merchants() override {
    std::vector<Merchant> v;
    for (auto& [_, m] : by_hash) v.push_back(m);
    return v;
  }
  // Every other key of the merchant expires at old_keys_expire_ms (no deletion here).
  Result<std::optional<std::vector<Merchant>>> rotate_api_key(const std::string& merchant_id, const std::string& h,
                                                              int64_t, int64_t old_keys_expire_ms) override {
    std::vector<Merchant> others;
    for (auto& [_, m] : by_hash)
      if (m.id == merchant_id) {
        m.key_expires_ms = old_keys_expire_ms;
        others.push_back(m);
      }
    if (others.empty()) return std::optional<std::vector<Merchant>>();
    Merchant fresh = others.front();
    fresh.api_key_hash = h;
    fresh.key_expires_ms = 0;
    by_hash[h] = fresh;
    return std::optional<std::vector<Merchant>>(std::move(others));
  }
};

struct FakePayments final : PaymentQueries {
  std::map<std::string, Payment> by_id;
  int gets = 0;
  Result<std::optional<Payment>> get_payment(const std::string& merchant_id, const std::string& id) override {
    ++gets;
    auto it = by_id.find(id);
    if (it == by_id.end() || it->second.merchant_id != merchant_id) return std::optional<Payment>();
    return std::optional<Payment>(it->second);
  }
  Result<std::vector<Payment>> list_payments(const std::string&, std::optional<PaymentStatus>, const Page&) override {
    return std::vector<Payment>{};
  }
  Result<std::optional<Refund>> get_refund(const std::string&, const std::string&) override {
    return std::optional<Refund>();
  }
  Result<std::vector<Balance>> balances(const std::string&) override { return std::vector<Balance>{}; }
  Result<std::vector<JournalEntry>> entries_for_payment(const std::string&, const std::string&) override {
    return std::vector<JournalEntry>{};
  }
};

Merchant merchant(const std::string& id, const std::string& hash) {
  return {id, "Shop \"" + id + "\" ü", hash, 0.1 + 0.2, 77, 1'700'000'000'123};
}

Payment payment(const std::string& merchant_id, const std::string& id, PaymentStatus st, int64_t updated) {
  Payment p;
  p.id = id;
  p.merchant_id = merchant_id;
  p.idempotency_key = "idem-" + id;
  p.amount_minor = 1234;
  p.currency = "EUR";
  p.source = "tok_approve";
  p.description = "order \"42\"";
  p.metadata = {{"order", "42"}, {"note", "ü\n"}};
  p.status = st;
  p.failure_code = st == PaymentStatus::failed ? "card_declined" : "";
  p.amount_refunded_minor = 0;
  p.created_ms = 1'700'000'000'000;
  p.updated_ms = updated;
  return p;
}

void expect_same(const Merchant& a, const Merchant& b) {
  EXPECT_EQ(a.id, b.id);
  EXPECT_EQ(a.name, b.name);
  EXPECT_EQ(a.api_key_hash, b.api_key_hash);
  EXPECT_EQ(a.rate_limit_per_s, b.rate_limit_per_s);  // exactly: 0.1 + 0.2 round-trips
  EXPECT_EQ(a.rate_limit_burst, b.rate_limit_burst);
  EXPECT_EQ(a.created_ms, b.created_ms);
}

void expect_same(const Payment& a, const Payment& b) {
  EXPECT_EQ(a.id, b.id);
  EXPECT_EQ(a.merchant_id, b.merchant_id);
  EXPECT_EQ(a.idempotency_key, b.idempotency_key);
  EXPECT_EQ(a.amount_minor, b.amount_minor);
  EXPECT_EQ(a.currency, b.currency);
  EXPECT_EQ(a.source, b.source);
  EXPECT_EQ(a.description, b.description);
  EXPECT_EQ(a.metadata, b.metadata);
  EXPECT_EQ(a.status, b.status);
  EXPECT_EQ(a.failure_code, b.failure_code);
  EXPECT_EQ(a.amount_refunded_minor, b.amount_refunded_minor);
  EXPECT_EQ(a.created_ms, b.created_ms);
  EXPECT_EQ(a.updated_ms, b.updated_ms);
}

class RedisCaches : public ::testing::Test {
 protected:
  void SetUp() override {
    url_ = cache_url();
    ASSERT_FALSE(url_.empty());
    cache_ = open_client(url_, "cache", unique_prefix());
    ASSERT_TRUE(cache_);
    ASSERT_TRUE(cache_->ping().ok()) << "Redis at " << url_ << " does not answer";
  }
  void TearDown() override {
    if (cache_) drop_prefix(*cache_);
  }
  // The one key under this test's prefix that contains `part`.
  std::string key_with(const std::string& part) {
    auto r = cache_->command({"KEYS", cache_->options().key_prefix + "*" + part + "*"});
    EXPECT_TRUE(r.ok() && r->elements.size() == 1);
    return r.ok() && r->elements.size() == 1 ? r->elements[0].str : std::string();
  }
  std::string url_;
  std::unique_ptr<RedisClient> cache_;
};

TEST_F(RedisCaches, SessionsReadThroughThenHitAndCountBoth) {
  FakeMerchants inner;
  inner.by_hash["h_old"] = merchant("mer_old", "h_old");
  RedisCachedMerchants sessions(inner, *cache_, 600s);
  const double hits = cache_count("session", "hit"), misses = cache_count("session", "miss");

  auto first = sessions.find_merchant_by_key_hash("h_old");  // miss: from the store, then cached
  ASSERT_TRUE(first.ok() && first->has_value());
  EXPECT_EQ(inner.finds, 1);
  auto second = sessions.find_merchant_by_key_hash("h_old");  // hit
  ASSERT_TRUE(second.ok() && second->has_value());
  EXPECT_EQ(inner.finds, 1);
  expect_same(**second, inner.by_hash["h_old"]);
  EXPECT_EQ(cache_count("session", "hit") - hits, 1);
  EXPECT_EQ(cache_count("session", "miss") - misses, 1);

  // Unknown keys are never cached (a merchant created later authenticates at once).
  EXPECT_FALSE(sessions.find_merchant_by_key_hash("h_unknown")->has_value());
  EXPECT_FALSE(sessions.find_merchant_by_key_hash("h_unknown")->has_value());
  EXPECT_EQ(inner.finds, 3);

  // create_merchant writes through: the first lookup is already a hit.
  ASSERT_TRUE(sessions.create_merchant(merchant("mer_new", "h_new")).ok());
  auto created = sessions.find_merchant_by_key_hash("h_new");
  ASSERT_TRUE(created.ok() && created->has_value());
  EXPECT_EQ(inner.finds, 3);
  expect_same(**created, merchant("mer_new", "h_new"));

  // TTL per kind.
  const int64_t t = pttl(*cache_, key_with("h_new"));
  EXPECT_GT(t, 590'000);
  EXPECT_LE(t, 600'000);
}

// A rotation replaces the cached sessions of the merchant's other keys with their new
// expiry, and a read-through or warm-up that read the store before the rotation (and
// writes after it) cannot put the old expiry back: those only SET NX.
TEST_F(RedisCaches, RotationReplacesOtherKeysSessionsAndStaleWritesCannotUndoIt) {
  FakeMerchants inner;
  inner.by_hash["h_a"] = merchant("mer_r", "h_a");
  RedisCachedMerchants sessions(inner, *cache_, 600s);
  ASSERT_TRUE(sessions.find_merchant_by_key_hash("h_a")->has_value());  // cached, never expires
  EXPECT_EQ(sessions.find_merchant_by_key_hash("h_a")->value().key_expires_ms, 0);

  Merchant stale = inner.by_hash["h_a"];  // what a concurrent lookup read before the rotation
  auto rotated = sessions.rotate_api_key("mer_r", "h_b", 1000, 5000);
  ASSERT_TRUE(rotated.ok() && rotated->has_value());
  ASSERT_EQ((*rotated)->size(), 1u);
  EXPECT_EQ((*rotated)->at(0).key_expires_ms, 5000);

  const int finds = inner.finds;
  auto after = sessions.find_merchant_by_key_hash("h_a");  // a hit, with the new expiry
  ASSERT_TRUE(after.ok() && after->has_value());
  EXPECT_EQ((*after)->key_expires_ms, 5000);
  EXPECT_EQ(inner.finds, finds);

  // The stale lookup's write arrives now: a warm-up with the pre-rotation record.
  inner.by_hash["h_a"] = stale;
  ASSERT_TRUE(sessions.all_merchants().ok());
  EXPECT_EQ(sessions.find_merchant_by_key_hash("h_a")->value().key_expires_ms, 5000);

  // Unknown merchant: nothing stored, nothing cached.
  auto none = sessions.rotate_api_key("mer_none", "h_c", 1000, 5000);
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
}

TEST_F(RedisCaches, AllMerchantsWarmsTheSessionCache) {
  FakeMerchants inner;
  for (int i = 0; i < 250; ++i)  // more than one warm-up batch
    inner.by_hash["h" + std::to_string(i)] = merchant("mer_" + std::to_string(i), "h" + std::to_string(i));
  RedisCachedMerchants sessions(inner, *cache_, 60s);
  auto all = sessions.all_merchants();
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), 250u);
  for (int i = 0; i < 250; i += 49) ASSERT_TRUE(sessions.find_merchant_by_key_hash("h" + std::to_string(i))->has_value());
  EXPECT_EQ(inner.finds, 0);
}

TEST_F(RedisCaches, PaymentStatusIsCachedAndWrittenThroughOnChange) {
  FakePayments inner;
  inner.by_id["pay_1"] = payment("mer_a", "pay_1", PaymentStatus::processing, 100);
  RedisCachedPayments payments(inner, *cache_, 30s, 3600s);
  const double hits = cache_count("payment", "hit"), misses = cache_count("payment", "miss");

  auto first = payments.get_payment("mer_a", "pay_1");
  ASSERT_TRUE(first.ok() && first->has_value());
  EXPECT_EQ(inner.gets, 1);
  // A processing entry is cached (short TTL) but never served: the status may have
  // changed in another process a moment ago, so the read goes to the store again.
  auto second = payments.get_payment("mer_a", "pay_1");
  ASSERT_TRUE(second.ok() && second->has_value());
  EXPECT_EQ(inner.gets, 2);
  expect_same(**second, inner.by_id["pay_1"]);
  EXPECT_EQ(cache_count("payment", "hit") - hits, 0);
  EXPECT_EQ(cache_count("payment", "miss") - misses, 2);
  const std::string key = key_with("pay_1");
  EXPECT_GT(pttl(*cache_, key), 29'000);  // processing: short TTL
  EXPECT_LE(pttl(*cache_, key), 30'000);

  // Another merchant never sees it (the store decides: not found).
  EXPECT_FALSE(payments.get_payment("mer_b", "pay_1")->has_value());

  // The status changes: put() writes through; reads see it without asking the store.
  Payment done = payment("mer_a", "pay_1", PaymentStatus::succeeded, 200);
  inner.by_id["pay_1"] = done;
  payments.put({done});
  const int gets = inner.gets;
  auto third = payments.get_payment("mer_a", "pay_1");
  ASSERT_TRUE(third.ok() && third->has_value());
  EXPECT_EQ(inner.gets, gets);
  expect_same(**third, done);
  EXPECT_EQ(cache_count("payment", "hit") - hits, 1);
  EXPECT_GT(pttl(*cache_, key), 3'590'000);  // terminal: long TTL
  EXPECT_LE(pttl(*cache_, key), 3'600'000);

  // An older version arriving late never replaces a newer one.
  payments.put({payment("mer_a", "pay_1", PaymentStatus::processing, 150)});
  EXPECT_EQ((*payments.get_payment("mer_a", "pay_1"))->status, PaymentStatus::succeeded);

  // put() of a payment nobody read yet caches it too.
  Payment failed = payment("mer_a", "pay_2", PaymentStatus::failed, 300);
  payments.put({failed});
  auto fourth = payments.get_payment("mer_a", "pay_2");
  ASSERT_TRUE(fourth.ok() && fourth->has_value());
  expect_same(**fourth, failed);
  EXPECT_EQ(inner.gets, gets);
}

TEST_F(RedisCaches, AnUnreachableCacheReadsThroughToTheStore) {
  auto dead = open_client("redis://127.0.0.1:1", "cache_dead_test", "x:", 200, 1);
  ASSERT_TRUE(dead);
  FakeMerchants merchants;
  merchants.by_hash["h"] = merchant("mer_1", "h");
  RedisCachedMerchants sessions(merchants, *dead, 60s);
  FakePayments pays;
  pays.by_id["pay_1"] = payment("mer_1", "pay_1", PaymentStatus::succeeded, 1);
  RedisCachedPayments payments(pays, *dead, 30s, 3600s);

  ASSERT_TRUE(sessions.create_merchant(merchant("mer_2", "h2")).ok());
  EXPECT_TRUE(sessions.find_merchant_by_key_hash("h")->has_value());
  EXPECT_TRUE(sessions.find_merchant_by_key_hash("h2")->has_value());
  EXPECT_EQ(sessions.all_merchants()->size(), 2u);
  EXPECT_TRUE(payments.get_payment("mer_1", "pay_1")->has_value());
  payments.put({pays.by_id["pay_1"]});
  EXPECT_GE(errors_of("cache_dead_test"), 5);
}

// A redis-server of this test's own with a 4 MiB LRU limit, so it can be made to evict
// without squeezing the shared cache target that other suites read from meanwhile.
class PrivateLruRedis {
 public:
  PrivateLruRedis() {
    // A free port: bind port 0, read it, close (redis-server cannot report a port it chose).
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0)
      throw std::runtime_error("no free port");
    port_ = ntohs(a.sin_port);
    ::close(fd);
    const std::string port = std::to_string(port_);
    pid_ = ::fork();
    if (pid_ == 0) {
      ::execlp("redis-server", "redis-server", "--port", port.c_str(), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--maxmemory", "4mb", "--maxmemory-policy", "allkeys-lru", "--loglevel",
               "warning", static_cast<char*>(nullptr));
      ::_exit(127);
    }
  }
  ~PrivateLruRedis() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  std::string url() const { return "redis://127.0.0.1:" + std::to_string(port_); }

 private:
  int port_ = 0;
  pid_t pid_ = -1;
};

TEST_F(RedisCaches, EvictionsMonitorCountsWhatEvictedKeysGrewBy) {
  PrivateLruRedis lru;
  auto cache = open_client(lru.url(), "lru_test", unique_prefix());
  ASSERT_TRUE(cache);
  const auto up_until = Clock::now() + 10s;
  while (!cache->ping().ok() && Clock::now() < up_until) std::this_thread::sleep_for(20ms);
  ASSERT_TRUE(cache->ping().ok()) << "redis-server on " << lru.url() << " did not start";
  auto durable = open_client(durable_url(), "durable_evict_test", unique_prefix());
  ASSERT_TRUE(durable);
  auto counter = [](const std::string& target) -> metrics::Counter& {
    return metrics::registry().counter("paystream_redis_evictions_total", "", {{"target", target}});
  };
  auto evicted = [](RedisClient& c) {
    auto info = c.command({"INFO", "stats"});
    EXPECT_TRUE(info.ok());
    auto pos = info->str.find("evicted_keys:");
    EXPECT_NE(pos, std::string::npos);
    return std::stod(info->str.substr(pos + 13));
  };
  int filled = 0;
  auto fill = [&](int n) {  // 64 KiB values: 100 of them are 6.4 MiB, past the 4 MiB limit
    const std::string big(64 * 1024, 'x');
    for (int i = 0; i < n; ++i) ASSERT_TRUE(cache->command({"SET", "fill" + std::to_string(filled++), big}).ok());
  };
  fill(100);
  const double before_monitor = evicted(*cache);
  ASSERT_GT(before_monitor, 0);
  {
    // The first sample is the baseline: what Redis evicted before is not counted.
    RedisEvictionsMonitor monitor({cache.get(), durable.get()}, 1h);
    monitor.refresh_once();
    EXPECT_EQ(counter("lru_test").value(), 0);
    fill(100);
    monitor.refresh_once();
    EXPECT_EQ(counter("lru_test").value(), evicted(*cache) - before_monitor);
    EXPECT_GT(counter("lru_test").value(), 0);
    EXPECT_EQ(counter("durable_evict_test").value(), 0) << "noeviction never evicts";
    // A restarted Redis starts evicted_keys again from 0: the counter adds the new value.
    const double counted = counter("lru_test").value();
    ASSERT_TRUE(cache->command({"CONFIG", "RESETSTAT"}).ok());  // evicted_keys back to 0, as after a restart
    fill(100);
    monitor.refresh_once();
    EXPECT_EQ(counter("lru_test").value(), counted + evicted(*cache));
  }
  {
    // The background thread samples on its own...
    RedisEvictionsMonitor monitor({cache.get()}, 50ms);
    const double before = counter("lru_test").value();
    std::this_thread::sleep_for(150ms);  // its baseline is taken
    fill(100);
    const auto until = Clock::now() + 5s;
    while (counter("lru_test").value() == before && Clock::now() < until) std::this_thread::sleep_for(10ms);
    EXPECT_GT(counter("lru_test").value(), before);
  }
  // ...and stops cleanly at once, even with a long interval.
  const auto t0 = Clock::now();
  {
    RedisEvictionsMonitor monitor({cache.get()}, 1h);
    monitor.refresh_once();
  }
  EXPECT_LT(Clock::now() - t0, 2s);
}

}  // namespace
}  // namespace ps::redis_test
